#!/usr/bin/env bash
# csvfs-lab (tools/csvfs-lab.sh, docs/lab.md): N nodes in network namespaces on
# one machine, each with its own corosync. Membership and quorum as each node
# sees them, exec in the right namespaces, kill/start corosync, partition/heal,
# refusal of a second lab, the daemon hook (with a stand-in daemon), and a
# `down` that leaves no namespace, link, mount or process behind.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
# Our own instance: a user's lab is untouched. CSVFS_TEST_LAB picks another
# name, for a second checkout running this test on the same machine.
export CSVFS_LAB=${CSVFS_TEST_LAB:-labtest}
unset CSVFS_BIN CSVFS_LAB_DAEMON_OPTS
t_start=$(date +%s)

skip() { ok "lab_cluster skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync corosync-quorumtool ip nsenter unshare; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] || { not_ok "$LAB missing (make $BUILD/bin/csvfs-lab)"; finish; exit; }

# A killed earlier run of this test may have left its lab: remove it first.
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down >/dev/null 2>&1"

# What the host looks like before: compared after `down`. Only lab-shaped
# objects are listed, so other work on the machine does not disturb the diff;
# other named labs (other tests may run one meanwhile) are left out, and so
# are the dirs labs share while another lab is up.
snapshot() {
  local others
  others=$(ls /run/csvfs-lab 2>/dev/null | grep -vx "$CSVFS_LAB")
  { echo "## netns"; ip netns list 2>/dev/null | awk '$1 ~ /csvfslab/ {print $1}' | sort
    echo "## links"; ip -o link show | awk -F': ' '$2 ~ /csvfslab/ {print $2}' | sort
    echo "## mounts"; awk '$1 ~ /csvfslab/ || $3 == "nsfs" ||
      $2 ~ "^(/run/netns|/run/csvfs-lab|/ClusterStorage|/var/tmp/csvfs-lab)" {print $1, $2, $3}' /proc/self/mounts | sort
    echo "## dirs"
    [ -n "$others" ] || ls -d /ClusterStorage /var/tmp/csvfs-lab 2>/dev/null
    ls -d "/run/csvfs-lab/$CSVFS_LAB" 2>/dev/null
  } | awk -v me="$CSVFS_LAB" '
    match($0, /csvfslab-[a-z0-9]+-(sw|n[0-9]+)/) {
      n = substr($0, RSTART + 9, RLENGTH - 9); sub(/-(sw|n[0-9]+)$/, "", n); if (n != me) next }
    match($0, /\/run\/csvfs-lab\/[a-z0-9]+/) { if (substr($0, RSTART + 15, RLENGTH - 15) != me) next }
    { print }'
}
# Pids the lab started (corosync and csvfs of every node), remembered so we can
# check after `down` that none of them still runs.
remember_pids() {
  local k n
  n=$("$LAB" env 1 2>/dev/null | sed -n 's/^CSVFS_LAB_NODES=//p')
  for ((k = 1; k <= ${n:-0}; k++)); do
    "$LAB" env "$k" | sed -n 's/^CSVFS_LAB_\(COROSYNC\|CSVFS\)_PID=\([0-9][0-9]*\)$/\2/p'
  done >>"$S/pids"
}
none_alive() {
  local p st left=""
  while read -r p; do
    st=$(awk '{sub(/.*\) /, ""); print $1}' "/proc/$p/stat" 2>/dev/null) || continue
    [ "$st" = Z ] || left="$left $p"
  done < <(sort -u "$S/pids")
  [ -z "$left" ] || { diag "still running:$left"; return 1; }
}
# leftovers BEFORE AFTER — prints what differs, and succeeds when something
# does; a shared dir gone meanwhile (another lab's down removed it) is no leak.
leftovers() {
  diff "$1" "$2" | grep '^[<>]' | grep -Ev '^< (/ClusterStorage|/var/tmp/csvfs-lab)$'
}
S=$(scratch_dir)
: >"$S/pids"
snapshot >"$S/before"

sees() { [ "$("$LAB" quorum "$1" 2>/dev/null)" = "$2" ]; }
all_see() { local m=$1 k; shift; for k in "$@"; do sees "$k" "$m" || return 1; done; }

# ---- up: three nodes, one quorate membership of three ------------------------
t0=$(date +%s)
"$LAB" up -n 3 --no-mount >"$S/up.out" 2>&1; rc=$?
check_eq "up -n 3 --no-mount succeeds" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$S/up.out"
diag "up took $(($(date +%s) - t0)) s"
remember_pids
for k in 1 2 3; do
  check_eq "node$k sees 3 members, quorate" "members=3 quorate=yes ids=1,2,3" "$("$LAB" quorum "$k" 2>&1)"
done

# ---- exec runs in the node's own namespaces ----------------------------------
check "exec 2 runs in node2's netns (10.213.0.12 on eth0)" \
  bash -c "'$LAB' exec 2 -- ip -4 -o addr show dev eth0 | grep -q ' 10.213.0.12/24 '"
check_eq "exec node3 (by name) has hostname node3" node3 "$("$LAB" exec node3 -- hostname)"
check_eq "a node's netns holds only lo and eth0" "eth0 lo" \
  "$("$LAB" exec 1 -- ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort | tr '\n' ' ' | sed 's/ $//')"
eval "$("$LAB" env 1)"
check_eq "env 1 names node1 / nodeid 1" "node1 1 10.213.0.11" "$CSVFS_LAB_NODE $CSVFS_LAB_NODEID $CSVFS_LAB_ADDR"
check_eq "node1's private /run holds its own corosync's pid" "$CSVFS_LAB_COROSYNC_PID" \
  "$("$LAB" exec 1 -- cat /run/corosync.pid)"
check "node1's corosync is in node1's netns" test "/proc/$CSVFS_LAB_COROSYNC_PID/ns/net" -ef "$CSVFS_LAB_NETNS"
check "nsenter -t <corosync pid> -m -n reaches node1's corosync" \
  bash -c "nsenter -t $CSVFS_LAB_COROSYNC_PID -m -n corosync-cmapctl -g runtime.votequorum.this_node_id | grep -q '= 1$'"
check_fails "the host netns has no lab address" bash -c "ip -4 -o addr | grep -q ' 10.213.0.1[1-3]/'"
"$LAB" exec 1 -- sh -c 'exit 7'; rc=$?
check_eq "exec returns the command's exit status" 7 "$rc"
"$LAB" exec 9 -- true 2>/dev/null; rc=$?
check_eq "exec on a node that does not exist: exit 2" 2 "$rc"
"$LAB" kill 1 bogus 2>/dev/null; rc=$?
check_eq "kill with a bad process name: exit 2" 2 "$rc"

# ---- a second lab is refused --------------------------------------------------
"$LAB" up -n 3 --no-mount >"$S/up2.out" 2>&1; rc=$?
check_eq "a second up while the lab is up is refused (exit 4)" 4 "$rc"
check "... with a message saying so" grep -q "already up" "$S/up2.out"

# ---- kill -9 and restart node2's corosync -------------------------------------
t0=$(date +%s)
check "kill 2 corosync" "$LAB" kill 2 corosync
check "nodes 1 and 3 see 2 members and stay quorate" \
  wait_until 20 all_see "members=2 quorate=yes ids=1,3" 1 3
diag "membership of 2 seen after $(($(date +%s) - t0)) s"
check_fails "quorum 2 fails while node2's corosync is down" "$LAB" quorum 2
t0=$(date +%s)
check "start 2 corosync" "$LAB" start 2 corosync
remember_pids
check "all three see 3 members again" wait_until 20 all_see "members=3 quorate=yes ids=1,2,3" 1 2 3
diag "membership of 3 seen after $(($(date +%s) - t0)) s"

# ---- partition node3, then heal -----------------------------------------------
t0=$(date +%s)
check "partition 3" "$LAB" partition 3
check "node3 alone: 1 member, not quorate" wait_until 20 sees 3 "members=1 quorate=no ids=3"
check "nodes 1 and 2 keep quorum" wait_until 20 all_see "members=2 quorate=yes ids=1,2" 1 2
diag "partition seen after $(($(date +%s) - t0)) s"
check "status shows node3's link down" bash -c "'$LAB' status | grep -Eq '^node3 +3 +10.213.0.13 +down '"
t0=$(date +%s)
check "heal 3" "$LAB" heal 3
check "all three see 3 members after heal" wait_until 30 all_see "members=3 quorate=yes ids=1,2,3" 1 2 3
diag "heal seen after $(($(date +%s) - t0)) s"
check "status lists three quorate nodes" bash -c "[ \$('$LAB' status | grep -c 'members=3 quorate=yes') -eq 3 ]"

# ---- down: nothing left, twice is fine ----------------------------------------
remember_pids
check "4 lab corosync pids recorded (3 + the restarted one)" test "$(sort -u "$S/pids" | wc -l)" -eq 4
check "down" "$LAB" down
check "no process the lab started still runs" none_alive
snapshot >"$S/after"
if ! leftovers "$S/before" "$S/after" >"$S/diff"; then ok "down left no namespace, link, mount or dir behind"
else not_ok "down left something behind"; sed 's/^/# /' "$S/diff"; fi
"$LAB" status >/dev/null 2>&1; rc=$?
check_eq "status after down: no lab (exit 4)" 4 "$rc"
check "down again is fine" "$LAB" down

# ---- the daemon hook, with a stand-in daemon ----------------------------------
# The real cluster mode is not ready; a stand-in for build/bin/csvfs checks the
# command line start_daemon builds and serves the LUN read-only with fuse2fs.
FAKE="$S/bin"
mkdir -p "$FAKE"
cat >"$FAKE/csvfs" <<'EOF'
#!/bin/bash
echo "args: $*"
[ "$1 $2" = "-f -o" ] && [[ $4 == UUID=* ]] && [ "$5" = /ClusterStorage/Volume1 ] || exit 2
[ -n "${FAKE_REJECT:-}" ] && { echo "csvfs: unknown option 'cluster'" >&2; exit 1; }
lun=$(tr , '\n' <<<"$3" | sed -n 's/^lun=//p')
exec fuse2fs -f -o ro,fakeroot "$lun" "$5"
EOF
chmod +x "$FAKE/csvfs"
IMG="$S/lun.img"
truncate -s 64M "$IMG" && mke2fs -q -F -t ext4 "$IMG"
GUID=$(blkid -p -s UUID -o value "$IMG")

FAKE_REJECT=1 CSVFS_BIN="$FAKE" "$LAB" up -n 2 --lun "$IMG" >"$S/up3.out" 2>&1; rc=$?
check_eq "up fails when the daemon rejects the cluster options (exit 1)" 1 "$rc"
check "... naming the node and the daemon's log" grep -Eq 'node[12]: the csvfs daemon exited .*csvfs\.log' "$S/up3.out"
check "down after the failed up" "$LAB" down

if command -v fuse2fs >/dev/null 2>&1; then
  CSVFS_BIN="$FAKE" "$LAB" up -n 2 --lun "$IMG" >"$S/up4.out" 2>&1; rc=$?
  check_eq "up -n 2 --lun with a daemon mounts on both nodes" 0 "$rc"
  [ "$rc" -eq 0 ] || sed 's/^/# /' "$S/up4.out"
  eval "$("$LAB" env 2)"
  check "the daemon got cluster,node=node2,nodeid=2 and UUID=<GUID>" \
    grep -q "args: -f -o cluster,node=node2,nodeid=2,.* UUID=$GUID /ClusterStorage/Volume1" "$CSVFS_LAB_DIR/csvfs.log"
  check "node2 sees the volume at /ClusterStorage/Volume1" "$LAB" exec 2 -- test -d /ClusterStorage/Volume1/lost+found
  check_fails "the host does not see the node's mount" is_mounted /ClusterStorage/Volume1
  check "kill 2 csvfs" "$LAB" kill 2 csvfs
  check "status shows node2's daemon dead" bash -c "'$LAB' status | grep -Eq '^node2 .* - +yes \(daemon dead\)'"
  CSVFS_BIN="$FAKE" "$LAB" start 2 csvfs >/dev/null; rc=$?
  check_eq "start 2 csvfs remounts" 0 "$rc"
  check "node2 sees the volume again" "$LAB" exec 2 -- test -d /ClusterStorage/Volume1/lost+found
  remember_pids
  check "down" "$LAB" down
  check "no corosync or daemon of that lab still runs" none_alive
else
  ok "daemon stand-in skipped: fuse2fs not installed # SKIP"
fi
check "a LUN named with --lun is kept by down" test -s "$IMG"
snapshot >"$S/after2"
if ! leftovers "$S/before" "$S/after2" >"$S/diff2"; then ok "nothing left behind after the daemon labs"
else not_ok "something left behind after the daemon labs"; sed 's/^/# /' "$S/diff2"; fi

diag "lab_cluster took $(($(date +%s) - t_start)) s"
finish
