#!/usr/bin/env bash
# csvctl snapshot (design.md §8, docs/snapshot.md) on a 3-node csvfs-lab whose
# LUN is an image file on a loop-mounted XFS with reflink=1, so the reflink
# hook (tools/hooks/reflink.sh) is instant. Real daemons, real corosync, real
# mounts. Oracles: e2fsck -fn on the snapshot (clean, no journal replay), the
# kernel's read-only mount of it (refuses a volume that needs recovery),
# fio verify=crc32c on the writers, qemu-img check on a VM disk copied out.
# Covers: a snapshot while two participants write (every write acknowledged
# before the request is in the snapshot, none issued after the thaw is; a
# write issued during the freeze waits and succeeds), status while frozen,
# a failing hook, a hanging hook (timeout), kill -9 of csvctl during the hook,
# a second snapshot refused, bad input, a request from a participant refused,
# UUID= refusing two devices with one GUID, and a snapshot given its own GUID
# mounted read-only beside the live volume.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
CTL="$BIN/csvctl"
HOOKS="$TOP/tools/hooks"
export CSVFS_LAB=${CSVFS_TEST_LAB:-snap}
unset CSVFS_BIN CSVFS_LAB_TOKEN
export CSVFS_LAB_DAEMON_OPTS="fence_deadline=4000,pause_timeout=20000"
V=/ClusterStorage/Volume1

skip() { ok "snapshot skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare mkfs.xfs fio qemu-img qemu-io e2fsck losetup; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] || { not_ok "$LAB missing"; finish; exit; }

S=$(scratch_dir)
on_exit "rm -rf '$S'"
XFS=$S/xfs
KMNT=$S/kmnt
mkdir -p "$XFS" "$KMNT" "$S/m"
"$LAB" down >/dev/null 2>&1 || true

# ---- the LUN on a reflink-capable filesystem --------------------------------------
truncate -s 6G "$S/xfs.img"
mkfs.xfs -q -m reflink=1 "$S/xfs.img" || { not_ok "mkfs.xfs -m reflink=1"; finish; exit; }
mount -o loop "$S/xfs.img" "$XFS" || { not_ok "mount the XFS scratch"; finish; exit; }
# Teardown runs in reverse order: the lab goes first, then loops, then the XFS.
on_exit "umount '$XFS' 2>/dev/null || umount -l '$XFS'"
detach_all() { local d; for d in $(losetup -l -n -O NAME -j "$1" 2>/dev/null); do losetup -d "$d"; done; }
on_exit "mountpoint -q '$KMNT' && umount '$KMNT'; for f in '$XFS'/*.img; do detach_all \"\$f\"; done"
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/snapshot'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/snapshot/' 2>/dev/null"
LUN=$XFS/lun.img
truncate -s 2G "$LUN"

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
sh_on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- sh -c "$*"; }
json_of() { on "$1" "$CTL" status --json 2>/dev/null; }
coordinator() { json_of "$1" | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p' | head -1; }
frozen_on() { json_of "$1" | grep -q '"freeze":{"frozen":true'; }
thawed_on() { json_of "$1" | grep -q '"freeze":{"frozen":false'; }
thawed_everywhere() { thawed_on 1 && thawed_on 2 && thawed_on 3; }
thawed_both() { thawed_on "$1" && thawed_on "$2"; }
# The hook whose pid the test hook left: gone (a zombie waiting for its reaper counts).
hook_gone() {
  local st
  st=$(awk '{sub(/.*\) /, ""); print $1}' "/proc/$(cat "$S/hook.pid")/stat" 2>/dev/null) || return 0
  [ "$st" = Z ]
}
# A small write through the mount, bounded: the volume takes changes.
writes_on() { sh_on "$1" "echo $2 > $V/probe.$1 && sync $V/probe.$1"; }

t0=$(date +%s)
"$LAB" up -n 3 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes on a LUN on reflink XFS, csvfs mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
diag "lab up in $(($(date +%s) - t0)) s"
GUID=$(dumpe2fs -h "$LUN" 2>/dev/null | sed -n 's/^Filesystem UUID: *//p')
check "the volume is formatted with metadata_csum_seed" sh -c "dumpe2fs -h '$LUN' 2>/dev/null | grep -q metadata_csum_seed"
wait_until 30 sh -c "[ -n \"\$('$LAB' exec 1 -- '$CTL' status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]\\+\\)\".*/\\1/p')\" ]"
C=$(coordinator 1); C=${C#node}
P=(); for k in 1 2 3; do [ "$k" = "$C" ] || P+=("$k"); done
diag "coordinator node$C, participants node${P[0]} node${P[1]}"
check "every node admits changes before any snapshot" thawed_everywhere

# Hooks of the test: each signals on the host that it started (the freeze holds).
mkhook() { printf '#!/bin/sh\n%s\n' "$2" >"$S/$1"; chmod +x "$S/$1"; }
mkhook slow-reflink "touch $S/hook.started; sleep 2; exec $HOOKS/reflink.sh"
mkhook fails "touch $S/hook.started; echo 'boom-7361: array said no' >&2; exit 3"
mkhook hangs "touch $S/hook.started; echo \$\$ > $S/hook.pid; exec sleep 1000"
mkhook ignores-guid "CSVFS_NEW_GUID= exec $HOOKS/reflink.sh"   # a hook that does not know --new-guid
printf '#!/bin/sh\nexit 0\n' >"$S/not-exec"; chmod -x "$S/not-exec"

# snap NODE ARGS... — csvctl snapshot on NODE; output in $S/snap.out, status in $SNAP_RC.
snap() {
  local k=$1; shift
  timeout 200 "$LAB" exec "$k" -- "$CTL" snapshot "$@" >"$S/snap.out" 2>&1; SNAP_RC=$?
  return "$SNAP_RC"
}
show() { sed 's/^/#   /' "$S/snap.out"; }

# ---- bad input: clear errors, nothing frozen ---------------------------------------
snap "$C" --hook "$HOOKS/reflink.sh" UUID=01234567-89ab-cdef-0123-456789abcdef
check "an unknown volume is refused, naming it (exit $SNAP_RC)" \
  sh -c "[ $SNAP_RC -ne 0 ] && grep -q '01234567-89ab-cdef-0123-456789abcdef' '$S/snap.out'"
snap "$C" --hook "$S/not-exec" "$V"
check "a hook that is not executable is refused (exit $SNAP_RC)" \
  sh -c "[ $SNAP_RC -ne 0 ] && grep -q 'not an executable' '$S/snap.out'"
snap "$C" "$V"
check "no hook: a usage error (exit $SNAP_RC)" sh -c "[ $SNAP_RC -eq 2 ] && grep -q -- '--hook' '$S/snap.out'"
snap "$C" --hook "$HOOKS/reflink.sh" --timeout 0 "$V"
check "timeout 0 is refused (exit $SNAP_RC)" sh -c "[ $SNAP_RC -eq 2 ] && grep -q 'timeout' '$S/snap.out'"
snap "$C" --hook "$HOOKS/reflink.sh" --timeout 99999999 "$V"
check "an absurd timeout is refused (exit $SNAP_RC)" sh -c "[ $SNAP_RC -eq 2 ] && grep -q 'timeout' '$S/snap.out'"
snap "$C" --hook "$HOOKS/reflink.sh" --name ../escape "$V"
check "a snapshot name with a slash is refused (exit $SNAP_RC)" \
  sh -c "[ $SNAP_RC -ne 0 ] && grep -q 'snapshot name' '$S/snap.out'"
snap "${P[0]}" --hook "$S/not-exec" "$V"
check "a participant refuses a hook that is not executable too (exit $SNAP_RC)" \
  sh -c "[ $SNAP_RC -ne 0 ] && grep -q 'not an executable' '$S/snap.out'"
check "after the refusals every node still admits changes" thawed_everywhere
check "and writes go on" writes_on "${P[0]}" after-bad-input

# ---- a snapshot while two participants write ---------------------------------------
# Each writer logs, on the host, when each of its writes was acknowledged:
# record i = "w<node> <i>" at block i of its file, O_DIRECT, then the log line.
writer() {  # writer NODE — up to 3000 records or 60 s
  local k=$1
  sh_on "$k" "end=\$((\$(date +%s) + 60)); i=0; while [ \$i -lt 3000 ] && [ \$(date +%s) -lt \$end ]; do
      [ -e $S/writers.stop ] && break
      i=\$((i + 1))
      printf 'w$k %08d\n' \$i | dd of=$V/acked.$k bs=4096 seek=\$i conv=notrunc,sync oflag=direct status=none || { echo \"write \$i failed\" >&2; exit 1; }
      echo \"\$i \$(date +%s%N)\" >> $S/acked.$k.log
    done" 2>"$S/writer.$k.err"
}
qemu-img create -f qcow2 "$S/vm.qcow2" 256M >/dev/null
on "${P[0]}" qemu-img convert -O qcow2 "$S/vm.qcow2" "$V/vm.qcow2"
on "${P[0]}" qemu-io -f qcow2 -t none -c "write -P 0x5a 0 64M" -c "write -P 0xa5 128M 16M" "$V/vm.qcow2" >/dev/null
: >"$S/acked.${P[0]}.log"; : >"$S/acked.${P[1]}.log"
for k in "${P[@]}"; do writer "$k" & eval "wpid_$k=\$!"; done
for k in "${P[@]}"; do
  on "$k" fio --name=snapv$k --filename="$V/fio.$k" --size=48M --bs=64k --rw=randwrite --direct=1 \
    --ioengine=psync --verify=crc32c --verify_state_save=0 --do_verify=1 --verify_fatal=1 --loops=4 >"$S/fio.$k.out" 2>&1 &
  eval "fpid_$k=\$!"
done
wait_until 30 sh -c "[ \$(wc -l < '$S/acked.${P[0]}.log') -ge 20 ] && [ \$(wc -l < '$S/acked.${P[1]}.log') -ge 20 ]"
rm -f "$S/hook.started"
t_req=$(date +%s%N)
snap "$C" --hook "$S/slow-reflink" --name snap1 --timeout 30 "$V" &
spid=$!
wait_until 30 test -e "$S/hook.started"
# During the hook: the freeze as status shows it, and a write that must wait.
check "status on the coordinator shows the freeze: snapshot snap1, requested from node$C" \
  sh -c "'$LAB' exec $C -- '$CTL' status --json | grep -q '\"snapshot\":{\"name\":\"snap1\",\"requested_by\":\"node$C\"'"
check "status on a participant shows it frozen" frozen_on "${P[1]}"
check "and names the snapshot and who asked for it, as the coordinator told it" \
  wait_until 5 sh -c "'$LAB' exec ${P[1]} -- '$CTL' status --json | grep -q '\"snapshot\":{\"name\":\"snap1\",\"requested_by\":\"node$C\"'"
check "the participant's human status says which snapshot froze it" \
  sh -c "'$LAB' exec ${P[0]} -- '$CTL' status | grep -q 'snapshot    snap1 requested from node$C'"
check "the human status says FROZEN" sh -c "'$LAB' exec $C -- '$CTL' status | grep -q FROZEN"
sh_on "${P[1]}" "echo during-freeze > $V/during-freeze.txt" >"$S/during.out" 2>&1 &
dpid=$!
wait "$spid"; rc=$?
t_done=$(date +%s%N)
check_eq "csvctl snapshot under writes from two nodes succeeds" 0 "$rc"
[ "$rc" -eq 0 ] || show
grep -q "frozen for" "$S/snap.out" && diag "$(cat "$S/snap.out")"
# Writers on both participants ran through the 2 s hook: some write waited, and
# every node told the coordinator its longest wait.
check "csvctl reports the cluster-wide longest write stall, on a node, with every node reporting" \
  grep -qE '^longest write stall: [1-9][0-9]* ms, on node[123] \(3 of 3 nodes reported\)' "$S/snap.out"
wait "$dpid"; rc=$?
check_eq "a create issued during the freeze waited and succeeded" 0 "$rc"
check "every node admits changes again" wait_until 10 thawed_everywhere
sleep 1
touch "$S/writers.stop"
for k in "${P[@]}"; do eval "wait \$wpid_$k"; rc=$?; check_eq "node$k's record writer had no error" 0 "$rc"; done
for k in "${P[@]}"; do
  eval "wait \$fpid_$k"; rc=$?
  check_eq "node$k's fio (verify=crc32c) had no error across the snapshot" 0 "$rc"
  [ "$rc" -eq 0 ] || tail -5 "$S/fio.$k.out" | sed 's/^/#   /'
done
SNAPIMG=$XFS/snap1.img
check "the reflink hook left the snapshot image" test -s "$SNAPIMG"

# ---- the snapshot, with independent tools ---------------------------------------------
e2fsck -fn "$SNAPIMG" >"$S/fsck.out" 2>&1; rc=$?
check_eq "e2fsck -fn is clean on the snapshot" 0 "$rc"
check "and found no journal to replay" sh -c "! grep -qi 'journal' '$S/fsck.out'"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/fsck.out" | head -20
KDEV=$(losetup -f --show -r "$SNAPIMG")
check "the kernel mounts the snapshot read-only (no noload: it needs no recovery)" \
  mount -t ext4 -o ro "$KDEV" "$KMNT"
# Every record acknowledged before the request is in the snapshot; none
# acknowledged after csvctl returned is.
records_ok() {  # records_ok NODE
  local k=$1 i at missing=0 late=0 n=0
  while read -r i at; do
    n=$((n + 1))
    got=$(dd if="$KMNT/acked.$k" bs=4096 skip="$i" count=1 status=none 2>/dev/null | tr -d '\0' | head -c 11)
    if [ "$at" -lt "$t_req" ] && [ "$got" != "$(printf 'w%s %08d' "$k" "$i")" ]; then missing=$((missing + 1)); fi
    if [ "$at" -gt "$t_done" ] && [ -n "$got" ]; then late=$((late + 1)); fi
  done <"$S/acked.$k.log"
  diag "node$k: $n records, $missing acknowledged before the request missing, $late after the thaw present"
  [ "$n" -gt 0 ] && [ "$missing" -eq 0 ] && [ "$late" -eq 0 ]
}
for k in "${P[@]}"; do
  check "node$k: every write acknowledged before the snapshot is in it, none after the thaw" records_ok "$k"
done
check "the create issued during the freeze is not in the snapshot" test ! -e "$KMNT/during-freeze.txt"
check "but is on the live volume" sh_on "${P[0]}" "grep -q during-freeze $V/during-freeze.txt"
cp "$KMNT/vm.qcow2" "$S/vm-out.qcow2"
check "qemu-img check is clean on the VM disk copied out of the snapshot" qemu-img check -q "$S/vm-out.qcow2"
check "and it holds what was written before" \
  qemu-io -f qcow2 -r -c "read -P 0x5a 0 64M" -c "read -P 0xa5 128M 16M" "$S/vm-out.qcow2"
umount "$KMNT"; losetup -d "$KDEV"

# ---- failures: the volume thaws, csvctl says why --------------------------------------
rm -f "$S/hook.started"
snap "$C" --hook "$S/fails" --name fails1 "$V"
check "a failing hook: csvctl exits non-zero with its status and stderr (exit $SNAP_RC)" \
  sh -c "[ $SNAP_RC -ne 0 ] && grep -q 'status 3' '$S/snap.out' && grep -q 'boom-7361' '$S/snap.out'"
check "thawed at once after the failing hook" wait_until 5 thawed_everywhere
check "writes go on after the failing hook" writes_on "${P[1]}" after-fail

rm -f "$S/hook.started" "$S/hook.pid"
snap "$C" --hook "$S/hangs" --name hangs1 --timeout 3 "$V"
check "a hook that hangs: killed at the timeout, non-zero exit (exit $SNAP_RC)" \
  sh -c "[ $SNAP_RC -ne 0 ] && grep -q 'timeout' '$S/snap.out'"
check "the hung hook is gone" wait_until 10 hook_gone
check "thawed after the timeout" wait_until 5 thawed_everywhere
check "writes go on after the hung hook" writes_on "${P[0]}" after-hang

# kill -9 of csvctl during the hook (timeout 60 s: the thaw must not wait for
# it), on the coordinator and on a participant (which tells the coordinator).
kill_requester() {  # kill_requester NODE NAME
  local k=$1 name=$2 kpid k0
  rm -f "$S/hook.started" "$S/hook.pid" "$S/ctl.pid"
  timeout 100 "$LAB" exec "$k" -- sh -c "echo \$\$ > $S/ctl.pid; exec '$CTL' snapshot --hook '$S/hangs' --name $name --timeout 60 '$V'" >/dev/null 2>&1 &
  kpid=$!
  wait_until 30 test -e "$S/hook.started"
  snap "$k" --hook "$HOOKS/reflink.sh" --name second-$name "$V"
  check "$name: a second snapshot while one runs is refused, naming the first (exit $SNAP_RC)" \
    sh -c "[ $SNAP_RC -ne 0 ] && grep -q \"'$name'.*in progress\" '$S/snap.out'"
  check "$name: the volume is frozen while the first one's hook runs" frozen_on "${P[0]}"
  k0=$(date +%s)
  kill -9 "$(cat "$S/ctl.pid")"
  wait "$kpid" 2>/dev/null
  check "$name: kill -9 of csvctl on node$k during the hook: every node thawed well within the timeout" \
    wait_until 20 thawed_everywhere
  diag "$name: thawed $(($(date +%s) - k0)) s after the kill (timeout was 60 s)"
  check "$name: that hook was killed" wait_until 10 hook_gone
  check "$name: writes go on after the requester died" writes_on "${P[1]}" "after-kill-$name"
}
kill_requester "$C" killed-on-coordinator
kill_requester "${P[0]}" killed-on-participant

# A snapshot asked for on a participant: the coordinator runs it.
snap "${P[1]}" --hook "$HOOKS/reflink.sh" --name from-participant "$V"
check_eq "a snapshot requested from a participant succeeds" 0 "$SNAP_RC"
[ "$SNAP_RC" -eq 0 ] || show
check "and is e2fsck clean" fsck_clean "$XFS/from-participant.img"
check "every node admits changes after it" wait_until 10 thawed_everywhere

# ---- nodes die during a freeze: the survivors thaw -----------------------------------
# A participant that dies before it froze holds its PR until it is fenced
# (4 s here); the snapshot (timeout 3 s) then either fails or, if the fence
# came first, succeeds without it. Either way csvctl ends and the others thaw.
D=${P[1]}; Q=${P[0]}
"$LAB" kill "$D" >/dev/null 2>&1
snap "$C" --hook "$HOOKS/reflink.sh" --name dead-participant --timeout 3 "$V"
diag "with node$D dead: csvctl exit $SNAP_RC: $(head -c 300 "$S/snap.out")"
check "a participant killed: the others thaw" wait_until 15 thawed_both "$C" "$Q"
check "a participant killed: writes go on on the others" writes_on "$Q" after-participant-death
if [ "$SNAP_RC" -eq 0 ]; then
  check "a participant killed: the snapshot taken without it is e2fsck clean" fsck_clean "$XFS/dead-participant.img"
fi
check "the killed participant comes back" timeout 90 "$LAB" start "$D"
check "and every node admits changes" wait_until 30 thawed_everywhere

# The coordinator's daemon dies while its hook runs: the new coordinator
# thaws (the dead one's EX goes with it), the hook dies with its daemon.
rm -f "$S/hook.started" "$S/hook.pid"
timeout 100 "$LAB" exec "$Q" -- "$CTL" snapshot --hook "$S/hangs" --name coordinator-dies --timeout 60 "$V" >"$S/cdie.out" 2>&1 &
cpid=$!
wait_until 30 test -e "$S/hook.started"
check "frozen before the coordinator dies" frozen_on "$Q"
k0=$(date +%s)
"$LAB" kill "$C" csvfs >/dev/null 2>&1
wait "$cpid"; rc=$?
check "the requester's csvctl ends non-zero when the coordinator dies (exit $rc)" test "$rc" -ne 0
check "the coordinator killed: the survivors thaw" wait_until 30 thawed_both "${P[0]}" "${P[1]}"
diag "thawed $(($(date +%s) - k0)) s after the coordinator's daemon died; new coordinator $(coordinator "$Q")"
check "the dead coordinator's hook died with it" wait_until 10 hook_gone
check "the coordinator killed: writes go on" writes_on "$Q" after-coordinator-death
check "the killed coordinator's daemon comes back" timeout 90 "$LAB" start "$C" csvfs
check "and every node admits changes" wait_until 30 thawed_everywhere

# ---- one GUID on two devices; a snapshot with a GUID of its own ----------------------
D1=$(losetup -f --show -r "$LUN"); D2=$(losetup -f --show -r "$SNAPIMG")
timeout 20 "$BIN/csvfs" -f -o ro,standalone "UUID=$GUID" "$S/m" >"$S/ambig.out" 2>&1; rc=$?
mountpoint -q "$S/m" && umount "$S/m"
check "UUID= refuses to choose between the LUN and its snapshot, naming both (exit $rc)" \
  sh -c "[ $rc -ne 0 ] && grep -q '$D1' '$S/ambig.out' && grep -q '$D2' '$S/ambig.out'"
losetup -d "$D1"; losetup -d "$D2"
# csvctl guid on the live LUN (MMP held by the lab's daemons): refused, unchanged.
timeout 60 "$CTL" guid "$LUN" >"$S/guid-live.out" 2>&1; rc=$?
check "csvctl guid refuses the live LUN, saying a node has it mounted (exit $rc)" \
  sh -c "[ $rc -eq 1 ] && grep -q 'a node has it mounted' '$S/guid-live.out'"
check "and the live LUN keeps its GUID" \
  sh -c "dumpe2fs -h '$LUN' 2>/dev/null | grep -q '^Filesystem UUID: *$GUID'"
# csvctl snapshot --new-guid: the hook gives its copy the GUID csvctl chose.
snap "$C" --hook "$HOOKS/reflink.sh" --name newguid1 --new-guid "$V"
NEWGUID=$(sed -n "s/^the snapshot's volume GUID: \([0-9a-f-]*\) (its own.*/\1/p" "$S/snap.out")
check "csvctl snapshot --new-guid succeeds and prints the snapshot's own GUID ($NEWGUID)" \
  sh -c "[ $SNAP_RC -eq 0 ] && [ -n '$NEWGUID' ] && [ '$NEWGUID' != '$GUID' ]"
[ "$SNAP_RC" -eq 0 ] || show
SNAPIMG=$XFS/newguid1.img
check "the snapshot image carries that GUID" \
  sh -c "dumpe2fs -h '$SNAPIMG' 2>/dev/null | grep -q '^Filesystem UUID: *$NEWGUID'"
check "its MMP block is clean and e2fsck -fn is clean on it" \
  sh -c "dumpe2fs -h '$SNAPIMG' 2>/dev/null | grep -q 'mmp_sequence: 0xff4d4d50' && e2fsck -fn '$SNAPIMG' >/dev/null 2>&1"
snap "$C" --hook "$S/ignores-guid" --name noguid1 --new-guid "$V"
check "a hook that does not set the new GUID fails the snapshot, saying so (exit $SNAP_RC)" \
  sh -c "[ $SNAP_RC -eq 1 ] && grep -q 'did not confirm the snapshot.s new GUID' '$S/snap.out'"
check "and every node admits changes after it" wait_until 10 thawed_everywhere
rm -f "$XFS/noguid1.img"
D1=$(losetup -f --show -r "$LUN"); D2=$(losetup -f --show -r "$SNAPIMG")
on_exit "losetup -d '$D1' '$D2' 2>/dev/null"
"$BIN/csvfs" -o ro,standalone "UUID=$NEWGUID" "$S/m" >"$S/byguid.out" 2>&1; rc=$?
check_eq "UUID=<the new GUID> finds the snapshot alone and mounts it beside the live LUN" 0 "$rc"
check "the VM disk is in it" test -s "$S/m/vm.qcow2"
mountpoint -q "$S/m" && umount "$S/m"
losetup -d "$D1" "$D2"
ROM=$S/rom; mkdir -p "$ROM"
on_exit "'$LAB' exec ${P[0]} -- umount '$ROM' 2>/dev/null"
on "${P[0]}" "$BIN/csvfs" -o ro,standalone "$SNAPIMG" "$ROM" >"$S/romount.out" 2>&1; rc=$?
check_eq "csvfs -o ro,standalone mounts the snapshot on a node while the live volume stays mounted" 0 "$rc"
check "the snapshot's VM disk reads back through it" \
  on "${P[0]}" qemu-io -f qcow2 -r -c "read -P 0x5a 0 64M" "$ROM/vm.qcow2"
check "the live volume still answers" writes_on "${P[0]}" beside-snapshot
on "${P[0]}" umount "$ROM"

# ---- the volume after it all ------------------------------------------------------------
"$LAB" down --save-logs "$S/logs" >/dev/null 2>&1
check "after every node unmounted, e2fsck -fn is clean on the live LUN" fsck_clean "$LUN"
finish
