#!/usr/bin/env bash
# Smoke: format, mount, basic namespace and data operations, unmount, then the
# independent oracles: e2fsck -fn and the kernel's ext4 (read-only) see the
# same tree and bytes.
source "$(dirname "$0")/../lib.sh"
d=$(scratch_dir)
img="$d/lun.img"; mnt="$d/mnt"; kmnt="$d/kmnt"
CSVFS_LOG="$d/csvfs.log"

guid=$("$BIN/mkfs.csvfs" -L smoke -s 2G "$img")
check "mkfs.csvfs prints a GUID" grep -Eqx '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' <<<"$guid"
check_eq "GUID is the ext4 UUID" "$guid" "$(blkid -o value -s UUID "$img")"
check "fresh volume is e2fsck-clean" fsck_clean "$img"
check "root directory is an htree" sh -c "debugfs -R 'htree /' '$img' 2>/dev/null | grep -q 'Root node dump'"

check "mount" mount_csvfs "$img" "$mnt"
echo hello > "$mnt/a.txt"
check_eq "read back a small file" hello "$(cat "$mnt/a.txt")"
mkdir -p "$mnt/dir/sub"
ln -s ../a.txt "$mnt/dir/link"
ln "$mnt/a.txt" "$mnt/dir/hard"
check_eq "hard link count" 2 "$(stat -c %h "$mnt/a.txt")"
check_eq "symlink target" ../a.txt "$(readlink "$mnt/dir/link")"
head -c 50M /dev/urandom > "$d/rand"
cp "$d/rand" "$mnt/dir/rand"
check "50 MiB file copies intact" cmp -s "$d/rand" "$mnt/dir/rand"
mv "$mnt/dir/rand" "$mnt/rand2"
check "rename keeps contents" cmp -s "$d/rand" "$mnt/rand2"
truncate -s 10G "$mnt/sparse"
printf 'tail' | dd of="$mnt/sparse" bs=1 seek=$((9*1024*1024*1024)) conv=notrunc status=none
check_eq "sparse file size" 10737418240 "$(stat -c %s "$mnt/sparse")"
check "sparse file uses little space" test "$(stat -c %b "$mnt/sparse")" -lt 64
status=$("$BIN/csvctl" status --json "$mnt")
check "csvctl status names the volume GUID" grep -q "\"guid\":\"$guid\"" <<<"$status"
check "csvctl status shows the journal on and I/O direct" grep -q '"journaled":true.*"io_state":"direct"' <<<"$status"
check "csvctl status (human) shows the coordinator" sh -c "'$BIN/csvctl' status '$mnt' | grep -q coordinator"
check_fails "csvctl status of a path with no volume fails" "$BIN/csvctl" status "$d"
(cd "$mnt" && find . -printf '%p %y %m %s\n' | sort > "$d/manifest.csvfs")
(cd "$mnt" && find . -type f ! -name sparse -exec sha256sum {} + | sort -k2 > "$d/sums.csvfs")
umount_csvfs "$mnt"
check "e2fsck -fn clean after use" fsck_clean "$img" "$d/fsck.log"
mkdir -p "$kmnt"
if mount -o ro,loop,noload "$img" "$kmnt"; then
  on_exit "umount '$kmnt'"
  (cd "$kmnt" && find . -printf '%p %y %m %s\n' | sort > "$d/manifest.kernel")
  (cd "$kmnt" && find . -type f ! -name sparse -exec sha256sum {} + | sort -k2 > "$d/sums.kernel")
  check "kernel ext4 sees the same tree" cmp -s "$d/manifest.csvfs" "$d/manifest.kernel"
  check "kernel ext4 reads the same bytes" cmp -s "$d/sums.csvfs" "$d/sums.kernel"
  umount "$kmnt"
else
  not_ok "kernel read-only mount of the image"
fi
finish
