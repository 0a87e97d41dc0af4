#!/usr/bin/env bash
# A coordinator that loses its role while a participant's change waits for its
# journal commit (docs/cluster.md "Exactly once"; found by churn.sh, session 17:
# a whole-node kill took the coordinator's corosync first, its "coord" lock went,
# the commit failed on the closed gate, and the participant's open(O_CREAT|O_TRUNC)
# got EIO). On a 3-node csvfs-lab the coordinator's commit of a participant's
# mkdir is held (test-only hook CSVFS_TEST_HOLD_COMMIT, fs/server.c) while its
# corosync is killed; then the commit runs and fails. The change must go to the
# next coordinator: the participant's mkdir succeeds, once, and every node sees the
# directory. Oracles: the mkdir's exit status, the old coordinator's log (the
# commit did fail), stat on the other nodes, e2fsck -fn after the lab is down.
. "$(dirname "$0")/../lib.sh"

lab_test_begin commit_lost clost
V=/ClusterStorage/Volume1
HOLD=$S/hold-commit
export CSVFS_TEST_HOLD_COMMIT=$HOLD

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
coordinator() { on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]\)".*/\1/p'; }
nodelog() { echo "/run/csvfs-lab/$CSVFS_LAB/nodes/$1/csvfs.log"; }

LUN=$S/lun.img
"$LAB" up -n 3 --lun "$LUN" --size 512M >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "a coordinator is known" wait_until 30 sh -c "[ -n \"\$('$LAB' exec 1 -- '$CTL' status --json '$V' 2>/dev/null | sed -n 's/.*\"coordinator\":\"node\\([0-9]\\)\".*/\\1/p')\" ]"
C=$(coordinator 1); P=$(( C % 3 + 1 )); T=$(( P % 3 + 1 ))
diag "coordinator node$C, participant node$P, third node$T"

touch "$HOLD"
on "$P" mkdir "$V/made-once" 2>"$S/mkdir.err" &
mk=$!
check "node$C holds the commit of node$P's mkdir" \
  wait_until 30 grep -q "test hook: holding the journal commit of node$P" "$(nodelog "$C")"
"$LAB" kill "$C" corosync >/dev/null 2>&1
check "node$C lost its locks with its corosync connection" \
  wait_until 30 grep -q "lock(s) lost" "$(nodelog "$C")"
rm -f "$HOLD"
wait "$mk"; rc=$?
check_eq "node$P's mkdir succeeded (no EIO: it went to the next coordinator)" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/mkdir.err"
check "node$C's commit of it did fail (the case under test happened)" \
  grep -q "applied but the journal commit failed" "$(nodelog "$C")"
check "a new coordinator took over" wait_until 60 sh -c "c=\$('$LAB' exec $P -- '$CTL' status --json '$V' 2>/dev/null | sed -n 's/.*\"coordinator\":\"node\\([0-9]\\)\".*/\\1/p'); [ -n \"\$c\" ] && [ \"\$c\" != $C ]"
for k in $P $T; do
  check "node$k sees the directory" on "$k" test -d "$V/made-once"
done
check "mkdir again on node$T is EEXIST (made once)" sh -c "timeout 60 '$LAB' exec $T -- mkdir '$V/made-once' 2>&1 | grep -q 'File exists'"

"$LAB" start "$C" corosync >/dev/null 2>&1
lab_down_checked "$LUN"
finish
