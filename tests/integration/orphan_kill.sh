#!/usr/bin/env bash
# Unlinked-while-open files (orphans) across a coordinator kill, on a 3-node
# csvfs-lab (issue 9). Each round: files opened on some nodes, unlinked on
# another, the coordinator's daemon killed -9 and started again; the openers
# that survive read their file back through the open descriptor after the
# takeover, then close. Rounds: the opener is the killed coordinator itself;
# a surviving participant (also one whose reclaim comes after the locks'
# grace); several opens on three nodes; a participant
# whose own daemon is killed too after the takeover. Oracles: the space of
# every orphan comes back once its last opener is gone (statfs); after lab
# down, e2fsck -fn is clean (no "Deleted inode has zero dtime", no bitmap
# differences) and the kernel's read-only mount sees the same tree.
# Last, a punch after a takeover keeps the size of a write the old
# coordinator had not made durable (the participant's pending commits), and
# so does a stat that is the writer's first request after the takeover.
. "$(dirname "$0")/../lib.sh"

lab_test_begin orphan_kill orph1 sha256sum losetup
export CSVFS_TEST_HOLD_RECLAIM=$S/holdreclaim   # round 2b (fs/cluster_conn.c)
V=/ClusterStorage/Volume1
MB=16   # each orphan's size: its space coming back is plain in statfs
on_exit ": >'$S/stop'"   # holders still waiting let go before the lab goes down

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
coordinator() {
  on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]*\)".*/\1/p'
}
# The coordinator every live node agrees on, once there is one.
settled_coordinator() {
  local k c first=""
  for k in "$@"; do
    c=$(coordinator "$k"); [ -n "$c" ] || return 1
    [ -z "$first" ] && first=$c; [ "$c" = "$first" ] || return 1
  done
  echo "$first"
}
free_mb() { on "$1" stat -f -c '%a %S' "$V" | awk '{printf "%d\n", $1 * $2 / 1048576}'; }
# Space back: free now within 2 MB of what it was before the round.
space_back() { [ "$(free_mb "$1")" -ge $(($2 - 2)) ]; }

# hold NODE NAME: a process on NODE opens NAME and keeps it open until
# $S/NAME.NODE.go exists, then writes the sha256 it reads through the open
# descriptor to $S/NAME.NODE.sum (or "error") and closes.
hold() {
  local k=$1 f=$2 tag="$S/$2.$1"
  on "$k" sh -c "exec 3<'$V/$f' || exit 1; : >'$tag.open'
    i=0; while [ ! -e '$tag.go' ] && [ ! -e '$S/stop' ] && [ \$i -lt 1200 ]; do sleep 0.1; i=\$((i + 1)); done
    sha256sum <&3 | cut -d' ' -f1 >'$tag.sum' 2>/dev/null || echo error >'$tag.sum'
    exec 3<&-" >/dev/null 2>&1 &
  wait_until 20 test -e "$tag.open"
}
release() { : >"$S/$2.$1.go"; wait_until 30 test -s "$S/$2.$1.sum"; }
write_file() {   # NODE NAME: MB of random data, fsynced; prints its sha256
  on "$1" sh -c "head -c ${MB}M /dev/urandom >'$V/$2' && sync '$V/$2' && sha256sum '$V/$2'" | cut -d' ' -f1
}
# kill_coordinator C OTHERS...: kill -9 of C's daemon, a new coordinator
# among OTHERS, C's daemon started again (a participant now). Prints the
# new coordinator.
kill_coordinator() {
  local c=$1 n; shift
  "$LAB" kill "$c" csvfs >/dev/null 2>&1
  wait_until 30 settled_coordinator "$@" >/dev/null
  n=$(settled_coordinator "$@")
  "$LAB" start "$c" csvfs >"$S/start.out" 2>&1 || sed 's/^/# /' "$S/start.out" >&2
  wait_until 30 settled_coordinator 1 2 3 >/dev/null
  echo "$n"
}
others() { local k; for k in 1 2 3; do [ "$k" = "$1" ] || echo "$k"; done; }
# A round starts from the coordinator C of now and its participants P.
begin_round() { C=$(settled_coordinator 1 2 3); mapfile -t P < <(others "$C"); }

"$LAB" up -n 3 --lun "$S/lun.img" --size 1G >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, the volume mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
wait_until 30 settled_coordinator 1 2 3 >/dev/null
on 1 sh -c "mkdir '$V/kept' && echo kept >'$V/kept/a' && sync '$V/kept/a'"

# ---- round 1: the opener is the coordinator, killed ----------------------------------
begin_round
diag "round 1: coordinator node$C opens, node${P[0]} unlinks, node$C is killed"
base=$(free_mb "${P[0]}")
write_file "$C" r1 >/dev/null
hold "$C" r1
check "round 1: node${P[0]} unlinks r1 while node$C holds it open" on "${P[0]}" rm "$V/r1"
N=$(kill_coordinator "$C" "${P[@]}")
check "round 1: node$N took over from node$C" test -n "$N"
release "$C" r1
check "round 1: r1's $MB MB come back though its opener died with the coordinator" \
  wait_until 30 space_back "$N" "$base"

# ---- round 2: the opener is a surviving participant ----------------------------------
begin_round
diag "round 2: node${P[0]} opens, node${P[1]} unlinks, coordinator node$C is killed"
base=$(free_mb "${P[0]}")
sum=$(write_file "${P[1]}" r2)
hold "${P[0]}" r2
check "round 2: node${P[1]} unlinks r2 while node${P[0]} holds it open" on "${P[1]}" rm "$V/r2"
N=$(kill_coordinator "$C" "${P[@]}")
sleep 7   # past the reclaim grace: the new coordinator must keep r2 for node${P[0]}
check "round 2: r2 still takes no name after the takeover" sh -c "! '$LAB' exec ${P[0]} -- test -e '$V/r2'"
release "${P[0]}" r2
check_eq "round 2: node${P[0]} reads r2 whole through its open descriptor after the takeover" \
  "$sum" "$(cat "$S/r2.${P[0]}.sum")"
check "round 2: r2's $MB MB come back at its last close" wait_until 30 space_back "$N" "$base"

# ---- round 2b: the surviving opener tells its open after the grace -------------------
# A loaded node can reclaim later than the file locks' 5 s grace: the orphan
# must wait for a live node's reclaim (CSVFS_TEST_HOLD_RECLAIM holds it 8 s).
# The opener is the participant with the higher id, so that the other one
# takes the role (the election prefers low ids) and the opener must reclaim.
begin_round
O=${P[1]}
diag "round 2b: node$O opens, node${P[0]} unlinks, node$C is killed; node$O's reclaim comes 8 s late"
base=$(free_mb "${P[0]}")
sum=$(write_file "${P[0]}" r2b)
hold "$O" r2b
check "round 2b: node${P[0]} unlinks r2b while node$O holds it open" on "${P[0]}" rm "$V/r2b"
: >"$S/holdreclaim.node$O"
(sleep 8; rm -f "$S/holdreclaim.node$O") &
late=$!
N=$(kill_coordinator "$C" "${P[@]}")
wait "$late"
check "round 2b: node$N took the role, not the opener node$O (which must reclaim)" test "$N" != "$O"
check "round 2b: node$O held its reclaim (the test hook's log line)" \
  grep -q "test hook: holding this node's reclaim" "/run/csvfs-lab/$CSVFS_LAB/nodes/$O/csvfs.log"
release "$O" r2b
check_eq "round 2b: node$O reads r2b whole through its open descriptor after its late reclaim" \
  "$sum" "$(cat "$S/r2b.$O.sum")"
check "round 2b: r2b's $MB MB come back at its last close" wait_until 30 space_back "$N" "$base"

# ---- round 3: several opens on every node --------------------------------------------
begin_round
diag "round 3: r3 open on node$C, node${P[0]} (twice) and node${P[1]}; node$C is killed"
base=$(free_mb "${P[0]}")
sum=$(write_file "$C" r3)
hold "$C" r3; hold "${P[0]}" r3; hold "${P[1]}" r3
on "${P[0]}" sh -c "exec 3<'$V/r3'; : >'$S/r3.second.open'; sleep 4" >/dev/null 2>&1 &
second=$!
wait_until 20 test -e "$S/r3.second.open"
# Unlinked by a survivor: the killed coordinator's own unlink may be lost
# with it (no fsync), and r3 would rightly keep its name and its space.
check "round 3: node${P[1]} unlinks r3" on "${P[1]}" rm "$V/r3"
N=$(kill_coordinator "$C" "${P[@]}")
check "round 3: r3 takes no name after the takeover" sh -c "! '$LAB' exec ${P[0]} -- test -e '$V/r3'"
release "$C" r3
wait "$second"   # the second open on node${P[0]} closes
release "${P[1]}" r3
check_eq "round 3: node${P[1]} reads r3 whole after the takeover" "$sum" "$(cat "$S/r3.${P[1]}.sum")"
now=$(free_mb "$N")
check "round 3: r3 keeps its space while node${P[0]} still has it open ($now MB free, $base before)" \
  test "$now" -lt $((base - MB / 2))
release "${P[0]}" r3
check_eq "round 3: node${P[0]}, the last opener, reads r3 whole" "$sum" "$(cat "$S/r3.${P[0]}.sum")"
check "round 3: r3's $MB MB come back at its last close" wait_until 30 space_back "$N" "$base"

# ---- round 4: the participant opener's daemon is killed too --------------------------
begin_round
diag "round 4: node${P[0]} opens and unlinks r4, coordinator node$C is killed, then node${P[0]}'s daemon"
base=$(free_mb "${P[1]}")
write_file "${P[0]}" r4 >/dev/null
hold "${P[0]}" r4
check "round 4: node${P[0]} unlinks r4 it holds open" on "${P[0]}" rm "$V/r4"
N=$(kill_coordinator "$C" "${P[@]}")
mapfile -t Q < <(others "${P[0]}")
"$LAB" kill "${P[0]}" csvfs >/dev/null 2>&1
release "${P[0]}" r4
"$LAB" start "${P[0]}" csvfs >"$S/start.out" 2>&1 || sed 's/^/# /' "$S/start.out"
check "round 4: r4's $MB MB come back once its opener's daemon is gone" \
  wait_until 30 space_back "${Q[0]}" "$base"

# past_end_writer NODE NAME THEN: on NODE, NAME written and fsynced up to BASE,
# then TAIL bytes past that end (committed, not durable); $S/NAME.written
# says so. Once $S/NAME.go exists its first request is THEN — "punch" (the
# tail's blocks, keeping the size) or "stat" — then an fstat, an fsync, and
# "rc errno size" in $S/NAME.sum.
BASE=4194304 TAIL=42487
past_end_writer() {
  on "$1" python3 -c "
import ctypes, os, sys, time
f, tag, then = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, b'\x5a' * $BASE, 0)
os.fsync(fd)
os.pwrite(fd, b'\xa5' * $TAIL, $BASE)      # committed, not durable
open(tag + '.written', 'w').close()
for _ in range(1200):
    if os.path.exists(tag + '.go') or os.path.exists(os.path.dirname(tag) + '/stop'):
        break
    time.sleep(0.1)
rc = err = 0
if then == 'punch':
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE: the whole tail's blocks
    rc = libc.fallocate(fd, 3, $BASE, 65536)
    err = ctypes.get_errno() if rc else 0
size = os.fstat(fd).st_size
os.fsync(fd)
with open(tag + '.sum', 'w') as out:
    out.write('%d %d %d\n' % (rc, err, size))
os.close(fd)
" "$V/$2" "$S/$2" "$3" >"$S/$2.out" 2>&1
}

# ---- round 5: a size written before the kill, punched after it -------------------------
# The participant's write past the fsynced end is committed to the old
# coordinator, which dies before its journal holds it; the first thing the
# participant does after the takeover is a punch of that very range. The
# file keeps the size it was written to (a punch keeps the size), on every
# node, and its bytes are the model's: the fsynced part, then zeros. The
# writer is the participant with the higher node id: the lower one takes the
# role over (a writer that becomes the coordinator applies its own pending
# commits to its engine, and would not need them sent).
begin_round
W=${P[1]} O=${P[0]}
diag "round 5: node$W writes past its fsynced end, coordinator node$C is killed, node$W punches"
past_end_writer "$W" r5 punch &
r5=$!
wait_until 30 test -e "$S/r5.written"
N=$(kill_coordinator "$C" "${P[@]}")
: >"$S/r5.go"
wait "$r5"
read -r prc perr psize <"$S/r5.sum" 2>/dev/null
check_eq "round 5: node$W's punch after the takeover succeeds (errno ${perr:-?})" 0 "${prc:-none}"
check_eq "round 5: node$W sees the size it wrote right after the punch" $((BASE + TAIL)) "${psize:-none}"
check_eq "round 5: node$O sees that size too" $((BASE + TAIL)) "$(on "$O" stat -c %s "$V/r5")"
want=$( (head -c $BASE /dev/zero | tr '\0' '\132'; head -c $TAIL /dev/zero) | sha256sum | cut -d' ' -f1)
check_eq "round 5: r5's bytes: the fsynced part, then the punched zeros" "$want" \
  "$(on "$N" sha256sum "$V/r5" | cut -d' ' -f1)"

# ---- round 6: a size written before the kill, stat'ed first after it ------------------
# As round 5, but the first thing the writer does after the takeover is an
# fstat: it must show the size it wrote, not the one the new coordinator's
# journal holds (make soak under kills: "st_size is 820507, expected 2070757"
# right after a takeover — a stat did not send the pending commits first).
begin_round
W=${P[1]} O=${P[0]}
diag "round 6: node$W writes past its fsynced end, coordinator node$C is killed, node$W stats"
past_end_writer "$W" r6 stat &
r6=$!
wait_until 30 test -e "$S/r6.written"
N=$(kill_coordinator "$C" "${P[@]}")
check "round 6: node$N took over from node$C" test -n "$N"
: >"$S/r6.go"
wait "$r6"
read -r _ _ ssize <"$S/r6.sum" 2>/dev/null
check_eq "round 6: node$W's first fstat after the takeover shows the size it wrote" $((BASE + TAIL)) \
  "${ssize:-none}"
check_eq "round 6: node$O sees that size too" $((BASE + TAIL)) "$(on "$O" stat -c %s "$V/r6")"
want=$( (head -c $BASE /dev/zero | tr '\0' '\132'; head -c $TAIL /dev/zero | tr '\0' '\245') | sha256sum | cut -d' ' -f1)
check_eq "round 6: r6's bytes: the fsynced part, then the tail written before the kill" "$want" \
  "$(on "$O" sha256sum "$V/r6" | cut -d' ' -f1)"

# ---- the independent oracles -----------------------------------------------------------
wait_until 30 settled_coordinator 1 2 3 >/dev/null
on 1 sh -c "cd '$V' && find . -path ./lost+found -prune -o -print | sort" >"$S/tree.csvfs"
on 2 sha256sum "$V/kept/a" "$V/r5" "$V/r6" | cut -d' ' -f1 >"$S/kept.csvfs"
"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
check_eq "lab down" 0 "$?"
check "e2fsck -fn: clean after four orphans outlived a coordinator kill" fsck_clean "$S/lun.img" "$S/fsck.out"
grep -E 'dtime|orphan|differences|Inode' "$S/fsck.out" | head -n 10 | sed 's/^/# /'
KMNT=$(scratch_dir)
if DEV=$(losetup -f --show -r "$S/lun.img"); then
  on_exit "losetup -d '$DEV' 2>/dev/null"
  if mount -t ext4 -o ro,noload "$DEV" "$KMNT"; then
    (cd "$KMNT" && find . -path ./lost+found -prune -o -print | sort) >"$S/tree.kernel"
    check "the kernel's read-only mount sees the tree csvfs served" cmp -s "$S/tree.csvfs" "$S/tree.kernel"
    check_eq "the kernel reads kept/a, r5 and r6 as csvfs did" "$(cat "$S/kept.csvfs")" \
      "$(sha256sum "$KMNT/kept/a" "$KMNT/r5" "$KMNT/r6" | cut -d' ' -f1)"
    umount "$KMNT"
  else
    not_ok "the kernel mounts the volume read-only"
  fi
  losetup -d "$DEV"
else
  not_ok "setup: losetup -r"
fi
finish
