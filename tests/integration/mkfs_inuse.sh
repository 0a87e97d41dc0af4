#!/usr/bin/env bash
# mkfs_inuse.sh — mkfs.csvfs never formats a LUN in use, not even with -f
# (docs/hostile-input.md): a LUN served by a standalone csvfs daemon, by a
# 1-node and a 3-node csvfs-lab (MMP heartbeat), or mounted by the kernel
# through a loop device; named directly, through the loop device or through a
# symlink. Each refusal names the holder; afterwards the volume is intact
# (e2fsck -fn clean, same GUID, same file checksums — read back by debugfs,
# not by csvfs).
source "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-hstinuse}
unset CSVFS_BIN CSVFS_LAB_TOKEN
S=$(scratch_dir)
on_exit "rm -rf '$S'"
LOGDIR=$TOP/$BUILD/test-logs
mkdir -p "$LOGDIR"
export CSVFS_LOG=$LOGDIR/mkfs_inuse-daemon.log
: >"$CSVFS_LOG"
IMG=$S/lun.img
LINK=$S/lun.link
ln -s "$IMG" "$LINK"

# try_mkfs ARGS... — the formatter, bounded; RC and OUT.
try_mkfs() { timeout 120 "$BIN/mkfs.csvfs" "$@" </dev/null >"$S/mkfs.out" 2>&1; RC=$?; OUT=$(tr '\n' '|' <"$S/mkfs.out"); }
# refused WHAT PATTERN — the last mkfs exited 1 and its message matches PATTERN.
refused() {
  if [ "$RC" -eq 1 ] && grep -qE -- "$2" "$S/mkfs.out"; then ok "$1: refused, naming the holder ($OUT)"
  else not_ok "$1: refused with exit 1 and a message matching '$2' (exit $RC: $OUT)"; fi
}
uuid_of() { blkid -p -o value -s UUID "$1" 2>/dev/null; }
# sums IMAGE — checksum of every test file, read with debugfs (no csvfs involved).
sums() { local f; for f in a.bin b.bin d/c.txt; do echo "$f $(debugfs -R "cat /$f" "$1" 2>/dev/null | sha256sum | cut -c1-16)"; done; }
# intact WHAT — the volume still has its GUID, its files and is e2fsck-clean.
intact() {
  check_eq "$1: the GUID is unchanged" "$GUID" "$(uuid_of "$IMG")"
  check_eq "$1: every file reads back the same (debugfs)" "$SUMS" "$(sums "$IMG")"
  if fsck_clean "$IMG" "$S/fsck.out"; then ok "$1: e2fsck -fn is clean"
  else not_ok "$1: e2fsck -fn is clean"; head -n 20 "$S/fsck.out" | sed 's/^/#   /'; fi
}

# ---- a populated volume, written through csvfs
try_mkfs -s 64M "$IMG"
[ "$RC" -eq 0 ] || { not_ok "format a 64 MiB volume ($OUT)"; finish; exit; }
GUID=$(uuid_of "$IMG")
mount_csvfs "$IMG" "$S/mnt" || { not_ok "mount the volume standalone"; finish; exit; }
head -c 3000000 /dev/urandom >"$S/mnt/a.bin" && head -c 70000 /dev/urandom >"$S/mnt/b.bin" &&
  mkdir "$S/mnt/d" && echo "hello from before the hostile mkfs" >"$S/mnt/d/c.txt" && sync "$S/mnt/a.bin"
check "populate the volume through csvfs" test -s "$S/mnt/d/c.txt"
EXPECT=$(cd "$S/mnt" && for f in a.bin b.bin d/c.txt; do echo "$f $(sha256sum <"$f" | cut -c1-16)"; done)

# ---- a standalone csvfs daemon holds the MMP block
try_mkfs -f "$IMG";  refused "mkfs -f on a LUN a standalone csvfs daemon serves" "in use: csvfs on $(hostname)"
try_mkfs -f "$LINK"; refused "mkfs -f through a symlink to that LUN" "in use: csvfs on"
try_mkfs "$IMG";     refused "mkfs without -f on that LUN (in use comes first)" "in use: csvfs on"
check "the daemon still serves the volume after the refusals" sh -c "[ \"\$(cat '$S/mnt/d/c.txt')\" = 'hello from before the hostile mkfs' ]"
umount_csvfs "$S/mnt"
SUMS=$(sums "$IMG")
check_eq "debugfs reads what csvfs wrote" "$EXPECT" "$SUMS"
intact "after the standalone daemon"

# ---- the kernel mounts it through a loop device
LOOP=$(losetup -f --show "$IMG" 2>"$S/losetup.err")
if [ -n "$LOOP" ]; then
  on_exit "losetup -d '$LOOP'"
  mkdir -p "$S/kmnt"
  if mount -t ext4 -o ro,noload "$LOOP" "$S/kmnt" 2>"$S/mount.err"; then
    on_exit "umount '$S/kmnt'"
    try_mkfs -f "$IMG";  refused "mkfs -f on the image file the kernel mounted through $LOOP" "mounted on $S/kmnt through $LOOP"
    try_mkfs -f "$LINK"; refused "mkfs -f through a symlink to that image file" "mounted on $S/kmnt through $LOOP"
    try_mkfs -f "$LOOP"; refused "mkfs -f on the mounted loop device itself" "mounted on $S/kmnt"
    ln -s "$LOOP" "$S/loop.link"
    try_mkfs -f "$S/loop.link"; refused "mkfs -f through a symlink to the loop device" "mounted on $S/kmnt"
    umount "$S/kmnt"
  else
    not_ok "setup: the kernel mounts the volume through $LOOP ($(cat "$S/mount.err"))"
  fi
  # a loop device that nobody mounted or claims is no holder: not refused for that
  try_mkfs "$IMG"
  if [ "$RC" -eq 1 ] && grep -q "already holds a ext4" "$S/mkfs.out"; then ok "an idle loop device over the image is no holder (refused only as an existing filesystem)"
  else not_ok "an idle loop device over the image is no holder (exit $RC: $OUT)"; fi
  losetup -d "$LOOP"
else
  not_ok "setup: losetup ($(cat "$S/losetup.err"))"
fi
intact "after the kernel mount"

# ---- labs: a 1-node and a 3-node cluster serve it (MMP held by the coordinator)
[ -x "$LAB" ] || { not_ok "$LAB missing"; finish; exit; }
on_exit "'$LAB' down --save-logs '$S/lablogs' >/dev/null 2>&1; mkdir -p '$LOGDIR/mkfs_inuse'; cp -a '$S/lablogs/.' '$LOGDIR/mkfs_inuse/' 2>/dev/null"
for n in 1 3; do
  "$LAB" down >/dev/null 2>&1
  if ! "$LAB" up -n "$n" --lun "$IMG" >"$S/up.out" 2>&1; then
    not_ok "lab up: $n node(s) serving the volume"; sed 's/^/# /' "$S/up.out" | tail -n 20; continue
  fi
  ok "lab up: $n node(s) serving the volume"
  try_mkfs -f "$IMG";  refused "mkfs -f on a LUN a $n-node lab serves" "in use: csvfs on node[0-9]"
  try_mkfs -f "$LINK"; refused "mkfs -f through a symlink to the LUN a $n-node lab serves" "in use: csvfs on node[0-9]"
  check "the lab still serves the files after the refusals" \
    sh -c "timeout 60 '$LAB' exec 1 -- cat /ClusterStorage/Volume1/d/c.txt | grep -q 'hello from before'"
  "$LAB" down >"$S/down.out" 2>&1 || not_ok "lab down ($(tail -n 3 "$S/down.out"))"
  intact "after the $n-node lab"
done

# ---- a holder that died: refused while its heartbeat is fresh; once it is
# older than two intervals mkfs watches it for 2 intervals + 1 s, sees it
# still, and formats (-f: the volume holds a filesystem)
mount_csvfs "$IMG" "$S/mnt" || not_ok "mount the volume standalone again"
kill -9 "$CSVFS_PID"; wait "$CSVFS_PID" 2>/dev/null; CSVFS_PID=
fusermount3 -u "$S/mnt" 2>/dev/null || umount -l "$S/mnt"
try_mkfs -f "$IMG"; refused "mkfs -f just after the daemon was killed (heartbeat still fresh)" "in use: csvfs on"
check_eq "that refusal left the GUID alone" "$GUID" "$(uuid_of "$IMG")"
sleep 11
try_mkfs -f "$IMG"
if [ "$RC" -eq 0 ] && grep -q "waiting 11 s for its heartbeat" "$S/mkfs.out"; then ok "mkfs -f formats once the dead holder's heartbeat stood still for 11 s"
else not_ok "mkfs -f formats once the dead holder's heartbeat stood still for 11 s (exit $RC: $OUT)"; fi
NEW=$(uuid_of "$IMG")
check "the volume has a new GUID ($NEW)" test -n "$NEW" -a "$NEW" != "$GUID"
check "the new volume is e2fsck-clean" fsck_clean "$IMG"

finish
