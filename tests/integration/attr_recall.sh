#!/usr/bin/env bash
# A participant that does not give up its cached attributes in time (issue 15,
# make soak: "other nodes did not give up their cached attributes"): the
# coordinator's namespace change then fails with EIO before it changed
# anything — never half way (a directory entry left naming a freed inode, an
# inode left without its entry: e2fsck found both before the fix). The test
# hook CSVFS_TEST_HOLD_ATTR_DROP holds node P's attribute lock drops while a
# file exists; the lock wait is bounded at about 8 s here (lock_timeout=2000,
# fence_deadline=1000: the bound is the larger of lock_timeout and a dead
# node's release bound, token + consensus + deadline + 5 s).
. "$(dirname "$0")/../lib.sh"
lab_test_begin attr_recall attrrecall
export CSVFS_LAB_DAEMON_OPTS="fence_deadline=1000,pause_timeout=20000,lock_timeout=2000"
export CSVFS_TEST_HOLD_ATTR_DROP=$S/holdattr
V=/ClusterStorage/Volume1
LUN=$S/lun.img
truncate -s 1G "$LUN"
"$LAB" up -n 3 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes mounted" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
coordinator() { on 1 "$CTL" status --json 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]*\)".*/\1/p' | head -1; }
wait_until 30 sh -c "[ -n \"\$(\"$LAB\" exec 1 -- \"$CTL\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]\\+\\)\".*/\\1/p')\" ]"
C=$(coordinator); P=$(( C % 3 + 1 ))
check "a coordinator (node$C) and a participant (node$P)" test -n "$C"

on "$C" mkdir "$V/d"
for f in f1 f2 f3; do on "$C" sh -c "echo $f > $V/d/$f"; done
# node P caches d's names and attributes: its first listing asks for the
# attribute lock, the next ones are answered under it
for i in 1 2 3; do on "$P" ls -l "$V/d" >/dev/null; sleep 0.5; done
listing() { on "$1" ls "$V/d" | tr '\n' ' '; }
before=$(listing "$C")
: >"$S/holdattr.node$P"

fails_eio() {  # fails_eio WHAT CMD... — on the coordinator: the change fails with EIO
  local what=$1; shift
  on "$C" sh -c "$*" 2>"$S/err.out"; local rc=$?
  check "node$C: $what fails while node$P holds its copies (rc $rc: $(head -c 120 "$S/err.out"))" \
    sh -c "[ $rc -ne 0 ] && grep -q 'Input/output error' '$S/err.out'"
}
fails_eio "a create in d" "touch $V/d/new"
fails_eio "an unlink in d" "rm $V/d/f2"
fails_eio "a rename in d" "mv $V/d/f1 $V/d/f1b"
# and a file's own changes: a write into a hole (an allocation), a truncate, an xattr
fails_eio "a write into a hole of f3" "dd if=/dev/zero of=$V/d/f3 bs=4096 count=4 seek=100 conv=notrunc oflag=direct status=none"
fails_eio "a truncate of f3" "truncate -s 1M $V/d/f3"
fails_eio "a setxattr on f3" "setfattr -n user.k -v v $V/d/f3"
check "node$P's daemon held its drops (the test hook's log line)" \
  grep -q "test hook: holding attribute lock drops" "/run/csvfs-lab/$CSVFS_LAB/nodes/$P/csvfs.log"
check "node$C logged the recall that did not finish" \
  grep -q "did not give up their cached attributes" "/run/csvfs-lab/$CSVFS_LAB/nodes/$C/csvfs.log"
rm -f "$S/holdattr.node$P"

check_eq "node$C: d is as it was (nothing half made)" "$before" "$(listing "$C")"
check_eq "node$P: d is as it was" "$before" "$(listing "$P")"
check "node$C: the same create succeeds once node$P lets go" wait_until 30 on "$C" touch "$V/d/new"
check "node$P: sees it" wait_until 10 on "$P" test -e "$V/d/new"
check_eq "node$P: f2 reads as written" "f2" "$(on "$P" cat "$V/d/f2")"
check_eq "node$P: f3 as it was (size, content)" "3 f3" "$(on "$P" sh -c "stat -c %s $V/d/f3; cat $V/d/f3" | tr '\n' ' ' | sed 's/ $//')"

lab_down_checked "$LUN"
finish
