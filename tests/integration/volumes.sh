#!/usr/bin/env bash
# Several volumes on one cluster (docs/volumes.md): a 3-node csvfs-lab with
# two volumes, each its own LUN and its own daemon on every node. Real
# daemons, real corosync, real mounts. Covers: both mounted on every node
# and listed by `csvctl status` with no argument; the election preferring
# the node that coordinates fewest volumes (at mount and at a takeover);
# one node coordinating both volumes at once (each its own listener port)
# while participants write to both; `csvctl balance` evening the roles out
# with moves, and doing nothing once even; file data written on every node
# to both volumes read back identical on every node. Oracle: e2fsck -fn on
# both LUNs after the lab is down, sha256 of what was written.
. "$(dirname "$0")/../lib.sh"

lab_test_begin volumes volumes sha256sum
V1=/ClusterStorage/Volume1
V2=/ClusterStorage/Volume2

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
# coordinator_of NODE MOUNTPOINT — the coordinator NODE's daemon names (nodeK).
coordinator_of() { on "$1" "$CTL" status --json "$2" 2>/dev/null | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p'; }
known_everywhere() { local k; for k in 1 2 3; do [ -n "$(coordinator_of "$k" "$1")" ] || return 1; done; }
is_coordinator() { [ "$(coordinator_of "$1" "$2")" = "$3" ]; }

t0=$(date +%s)
"$LAB" up -n 3 --lun "$S/lun1.img" --size 1G >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, volume 1 mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
wait_until 30 known_everywhere "$V1"
C1=$(coordinator_of 1 "$V1")
"$LAB" add-volume --lun "$S/lun2.img" --size 1G >"$S/add.out" 2>&1; rc=$?
check_eq "add-volume: volume 2 on its own LUN, mounted on every node" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/add.out"; finish; exit; }
diag "two volumes up in $(($(date +%s) - t0)) s"
G1=$(blkid -p -s UUID -o value "$S/lun1.img")
G2=$(blkid -p -s UUID -o value "$S/lun2.img")
check "the two LUNs hold two volumes" sh -c "[ -n '$G1' ] && [ -n '$G2' ] && [ '$G1' != '$G2' ]"
check "add-volume labels the new volume Volume2" sh -c "blkid -p -s LABEL -o value '$S/lun2.img' | grep -qx Volume2"
check "csvfs-lab status lists volume 2 mounted on every node" \
  sh -c "'$LAB' status | grep -q '^volume 2: $G2 .* mounted on: node1 node2 node3$'"

# ---- status with no argument: every volume of this node ---------------------------
for k in 1 2 3; do
  on "$k" "$CTL" status --json >"$S/status$k.json" 2>"$S/status$k.err"
  check "node$k: csvctl status --json (no argument) gives one line per volume, both volumes" \
    sh -c "[ \$(wc -l <'$S/status$k.json') = 2 ] && grep -q '\"guid\":\"$G1\"' '$S/status$k.json' && grep -q '\"guid\":\"$G2\"' '$S/status$k.json'"
done
# (a volume just added may not have elected its coordinator yet: wait for it, bounded)
human_both() {
  on 2 "$CTL" status >"$S/status2.txt" 2>&1
  [ "$(grep -c '^Volume ' "$S/status2.txt")" = 2 ] && [ "$(grep -c '^  coordinator node' "$S/status2.txt")" = 2 ]
}
check "csvctl status (human, no argument) shows both volumes with their coordinators" wait_until 30 human_both

# ---- the election prefers the node that coordinates fewest volumes ----------------
wait_until 30 known_everywhere "$V2"
C2=$(coordinator_of 1 "$V2")
diag "volume 1 coordinator $C1, volume 2 coordinator $C2"
check "volume 2's coordinator is not volume 1's (the node coordinating none was preferred)" \
  sh -c "[ -n '$C2' ] && [ '$C2' != '$C1' ]"
if [ "$C2" = "$C1" ]; then   # so that the takeover below has a choice to make
  for k in 1 2 3; do [ "node$k" = "$C1" ] || { C2=node$k; break; }; done
  on "${C1#node}" "$CTL" move "$C2" --mount "$V2" >/dev/null 2>&1
  wait_until 30 is_coordinator 1 "$V2" "$C2"
fi
# A takeover: volume 2's coordinator dies; of the two left, the one that
# coordinates nothing (not C1) takes it, whatever their nodeids.
OTHER=""
for k in 1 2 3; do [ "node$k" = "$C1" ] || [ "node$k" = "$C2" ] || OTHER=node$k; done
"$LAB" kill "${C2#node}" vol2 >/dev/null 2>&1
check "after volume 2's coordinator daemon died, $OTHER (coordinating nothing) took it over, not $C1" \
  wait_until 40 is_coordinator "${C1#node}" "$V2" "$OTHER"
check "volume 1 kept its coordinator through volume 2's takeover" is_coordinator "${OTHER#node}" "$V1" "$C1"
"$LAB" start "${C2#node}" vol2 >"$S/start.out" 2>&1
check "volume 2 mounts again on ${C2} (start NODE vol2)" sh -c "grep -q 'mounted $V2' '$S/start.out'"

# ---- I/O on both volumes from every node ------------------------------------------
for k in 1 2 3; do head -c $((3 * 1048576 + 4096 * k)) /dev/urandom >"$S/data$k"; done
writes=0
for k in 1 2 3; do
  for v in "$V1" "$V2"; do
    on "$k" sh -c "cp '$S/data$k' '$v/file$k' && sync '$v/file$k'" || writes=$((writes + 1))
  done
done
check_eq "every node wrote a file to each volume" 0 "$writes"
sums_ok() {
  local k j v
  for k in 1 2 3; do for j in 1 2 3; do for v in "$V1" "$V2"; do
    [ "$(on "$k" sha256sum "$v/file$j" | cut -d' ' -f1)" = "$(sha256sum "$S/data$j" | cut -d' ' -f1)" ] || return 1
  done; done; done
}
check "every node reads every node's file on both volumes back identical" sums_ok

# ---- one node coordinating both volumes ---------------------------------------------
C1N=${C1#node}
on "$C1N" "$CTL" move "$C1" --mount "$V2" >/dev/null 2>&1
check "csvctl move puts volume 2's role on $C1 too" wait_until 30 is_coordinator "$C1N" "$V2" "$C1"
P=1; [ "$C1N" = 1 ] && P=2
check "a participant writes to both volumes while $C1 coordinates both (a listener per volume)" \
  on "$P" sh -c "for v in $V1 $V2; do dd if=/dev/zero of=\$v/both bs=64k count=16 conv=fsync status=none || exit 1; done"
check "$C1 listens on two ports of the range, one per volume it coordinates" \
  sh -c "[ \$('$LAB' exec $C1N -- ss -ltnH | awk '{print \$4}' | grep -cE ':71[0-5][0-9]\$') = 2 ]"

# ---- csvctl balance -------------------------------------------------------------------
on "$P" "$CTL" balance >"$S/balance.out" 2>&1; rc=$?
sed 's/^/# /' "$S/balance.out"
check_eq "csvctl balance exits 0" 0 "$rc"
check "csvctl balance moved one volume off $C1" sh -c "[ \$(grep -c ': coordinator $C1 -> node' '$S/balance.out') = 1 ]"
A=$(coordinator_of 3 "$V1"); B=$(coordinator_of 3 "$V2")
check "after balance the two volumes have coordinators on two nodes ($A, $B)" sh -c "[ -n '$A' ] && [ -n '$B' ] && [ '$A' != '$B' ]"
check "every node agrees on both coordinators" \
  sh -c "for k in 1 2 3; do [ \"\$('$LAB' exec \$k -- '$CTL' status --json '$V1' | sed -n 's/.*\"coordinator\":\"\\([^\"]*\\)\".*/\\1/p')\" = '$A' ] || exit 1; [ \"\$('$LAB' exec \$k -- '$CTL' status --json '$V2' | sed -n 's/.*\"coordinator\":\"\\([^\"]*\\)\".*/\\1/p')\" = '$B' ] || exit 1; done"
on 1 "$CTL" balance >"$S/balance2.out" 2>&1; rc=$?
check "a second csvctl balance finds them even and moves nothing" \
  sh -c "[ $rc = 0 ] && ! grep -q ' -> ' '$S/balance2.out'"
check_fails "csvctl balance refuses a bad argument" on 1 "$CTL" balance --bogus
check_fails "csvfs-lab kill refuses a volume the lab does not have" "$LAB" kill 1 vol9
check "both volumes still read back after the moves" sums_ok

# ---- down: both volumes clean ----------------------------------------------------------
"$LAB" down >"$S/down.out" 2>&1; rc=$?
check_eq "lab down" 0 "$rc"
check "down killed no daemon" sh -c "! grep -q 'had to kill' '$S/down.out'"
check "e2fsck -fn: volume 1 clean after unmount" fsck_clean "$S/lun1.img" "$S/fsck1.out"
check "e2fsck -fn: volume 2 clean after unmount" fsck_clean "$S/lun2.img" "$S/fsck2.out"
finish
