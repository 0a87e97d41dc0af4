#!/usr/bin/env bash
# Cluster credentials on a 3-node csvfs-lab (docs/credentials.md): the lab's CA
# issued every node's credential with csvctl keygen; a node added to the
# running cluster gets its credential from that CA and joins; a node revoked
# with csvctl revoke is cut off — the coordinator closes its open connection
# as soon as it has the new ca.crl and refuses it again when it reconnects,
# with a log line naming the node on both sides, while the other nodes keep
# working; once its own credential directory has the list its daemon refuses
# to start; re-issued, it is back. A private key readable by group or others
# is refused at daemon start, naming the file and its mode. openssl verify is
# the independent oracle for the CRL; e2fsck -fn checks the volume at the end.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-acccred}   # this test's own lab
unset CSVFS_BIN CSVFS_LAB_TOKEN
# A node that cannot reach a coordinator fails requests after 8 s (default 120 s).
export CSVFS_LAB_DAEMON_OPTS="coord_wait=8000"
V=/ClusterStorage/Volume1

skip() { ok "credentials skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare e2fsck openssl; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] || { not_ok "$LAB missing (make)"; finish; exit; }

S=$(scratch_dir)
LUN=$S/lun.img
truncate -s 512M "$LUN"
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/credentials'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/credentials/' 2>/dev/null"

STATE=/run/csvfs-lab/$CSVFS_LAB
CA=$STATE/ca                                      # the lab's cluster CA
cred() { echo "$STATE/nodes/$1/run/csvfs-cred"; }  # node K's /run/csvfs-cred
nodelog() { echo "$STATE/nodes/$1/csvfs.log"; }
on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- "$@"; }
sh_on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- sh -c "$*"; }
status_json() { on "$1" "$BIN/csvctl" status --json 2>/dev/null; }
coordinator() { status_json "$1" | sed -n 's/.*"coordinator":"node\([0-9]\)".*/\1/p'; }
md5_on() { sh_on "$1" "md5sum < $V/$2" | cut -d' ' -f1; }
# logged_since K OFFSET REGEX — REGEX in node K's log after byte OFFSET (waits 15 s)
logged_since() { wait_until 15 sh -c "tail -c +$(($2 + 1)) '$(nodelog "$1")' | grep -qE -- \"\$0\"" "$3"; }
log_size() { stat -c %s "$(nodelog "$1")"; }
# start_fails K — the daemon exits without mounting; prints its log's new lines
start_fails() {
  local k=$1 off
  off=$(log_size "$k")
  if "$LAB" start "$k" csvfs >"$S/start.out" 2>&1; then return 1; fi
  tail -c +$((off + 1)) "$(nodelog "$k")"
}

"$LAB" up -n 3 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, credentials issued by csvctl keygen from one CA" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "the CA keeps ca.key private (0600)" test "$(stat -c %a "$CA/ca.key")" = 600
check "the CA starts with an empty ca.crl, valid under ca.crt (openssl)" \
  sh -c "openssl crl -in '$CA/ca.crl' -CAfile '$CA/ca.crt' -noout 2>&1 | grep -q 'verify OK' &&
         ! openssl crl -in '$CA/ca.crl' -noout -text | grep -q 'Serial Number'"
check "every node's credential carries ca.crl; its node.key is 0600" \
  sh -c "for k in 1 2 3; do cmp -s '$CA/ca.crl' \"$STATE/nodes/\$k/run/csvfs-cred/ca.crl\" &&
         [ \"\$(stat -c %a $STATE/nodes/\$k/run/csvfs-cred/node.key)\" = 600 ] || exit 1; done"
check_eq "the CA recorded the 3 certificates it issued" 3 "$(ls "$CA/issued" | grep -c '\.crt$')"
check "a coordinator is known" wait_until 30 sh -c "[ -n \"\$(\"$LAB\" exec 1 -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\(node[0-9]\)\".*/\1/p')\" ]"
# node3 is the node added, then revoked: the coordinator must be another one.
if [ "$(coordinator 1)" = 3 ]; then on 1 "$BIN/csvctl" move node1 >/dev/null; fi
check "the coordinator is not node3" wait_until 20 sh -c "c=\$(\"$LAB\" exec 1 -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"node\([0-9]\)\".*/\1/p'); [ -n \"\$c\" ] && [ \"\$c\" != 3 ]"
C=$(coordinator 1)
diag "coordinator node$C"

# ---- a node added to the running cluster -----------------------------------------------
"$LAB" kill 3 csvfs >/dev/null
rm -rf "$(cred 3)"
out=$(start_fails 3)
check "without a credential node3's daemon does not start, and says how to issue one" \
  grep -q "issue one with 'csvctl keygen --node node3'" <<<"$out"
check "csvctl keygen issues node3's credential from the cluster CA" \
  "$BIN/csvctl" keygen --node node3 --ca-dir "$CA" --out "$(cred 3)"
check "openssl verifies node3's new certificate against the CA and its CRL" \
  openssl verify -crl_check -CAfile "$CA/ca.crt" -CRLfile "$CA/ca.crl" "$(cred 3)/node.crt"
check "node3 joins the running cluster with it" "$LAB" start 3 csvfs
head -c 3M /dev/urandom >"$S/a.bin"
sh_on 1 "cat '$S/a.bin' > $V/a.bin && sync $V/a.bin"
check_eq "node3 reads what node1 wrote" "$(md5sum <"$S/a.bin" | cut -d' ' -f1)" "$(md5_on 3 a.bin)"

# ---- revoked: cut off, the others go on ------------------------------------------------
off_c=$(log_size "$C"); off_3=$(log_size 3)
check "csvctl revoke node3 signs a new ca.crl" "$BIN/csvctl" revoke node3 --ca-dir "$CA"
check "openssl: node3's certificate is revoked by the new ca.crl" \
  sh -c "openssl verify -crl_check -CAfile '$CA/ca.crt' -CRLfile '$CA/ca.crl' '$(cred 3)/node.crt' 2>&1 | grep -q 'certificate revoked'"
check "openssl: node1's certificate is not" \
  openssl verify -crl_check -CAfile "$CA/ca.crt" -CRLfile "$CA/ca.crl" "$(cred 1)/node.crt"
# The new list goes to the nodes that stay; the revoked node is not asked.
for k in 1 2; do install -m 0644 "$CA/ca.crl" "$(cred "$k")/ca.crl"; done
check "the coordinator reloads ca.crl and closes node3's connection (its log names node3)" \
  logged_since "$C" "$off_c" "closing [0-9.:]+ \(node3\): its certificate is no longer accepted: certificate revoked"
check "node3 reconnecting is refused; the coordinator's log names node3 and the cause" \
  logged_since "$C" "$off_c" "refused [0-9.:]+ \(certificate names node3\): certificate verify failed \(certificate revoked\)"
if logged_since 3 "$off_3" "(rio: connect to [0-9.:]+|cannot reach coordinator node$C).*: the peer refused the handshake: .*certificate revoked"; then
  ok "node3's log says the coordinator refused its certificate"
else
  not_ok "node3's log says the coordinator refused its certificate"
  tail -c +$((off_3 + 1)) "$(nodelog 3)" | tail -n 8 | sed 's/^/# node3: /'
fi
head -c 2M /dev/urandom >"$S/b.bin"
sh_on 2 "cat '$S/b.bin' > $V/b.bin && sync $V/b.bin"
check_eq "node1 and node2 keep working: node1 reads what node2 wrote after the revocation" \
  "$(md5sum <"$S/b.bin" | cut -d' ' -f1)" "$(md5_on 1 b.bin)"
check_fails "node3 gets nothing of it" sh_on 3 "cat $V/b.bin >/dev/null 2>&1"
check "csvctl status on node1 still works and shows node1 and node2 up" \
  sh -c "\"$LAB\" exec 1 -- \"$BIN/csvctl\" status | grep -qE '^  node2 +up'"

# ---- with the list in its own directory, node3's daemon does not start -----------------
install -m 0644 "$CA/ca.crl" "$(cred 3)/ca.crl"
"$LAB" kill 3 csvfs >/dev/null
out=$(start_fails 3)
check "node3's daemon refuses to start: its certificate is revoked by its own ca.crl" \
  grep -q "node.crt in /run/csvfs-cred (serial [0-9A-F]*) is revoked by /run/csvfs-cred/ca.crl" <<<"$out"

# ---- re-issued, node3 is back ---------------------------------------------------------
check "csvctl keygen --force issues node3 a new certificate" \
  "$BIN/csvctl" keygen --node node3 --ca-dir "$CA" --out "$(cred 3)" --force
check "node3 joins again" "$LAB" start 3 csvfs
check_eq "node3 reads what node2 wrote while it was revoked" \
  "$(md5sum <"$S/b.bin" | cut -d' ' -f1)" "$(md5_on 3 b.bin)"

# ---- file modes checked at start ----------------------------------------------------------
"$LAB" kill 3 csvfs >/dev/null
chmod 0644 "$(cred 3)/node.key"
out=$(start_fails 3)
check "a node.key of mode 0644 is refused at start, naming the file and its mode" \
  grep -q "/run/csvfs-cred/node.key is accessible by group or others (mode 0644); chmod 0600" <<<"$out"
chmod 0640 "$(cred 3)/node.key"
out=$(start_fails 3)
check "and one of mode 0640 too" grep -q "node.key is accessible by group or others (mode 0640)" <<<"$out"
chmod 0600 "$(cred 3)/node.key"
check "with mode 0600 node3 starts" "$LAB" start 3 csvfs
chmod 0644 "$CA/ca.key"
check_fails "csvctl keygen refuses a CA key of mode 0644" \
  "$BIN/csvctl" keygen --node node9 --ca-dir "$CA" --out "$S/node9"
check_fails "and so does csvctl revoke" "$BIN/csvctl" revoke node3 --ca-dir "$CA"
chmod 0600 "$CA/ca.key"
check_fails "csvctl revoke of a node the CA never issued fails" "$BIN/csvctl" revoke node9 --ca-dir "$CA"

"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
check "lab down" test $? -eq 0
check "e2fsck -fn: the volume is clean" fsck_clean "$LUN" "$S/fsck.out"
finish
