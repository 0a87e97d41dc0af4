#!/usr/bin/env bash
# make demo: format a LUN image, mount it at /ClusterStorage/Volume1, write a
# qcow2 VM disk with qemu-io (O_DIRECT, as QEMU's cache=none does), verify it,
# and show the volume. Leaves the volume mounted for you to use.
set -euo pipefail
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/$BUILD/bin"
dir=${CSVFS_DEMO_DIR:-/var/tmp/csvfs-demo}
lun="$dir/lun.img"
mnt=/ClusterStorage/Volume1

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (FUSE mount, allow_other)" >&2; exit 1; }
mkdir -p "$dir" "$mnt"
if grep -q " $mnt fuse.csvfs " /proc/self/mounts; then
  echo "demo: unmounting the previous demo volume at $mnt"
  fusermount3 -u "$mnt"
  for _ in $(seq 1 50); do grep -q " $mnt " /proc/self/mounts || break; sleep 0.1; done
fi
rm -f "$lun"
echo "== mkfs.csvfs -L Volume1 -s 8G $lun"
guid=$("$bin/mkfs.csvfs" -L Volume1 -s 8G "$lun")
echo "volume GUID: $guid"
echo "== csvfs -o standalone,allow_other $lun $mnt"
"$bin/csvfs" -o standalone,allow_other "$lun" "$mnt" 2>>"$dir/csvfs.log"
for _ in $(seq 1 100); do grep -q " $mnt fuse.csvfs " /proc/self/mounts && break; sleep 0.1; done
echo "== qemu-img create -f qcow2 $mnt/vm1.qcow2 16G"
qemu-img create -q -f qcow2 "$mnt/vm1.qcow2" 16G
echo "== qemu-io -t none: write patterns 0xab @0 (4M) and 0xcd @5G (1M)"
qemu-io -t none -f qcow2 -c 'write -P 0xab 0 4M' -c 'write -P 0xcd 5G 1M' "$mnt/vm1.qcow2" | grep -v '^ops'
echo "== qemu-io -t none: read back and verify"
qemu-io -t none -f qcow2 -c 'read -P 0xab 0 4M' -c 'read -P 0xcd 5G 1M' -c 'read -P 0 8M 1M' "$mnt/vm1.qcow2" | grep -v '^ops'
echo "== qemu-img check"
qemu-img check "$mnt/vm1.qcow2"
echo "== the volume"
df -h "$mnt"
ls -la "$mnt"
echo "LUN $lun: UUID=$(blkid -o value -s UUID "$lun") LABEL=$(blkid -o value -s LABEL "$lun")"
echo
echo "The volume stays mounted at $mnt; 'fusermount3 -u $mnt' unmounts it."
