#!/usr/bin/env bash
# csvctl maintenance on|off and csvctl fsck (docs/volumes.md) on a 3-node
# csvfs-lab. Real daemons, real corosync, real mounts. Covers: fsck refused
# while the volume is in use; maintenance refused while a file is open on
# another node, naming that node; maintenance on from a participant, every
# node refusing requests (EBUSY); fsck (e2fsck -f -y) in maintenance;
# maintenance off from another participant, a coordinator again, the VM disk
# intact; after every daemon is killed, fsck refused while one still runs,
# then clearing the MMP claim the crashed coordinator left. Oracles:
# qemu-img check and qemu-io's pattern read of the VM disk, sha256, e2fsck -fn.
. "$(dirname "$0")/../lib.sh"

lab_test_begin maintenance maint qemu-img qemu-io sha256sum
V=/ClusterStorage/Volume1

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
json_of() { on "$1" "$CTL" status --json "$V" 2>/dev/null; }
coordinator() { json_of "$1" | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p'; }
in_maintenance() { json_of "$1" | grep -q '"maintenance":true'; }
all_in_maintenance() { in_maintenance 1 && in_maintenance 2 && in_maintenance 3; }
all_out_with_coordinator() {
  local k
  for k in 1 2 3; do json_of "$k" | grep -q '"maintenance":false' && [ -n "$(coordinator "$k")" ] || return 1; done
}

"$LAB" up -n 3 --lun "$S/lun.img" --size 1G >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, the volume mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
GUID=$(blkid -p -s UUID -o value "$S/lun.img")
wait_until 30 sh -c "[ -n \"\$('$LAB' exec 1 -- '$CTL' status --json '$V' 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]\\+\\)\".*/\\1/p')\" ]"
C=$(coordinator 1); C=${C#node}
P=(); for k in 1 2 3; do [ "$k" = "$C" ] || P+=("$k"); done
diag "coordinator node$C, participants node${P[0]} node${P[1]}"

# ---- a VM disk ---------------------------------------------------------------------
on "${P[0]}" qemu-img create -q -f qcow2 "$V/vm.qcow2" 64M &&
  on "${P[0]}" qemu-io -f qcow2 -c "write -P 0xab 0 8M" -c "write -P 0x5c 16M 4M" "$V/vm.qcow2" >/dev/null
check_eq "a qcow2 VM disk written on node${P[0]}" 0 "$?"
SUM=$(on "${P[0]}" sha256sum "$V/vm.qcow2" | cut -d' ' -f1)

# ---- fsck refused while the volume is in use -----------------------------------------
on "$C" "$CTL" fsck "UUID=$GUID" >"$S/fsck-busy.out" 2>&1; rc=$?
check "csvctl fsck is refused while the volume is in use (exit $rc)" \
  sh -c "[ $rc != 0 ] && grep -q 'is in use' '$S/fsck-busy.out'"

# ---- maintenance refused with a file open on another node ---------------------------
on "${P[1]}" sh -c "exec 3<'$V/vm.qcow2'; echo open >'$S/held'; sleep 8" &
holder=$!
wait_until 10 test -f "$S/held"
on "${P[0]}" "$CTL" maintenance on "$V" >"$S/maint-busy.out" 2>&1; rc=$?
check "maintenance on is refused while node${P[1]} has the VM disk open, naming it (exit $rc)" \
  sh -c "[ $rc != 0 ] && grep -q 'open file(s), so maintenance is refused: node${P[1]} inode' '$S/maint-busy.out'"
check "the refused request left the volume in use" sh -c "! '$LAB' exec ${P[1]} -- '$CTL' status --json '$V' | grep -q '\"maintenance\":true'"
wait "$holder"

# ---- maintenance on, from a participant ----------------------------------------------
on "${P[0]}" "$CTL" maintenance on "$V" >"$S/maint-on.out" 2>&1; rc=$?
check_eq "maintenance on (asked on participant node${P[0]})" 0 "$rc"
check "every node sees the volume in maintenance" wait_until 10 all_in_maintenance
check "nobody coordinates during maintenance" sh -c "[ -z \"\$('$LAB' exec $C -- '$CTL' status --json '$V' | sed -n 's/.*\"coordinator\":\"\\([^\"]*\\)\".*/\\1/p')\" ]"
on "${P[1]}" ls "$V" >"$S/ls.out" 2>&1
check "requests fail with EBUSY on a node in maintenance" grep -q "Device or resource busy" "$S/ls.out"
check_fails "a write fails in maintenance" on "$C" sh -c "echo x >'$V/new'"
check "the MMP block is released (the kernel's view: e2fsck -fn passes)" fsck_clean "$S/lun.img" "$S/fsck-maint-n.out"

# ---- fsck in maintenance --------------------------------------------------------------
on "$C" "$CTL" fsck "UUID=$GUID" >"$S/fsck.out" 2>&1; rc=$?
sed 's/^/# /' "$S/fsck.out" | tail -n 3
check_eq "csvctl fsck UUID=GUID runs e2fsck -f -y in maintenance and finds it clean" 0 "$rc"

# ---- maintenance off, from the other participant -------------------------------------
on "${P[1]}" "$CTL" maintenance off "$V" >"$S/maint-off.out" 2>&1; rc=$?
check_eq "maintenance off (asked on node${P[1]})" 0 "$rc"
check "every node is out of maintenance with a coordinator" wait_until 30 all_out_with_coordinator
check "qemu-img check: the VM disk is intact (node${P[1]})" on "${P[1]}" qemu-img check -q "$V/vm.qcow2"
check "qemu-io reads the VM disk's patterns back (node$C)" \
  on "$C" qemu-io -f qcow2 -c "read -P 0xab 0 8M" -c "read -P 0x5c 16M 4M" "$V/vm.qcow2"
check_eq "the VM disk's sha256 is unchanged" "$SUM" "$(on "${P[1]}" sha256sum "$V/vm.qcow2" | cut -d' ' -f1)"
check "the volume takes writes again" on "${P[0]}" sh -c "echo back >'$V/after' && sync '$V/after'"
on 1 "$CTL" maintenance off "$V" >/dev/null 2>&1; rc=$?
check "maintenance off when not in maintenance says so (exit $rc)" sh -c "[ $rc = 1 ]"

# ---- bad input ---------------------------------------------------------------------------
on 1 "$CTL" maintenance sideways "$V" >/dev/null 2>&1; rc=$?
check_eq "csvctl maintenance with neither on nor off is a usage error" 2 "$rc"
check_fails "csvctl maintenance on a path with no volume fails" on 1 "$CTL" maintenance on /nonexistent
on 1 "$CTL" fsck >/dev/null 2>&1; rc=$?
check_eq "csvctl fsck with no volume is a usage error" 2 "$rc"
check_fails "csvctl fsck of a GUID that no LUN holds fails" \
  on 1 "$CTL" fsck "UUID=00000000-0000-0000-0000-000000000000"

# ---- a crashed coordinator's MMP claim -------------------------------------------------
on "${P[0]}" sh -c "dd if=/dev/urandom of='$V/crash' bs=1M count=4 conv=fsync status=none"
C=$(coordinator 1); C=${C#node}
for k in 1 2 3; do [ "$k" = "$C" ] || last=$k; done
for k in 1 2 3; do [ "$k" = "$last" ] || "$LAB" kill "$k" csvfs >/dev/null 2>&1; done
# The coordinator's takeover by $last (if it happens) holds MMP again: wait
# until $last settles, then the claim it holds is a live one.
on "$C" "$CTL" fsck "$S/lun.img" >"$S/fsck-live.out" 2>&1; rc=$?
check "fsck is refused while node$last's daemon still runs (exit $rc)" \
  sh -c "[ $rc != 0 ] && grep -q 'csvfs daemons run on node id(s) $last' '$S/fsck-live.out'"
"$LAB" kill "$last" csvfs >/dev/null 2>&1
check "a crashed daemon left the MMP block claimed (e2fsck -fn refuses)" sh -c "! e2fsck -fn '$S/lun.img' >/dev/null 2>&1"
on "$C" "$CTL" fsck "$S/lun.img" >"$S/fsck-crash.out" 2>&1; rc=$?
sed 's/^/# /' "$S/fsck-crash.out" | grep -v '^# Pass' | tail -n 4
check "csvctl fsck clears the claim once no daemon runs on any node, and e2fsck succeeds (exit $rc)" \
  sh -c "[ $rc -le 1 ] && grep -q 'cleared the MMP claim left by the csvfs daemon on node' '$S/fsck-crash.out'"
check "e2fsck -fn: clean after the repair" fsck_clean "$S/lun.img" "$S/fsck-after.out"
"$LAB" down >"$S/down.out" 2>&1
check_eq "lab down" 0 "$?"
finish
