#!/usr/bin/env bash
# Cluster-wide file locks (design.md §5, docs/file-locks.md) on a 3-node
# csvfs-lab with real corosync and real mounts: QEMU's own image locking
# (qemu-io / qemu-img on qcow2 and raw disks) refuses a second read-write
# open on another node; a live-migration handoff; POSIX, OFD and flock locks
# from tests/helpers/lockprobe.c on two and three nodes (conflicts, F_GETLK,
# blocking waits that wake, a signal that interrupts one, split and
# downgrade, release at close and at exit); locks that survive csvctl move
# and a coordinator takeover; a killed holder's node whose locks go only
# once it is fenced; a partitioned holder whose locks are lost, and whose
# next write then fails with EIO. Ends with e2fsck -fn and the logs.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-locktest}
unset CSVFS_BIN CSVFS_LAB_TOKEN
export CSVFS_LAB_DAEMON_OPTS="fence_deadline=4000,pause_timeout=20000"
V=/ClusterStorage/Volume1
PROBE=$TBIN/lockprobe

skip() { ok "cluster_locks skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare qemu-img qemu-io e2fsck; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] && [ -x "$PROBE" ] || { not_ok "$LAB or $PROBE missing"; finish; exit; }

S=$(scratch_dir)
LUN=$S/lun.img
truncate -s 1G "$LUN"
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/cluster_locks'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/cluster_locks/' 2>/dev/null"

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
sh_on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- sh -c "$*"; }
coordinator() {
  on "$1" "$BIN/csvctl" status --json 2>/dev/null | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p' | head -1
}
probe() { local k=$1; shift; on "$k" "$PROBE" "$@" 2>&1 | tr '\n' ' ' | sed 's/ $//'; }

# hold NAME NODE STEP... — a lockprobe on NODE that runs its steps up to
# "ready", then keeps its file open until release NAME; its output goes to
# $S/NAME.out (steps after the hold run once released).
declare -A HOLD_PID
hold() {
  local name=$1 k=$2; shift 2
  rm -f "$S/$name.stop"
  "$LAB" exec "$k" -- "$PROBE" "$@" </dev/null >"$S/$name.out" 2>&1 &
  HOLD_PID[$name]=$!
  wait_until 20 grep -q '^ready$' "$S/$name.out"
}
# release NAME — the holder goes on past its until:$S/NAME.stop and exits.
release() {
  touch "$S/$1.stop"
  timeout 60 tail --pid="${HOLD_PID[$1]}" -f /dev/null
  wait "${HOLD_PID[$1]}" 2>/dev/null
  return 0
}
# qemu_hold NAME NODE QEMU-IO-ARGS... — qemu-io with its image open (one
# read done) until release NAME ends its input.
qemu_hold() {
  local name=$1 k=$2; shift 2
  rm -f "$S/$name.stop"
  "$LAB" exec "$k" -- sh -c "echo 'read 0 4k'; while [ ! -e '$S/$name.stop' ]; do sleep 0.1; done" \
    </dev/null | "$LAB" exec "$k" -- qemu-io "$@" >"$S/$name.out" 2>&1 &
  HOLD_PID[$name]=$!
  wait_until 20 grep -q 'read 4096/4096' "$S/$name.out"
}

"$LAB" up -n 3 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, csvfs mounted on every node" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
wait_until 30 sh -c "[ -n \"\$(\"$LAB\" exec 1 -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]\\+\\)\".*/\\1/p')\" ]"
C=$(coordinator 1); c=${C#node}
a=$(( c % 3 + 1 )); b=$(( a % 3 + 1 ))   # two participants
diag "coordinator $C; participants node$a and node$b"

# ---- QEMU's image locking across nodes -------------------------------------------------
on "$a" qemu-img create -q -f qcow2 "$V/vm.qcow2" 64M
on "$a" qemu-img create -q -f raw "$V/vm.raw" 64M
img=$V/vm.qcow2
qemu_hold qq "$a" -t none -f qcow2 "$img"
check "qcow2: qemu-io holds $img read-write on node$a" grep -q 'read 4096/4096' "$S/qq.out"
on "$b" qemu-io -t none -f qcow2 -c 'read 0 4k' "$img" >"$S/q2.out" 2>&1; rc=$?
check "qcow2: a read-write open on node$b is refused with QEMU's write-lock error (exit $rc)" \
  sh -c "[ $rc -ne 0 ] && grep -q 'Failed to get \"write\" lock' '$S/q2.out'"
on "$c" qemu-io -t none -f qcow2 -c 'read 0 4k' "$img" >"$S/q3.out" 2>&1; rc=$?
check "qcow2: ... and on the coordinator node$c too (exit $rc)" \
  sh -c "[ $rc -ne 0 ] && grep -q 'Failed to get \"write\" lock' '$S/q3.out'"
on "$b" qemu-img info "$img" >"$S/q4.out" 2>&1; rc=$?
check "qcow2: qemu-img info without -U on node$b is refused as on one host (exit $rc)" \
  sh -c "[ $rc -ne 0 ] && grep -q 'Failed to get shared \"write\" lock' '$S/q4.out'"
check "qcow2: qemu-img info -U (shared, read-only) works on node$b" on "$b" qemu-img info -U "$img"
check "qcow2: a read-only shared open (qemu-io -r -U) reads on node$c" \
  sh -c "timeout 60 '$LAB' exec $c -- qemu-io -r -U -f qcow2 -c 'read 0 4k' '$img' | grep -q 'read 4096/4096'"
release qq
check "qcow2: once node$a closes it, node$b opens it read-write" \
  sh -c "timeout 60 '$LAB' exec $b -- qemu-io -t none -f qcow2 -c 'write -P 7 0 4k' '$img' | grep -q 'wrote 4096/4096'"

# A raw disk: qemu-io and qemu-img share "write" on raw images (on one host
# too), so the holder takes the bytes a VM's raw virtio disk (share-rw=off)
# takes: shared locks on 100 (consistent read), 101 (write) and 201 (write
# not shared). QEMU on another node must refuse to open it read-write.
img=$V/vm.raw
hold vmraw "$a" "$img" ofd:r:100:1 ofd:r:101:1 ofd:r:201:1 ready until:$S/vmraw.stop
on "$b" qemu-io -t none -f raw -c 'read 0 4k' "$img" >"$S/q5.out" 2>&1; rc=$?
check "raw: with a VM's locks on node$a, qemu-io read-write on node$b is refused (exit $rc)" \
  sh -c "[ $rc -ne 0 ] && grep -q 'Failed to get \"write\" lock' '$S/q5.out'"
check "raw: qemu-img info -U works on node$c" on "$c" qemu-img info -U "$img"
release vmraw
check "raw: once the VM closes it, node$b opens it read-write" \
  sh -c "timeout 60 '$LAB' exec $b -- qemu-io -t none -f raw -c 'write -P 9 0 4k' '$img' | grep -q 'wrote 4096/4096'"
qemu_hold qr "$b" -t none -f raw "$img"
check_eq "raw: with qemu-io writing on node$b, a VM starting on node$c finds the write byte held" \
  "held r 100 2 pid -1" "$(probe "$c" -r "$img" ofdget:w:101:1)"
release qr

# A live migration's handoff: the destination opens the disk inactive (it
# takes no lock while the source runs), the source stops and closes, the
# destination activates (takes its write lock).
qemu_hold src "$a" -t none -f qcow2 "$V/vm.qcow2"
check "migration: the destination's inactive open (-r -U) works while the source runs" \
  sh -c "timeout 60 '$LAB' exec $b -- qemu-io -r -U -f qcow2 -c 'read -P 7 0 4k' '$V/vm.qcow2' | grep -q 'read 4096/4096'"
check_fails "migration: the destination cannot activate before the source lets go" \
  on "$b" qemu-io -t none -f qcow2 -c 'read 0 4k' "$V/vm.qcow2"
release src
check "migration: after the source closes, the destination activates at once" \
  sh -c "timeout 60 '$LAB' exec $b -- qemu-io -t none -f qcow2 -c 'read -P 7 0 4k' '$V/vm.qcow2' | grep -q 'read 4096/4096'"

# ---- record locks and flock between nodes ------------------------------------------------
F=$V/locks.dat
on "$a" sh -c "echo data > $F"
hold h1 "$a" "$F" posix:w:0:10 ready until:$S/h1.stop
check_eq "node$a takes a write lock on bytes 0-9" "ok ready" "$(head -2 "$S/h1.out" | tr '\n' ' ' | sed 's/ $//')"
check_eq "node$b: an overlapping write lock is refused (EAGAIN)" "EAGAIN" "$(probe "$b" "$F" posix:w:5:10)"
check_eq "node$b: F_GETLK names the holder's range, pid 0 (a process of another node)" \
  "held w 0 10 pid 0" "$(probe "$b" "$F" get:w:0:0)"
check_eq "node$b: a read lock beside the range is granted" "ok" "$(probe "$b" "$F" posix:r:10:5)"
check_eq "node$c (coordinator): an OFD write lock on the range is refused" "EAGAIN" "$(probe "$c" "$F" ofd:w:0:1)"
check_eq "node$c: F_OFD_GETLK sees the holder (pid -1, as the kernel reports OFD results)" "held w 0 10 pid -1" "$(probe "$c" "$F" ofdget:r:3:1)"
check_eq "node$c: flock is independent of record locks (as on Linux)" "ok" "$(probe "$c" "$F" flock:exnb)"
check_eq "node$b: a blocking wait is interrupted by a signal (EINTR)" "EINTR" "$(probe "$b" "$F" alarm:1 posixw:w:0:1)"
# a blocking waiter on each other node wakes when the holder lets go
"$LAB" exec "$b" -- "$PROBE" "$F" posixw:w:0:1 >"$S/w1.out" 2>&1 & wb=$!
"$LAB" exec "$c" -- "$PROBE" "$F" ofdw:r:5:1 >"$S/w2.out" 2>&1 & wc=$!
sleep 1
check "the waiters still wait while node$a holds the lock" sh -c "[ ! -s '$S/w1.out' ] && [ ! -s '$S/w2.out' ]"
release h1
check "node$a's close releases: node$b's blocked F_SETLKW is granted" wait_until 20 grep -q '^ok$' "$S/w1.out"
timeout 30 tail --pid="$wb" -f /dev/null
check "... and node$c's blocked F_OFD_SETLKW" wait_until 20 grep -q '^ok$' "$S/w2.out"
timeout 30 tail --pid="$wc" -f /dev/null

# split, merge and downgrade, seen from another node
hold h2 "$a" "$F" posix:w:0:100 posix:u:40:20 ready until:$S/h2.stop
check_eq "split: node$b locks the hole node$a unlocked (40-59), not its sides" \
  "ok EAGAIN EAGAIN" "$(probe "$b" "$F" posix:w:40:20 posix:w:39:1 posix:w:60:1)"
release h2
hold h3 "$a" "$F" posix:w:0:50 posix:w:50:50 posix:r:0:100 ready until:$S/h3.stop
check_eq "merge and downgrade: node$b reads anywhere in 0-99, writes nowhere" \
  "ok ok EAGAIN EAGAIN" "$(probe "$b" "$F" posix:r:0:1 posix:r:99:1 posix:w:0:1 posix:w:99:1)"
check_eq "... and the range is one lock of 100 bytes" "held r 0 100 pid 0" "$(probe "$b" "$F" get:w:0:0)"
release h3
check_eq "all released at close: node$b write-locks the whole file" "ok" "$(probe "$b" "$F" posix:w:0:0)"

# a holder killed with SIGKILL: its locks go when the kernel closes its files
hold h4 "$a" "$F" ofd:w:0:0 flock:ex pid ready until:$S/h4.stop
kill -9 "$(sed -n 's/^pid //p' "$S/h4.out")"
release h4
check_eq "a killed holder's OFD and flock locks are released" "ok ok" "$(probe "$b" "$F" ofd:w:0:0 flock:exnb)"
hold h5 "$a" "$F" flock:sh ready until:$S/h5.stop
check_eq "flock across nodes: shared granted, exclusive refused" "ok EAGAIN" "$(probe "$b" "$F" flock:shnb flock:exnb)"
release h5
check_eq "bad input: an F_SETLK with a negative start is refused cleanly (EINVAL)" "EINVAL" "$(probe "$b" "$F" posix:w:-5:1)"
check_eq "bad input: a write lock on a read-only descriptor is refused (EBADF), as on ext4" "EBADF" "$(probe "$b" -r "$F" posix:w:0:1)"
on "$a" mkdir -p "$V/lockdir"
check "a directory takes flock as on ext4 (the kernel's own)" on "$b" flock -n "$V/lockdir" true

# ---- locks survive a move and a takeover ------------------------------------------------
hold h6 "$a" "$F" posix:w:0:10 ready until:$S/h6.stop
qemu_hold vm "$a" -t none -f qcow2 "$V/vm.qcow2"
on "$a" "$BIN/csvctl" move "node$b" >/dev/null 2>&1
check "csvctl move hands the role to node$b" wait_until 30 sh -c "[ \"\$(\"$LAB\" exec $a -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]*\\)\".*/\\1/p')\" = node$b ]"
check_eq "after the move node$c is still refused node$a's range" "EAGAIN" "$(probe "$c" "$F" posix:w:0:1)"
check_fails "... and the VM disk node$a holds" on "$c" qemu-io -t none -f qcow2 -c 'read 0 4k' "$V/vm.qcow2"
"$LAB" kill "$b" csvfs >/dev/null 2>&1
check "after kill -9 of node$b's daemon (the coordinator) another node takes over" \
  wait_until 40 sh -c "x=\$(\"$LAB\" exec $c -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]*\\)\".*/\\1/p'); [ -n \"\$x\" ] && [ \"\$x\" != node$b ]"
check_eq "after the takeover node$c is still refused node$a's range" "EAGAIN" "$(probe "$c" "$F" posix:w:0:1)"
check_fails "... and the VM disk node$a holds" on "$c" qemu-io -t none -f qcow2 -c 'read 0 4k' "$V/vm.qcow2"
release h6
release vm
check_eq "node$a's locks still release at its close after the takeover" "ok" "$(probe "$c" "$F" posix:w:0:0)"
"$LAB" start "$b" csvfs >/dev/null 2>&1
check "node$b's daemon comes back and mounts" wait_until 60 sh -c "\"$LAB\" exec $b -- stat $V/locks.dat >/dev/null 2>&1"

# ---- a holder's node dies: its locks go once it is fenced, not before -------------------
C=$(coordinator "$c"); c=${C#node}
d=$(( c % 3 + 1 )); w=$(( d % 3 + 1 ))   # d holds and dies; w watches
hold h7 "$d" "$F" posix:w:0:10 ready until:$S/h7.stop
"$LAB" kill "$d" all >/dev/null 2>&1
release h7
node_state() { on "$w" "$BIN/csvctl" status 2>/dev/null | awk -v n="node$d" '$1 == n {print $2}'; }
wait_until 20 sh -c "[ \"\$(timeout 10 '$LAB' exec $w -- '$BIN/csvctl' status 2>/dev/null | awk '\$1 == \"node$d\" {print \$2}')\" != up ]"
r=$(probe "$w" "$F" posix:w:0:1)
state=$(node_state)
if [ "$state" = departed ]; then
  check_eq "node$d killed, not yet fenced: its lock still holds on node$w" "EAGAIN" "$r"
else
  diag "node$d was already $state when node$w asked ($r): the not-yet-fenced check did not apply"
fi
check "node$d is fenced in node$w's view" wait_until 30 sh -c \
  "\"$LAB\" exec $w -- \"$BIN/csvctl\" status 2>/dev/null | grep -qE '^  node$d +fenced'"
check "once node$d is fenced, node$w takes its range" wait_until 20 sh -c "[ \"\$(timeout 30 '$LAB' exec $w -- '$PROBE' '$F' posix:w:0:1)\" = ok ]"
"$LAB" start "$d" >/dev/null 2>&1
check "node$d comes back and mounts" wait_until 90 sh -c "\"$LAB\" exec $d -- stat $V/locks.dat >/dev/null 2>&1"

# ---- a partitioned holder loses its locks; its next write fails with EIO -----------------
C=$(coordinator "$w"); c=${C#node}
p=$(( c % 3 + 1 )); o=$(( p % 3 + 1 ))
[ "$o" = "$c" ] || o=$c
hold h8 "$p" "$F" posix:w:0:10 ready until:$S/h8.stop write
"$LAB" partition "$p" >/dev/null
check "with node$p cut off and fenced, node$o takes the range node$p held" \
  wait_until 60 sh -c "[ \"\$(timeout 30 '$LAB' exec $o -- '$PROBE' '$F' posix:w:0:1)\" = ok ]"
"$LAB" heal "$p" >/dev/null
check "node$p rejoins" wait_until 60 sh -c \
  "\"$LAB\" exec $p -- \"$BIN/csvctl\" status 2>/dev/null | grep -qE '^  node$p +up +yes +direct'"
release h8
check_eq "node$p's holder learns its lock was lost: its write fails with EIO" "EIO" "$(sed -n 3p "$S/h8.out")"
check "... and node$p's log says why" grep -q 'file lock range(s) on volume .* were lost' "/run/csvfs-lab/$CSVFS_LAB/nodes/$p/csvfs.log"

# ---- the oracles -------------------------------------------------------------------------------
"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
check "lab down unmounts every node" test $? -eq 0
check "no daemon crashed or hit a sanitizer (logs)" sh -c "! grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:|Segmentation' $S/logs/*/csvfs.log 2>/dev/null | grep -q ."
fsck_clean "$LUN" "$S/fsck.out"; rc=$?
check_eq "e2fsck -fn is clean" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$S/fsck.out" | head -20
finish
