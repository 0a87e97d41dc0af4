#!/usr/bin/env bash
# Multi-mount protection (design.md §2, docs/architecture.md): while csvfs
# serves a volume, the ext4 MMP block is held in the fsck state with a
# heartbeat, so the kernel's ext4 refuses a read-write mount, e2fsck refuses
# even to look (-n), and a second csvfs refuses ("in use by csvfs"). After a
# clean unmount the block is released: the kernel mounts it and e2fsck is
# clean.
# In a mount namespace of its own: a namespace that another process creates
# meanwhile (unshare -m, e.g. a lab cluster's corosync) would otherwise get a
# copy of our FUSE mounts, which keeps each daemon alive after our unmount.
[ -n "${CSVFS_TEST_OWN_NS:-}" ] ||
	exec env CSVFS_TEST_OWN_NS=1 unshare -m --propagation private -- bash "$0" "$@"
source "$(dirname "$0")/../lib.sh"

d=$(scratch_dir)
img=$d/lun.img; mnt=$d/mnt; kmnt=$d/kmnt; mnt2=$d/mnt2
mkdir -p "$mnt" "$kmnt" "$mnt2"
PID2=

teardown() {
	[ -n "$PID2" ] && kill -9 "$PID2" 2>/dev/null
	local m l
	for m in "$kmnt" "$mnt2"; do grep -q " $m " /proc/self/mounts && umount -l "$m"; done
	for l in $(losetup -n -O NAME -j "$img" 2>/dev/null); do losetup -d "$l"; done
	return 0
}
on_exit teardown

# kernel_mount OPTS — mount -o loop,OPTS of the image on kmnt; unmounts again
# at once if it worked (the caller only wants to know whether it could).
kernel_mount() {
	if mount -t ext4 -o "loop,$1" "$img" "$kmnt" 2>"$d/kmount.err"; then
		umount "$kmnt"
		return 0
	fi
	local l
	for l in $(losetup -n -O NAME -j "$img" 2>/dev/null); do losetup -d "$l"; done
	return 1
}

mmp_seq() { dumpe2fs -h "$img" 2>/dev/null | sed -n 's/^ *mmp_sequence: *//p'; }

"$BIN/mkfs.csvfs" -L mmp -s 256M "$img" >/dev/null || { not_ok "mkfs.csvfs"; exit 1; }
mount_csvfs "$img" "$mnt" || { not_ok "mount"; exit 1; }
echo hello >"$mnt/f"

check_eq "while mounted, the MMP block is in the fsck state" 0xe24d4d50 "$(mmp_seq)"
dumpe2fs -h "$img" 2>/dev/null | grep -q 'mmp_device_name: *csvfs' &&
	ok "the MMP block names csvfs as the holder" || not_ok "the MMP block names csvfs as the holder"

# (not through check_fails: its "local d" would hide ours). The kernel says
# why in its log: "ext4_multi_mount_protect: fsck is running on the filesystem".
mmp_msgs() { dmesg 2>/dev/null | grep -c 'ext4_multi_mount_protect.*fsck is running'; }
before=$(mmp_msgs)
if kernel_mount rw; then
	not_ok "a kernel mount -o loop of the mounted volume fails"
elif [ "$(mmp_msgs)" -gt "$before" ]; then
	ok "a kernel mount -o loop of the mounted volume fails: the kernel sees MMP held (fsck is running)"
elif ! dmesg >/dev/null 2>&1; then
	ok "a kernel mount -o loop of the mounted volume fails (kernel log unreadable: reason not checked)"
else
	not_ok "a kernel mount -o loop of the mounted volume fails because of MMP"
	sed 's/^/# /' "$d/kmount.err"; dmesg | tail -3 | sed 's/^/# kernel: /'
fi
e2fsck -n "$img" >"$d/fsck-n.out" 2>&1; rc=$?
if [ "$rc" -ge 8 ] && grep -q 'MMP' "$d/fsck-n.out"; then
	ok "e2fsck -n refuses the mounted volume (exit $rc, MMP)"
else
	not_ok "e2fsck -n refuses the mounted volume (exit $rc)"; head -5 "$d/fsck-n.out" | sed 's/^/# /'
fi
e2fsck -fn "$img" >"$d/fsck-fn.out" 2>&1; rc=$?
[ "$rc" -ge 8 ] && ok "e2fsck -fn refuses too (exit $rc)" || not_ok "e2fsck -fn refuses too (exit $rc)"

# A second daemon sees a live heartbeat (it waits 2 intervals + 1 s) and refuses.
"$BIN/csvfs" -f -o standalone "$img" "$mnt2" >"$d/second.log" 2>&1 &
PID2=$!
for _ in $(seq 1 300); do kill -0 "$PID2" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID2" 2>/dev/null; then
	not_ok "a second csvfs on the same LUN gives up within 30 s"
	kill -9 "$PID2"; wait "$PID2" 2>/dev/null
else
	wait "$PID2"; rc=$?
	if [ "$rc" -ne 0 ] && ! is_mounted "$mnt2" && grep -q 'in use by csvfs' "$d/second.log"; then
		ok "a second csvfs on the same LUN refuses: $(grep -o 'in use by csvfs on [^ ]*' "$d/second.log" | head -1)"
	else
		not_ok "a second csvfs on the same LUN refuses (exit $rc)"; tail -3 "$d/second.log" | sed 's/^/# /'
	fi
fi
PID2=

check_eq "the first mount still serves the volume" hello "$(cat "$mnt/f" 2>&1)"

umount_csvfs "$mnt"
check_eq "a clean unmount releases the MMP block (clean)" 0xff4d4d50 "$(mmp_seq)"
if kernel_mount ro; then
	ok "after the unmount the kernel mounts the volume (ro, loop)"
else
	not_ok "after the unmount the kernel mounts the volume (ro, loop)"; sed 's/^/# /' "$d/kmount.err"
	dmesg 2>/dev/null | tail -3 | sed 's/^/# kernel: /'
fi
check "e2fsck -fn is clean after the unmount" fsck_clean "$img"
finish
