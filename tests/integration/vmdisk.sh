#!/usr/bin/env bash
# vmdisk.sh — real VM-disk clients on a csvfs mount: qemu-img / qemu-io with
# cache=none (O_DIRECT) on qcow2 and sparse raw images, offsets past 4 GiB,
# reopen and re-verify, qemu-img check / convert / compare, fio with crc32c
# verify (libaio, O_DIRECT). Then unmount, e2fsck -fn, and the kernel oracle: a
# read-only kernel mount shows identical image digests, qemu-io and fio verify
# the data again through the kernel.
#
#   POSIX_TARGET=csvfs (default) | ext4 | fuse2fs   (see posix.sh)
source "$(dirname "$0")/../lib.sh"

TARGET=${POSIX_TARGET:-csvfs}
SCRATCH=$(scratch_dir)
on_exit "rm -rf '$SCRATCH'"   # scratch_dir's own on_exit ran in the $(...) subshell and is lost
IMG=$SCRATCH/lun.img
MNT=$SCRATCH/mnt
KMNT=$SCRATCH/kmnt
OPS=$TBIN/posix_ops
LOGDIR=$TOP/$BUILD/test-logs
mkdir -p "$LOGDIR" "$MNT" "$KMNT"
export CSVFS_LOG=$LOGDIR/vmdisk-daemon.log
: >"$CSVFS_LOG"
START=$(date +%s)
diag "target: $TARGET"

# ---------------------------------------------------------------- target plumbing
detach_img() {  # every loop device backed by our image (it lives in our scratch dir)
  local d i
  for d in $(losetup -l -n -O NAME -j "$1" 2>/dev/null); do losetup -d "$d"; done
  # the kernel may finish a detach asynchronously: wait (bounded) until it has
  for i in $(seq 1 50); do [ -z "$(losetup -j "$1" 2>/dev/null)" ] && break; sleep 0.1; done
}
umount_if() { mountpoint -q "$1" && umount "$1"; return 0; }
on_exit "detach_img '$IMG'"

t_mkfs() {  # IMG SIZE
  case $TARGET in
    csvfs) "$BIN/mkfs.csvfs" -s "$2" "$1" ;;
    *) truncate -s "$2" "$1" && mkfs.ext4 -q -F "$1" ;;
  esac
}
t_mount() {  # IMG MNT
  local opts="allow_other,default_permissions"
  case $TARGET in
    csvfs) mount_csvfs "$1" "$2" "$opts" ;;
    fuse2fs)
      fuse2fs "$1" "$2" -f -o "$opts" >>"$CSVFS_LOG" 2>&1 &
      CSVFS_PID=$!
      on_exit "umount_csvfs '$2'"
      wait_until 20 is_mounted "$2" ;;
    ext4)
      local dev
      dev=$(losetup -f --show "$1") || return 1
      on_exit "umount_if '$2'"
      mount -t ext4 "$dev" "$2" ;;
  esac
}
t_umount() {
  local mnt=$1 rc i
  if [ "$TARGET" = ext4 ]; then umount "$mnt" && detach_img "$IMG"; return; fi
  timeout 20 fusermount3 -u "$mnt" 2>/dev/null || timeout 20 umount "$mnt" 2>/dev/null || umount -l "$mnt"
  local t0=$SECONDS
  for i in $(seq 1 600); do kill -0 "$CSVFS_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$CSVFS_PID" 2>/dev/null; then
    not_ok "the daemon exits within 60 s of unmount (still running; killed)"
    kill -9 "$CSVFS_PID" 2>/dev/null
  else
    diag "the daemon exited $((SECONDS - t0)) s after unmount"
  fi
  wait "$CSVFS_PID"; rc=$?
  check_eq "the daemon exits with status 0 after unmount" 0 "$rc"
  CSVFS_PID=
}
k_mount_ro() {
  local dev
  dev=$(losetup -f --show -r "$1") || return 1
  on_exit "umount_if '$2'"
  mount -t ext4 -o ro,noload "$dev" "$2"
}
daemon_log_tail() { [ -s "$CSVFS_LOG" ] && tail -n 15 "$CSVFS_LOG" | sed 's/^/#   log: /'; return 0; }
alive() {
  if [ -n "${CSVFS_PID:-}" ] && ! kill -0 "$CSVFS_PID" 2>/dev/null; then
    not_ok "the daemon is still running after $1"; daemon_log_tail; finish; exit
  fi
  if ! timeout 20 stat "$MNT/." >/dev/null 2>&1; then
    not_ok "the mount still answers after $1"; daemon_log_tail; finish; exit
  fi
}

# run DESCRIPTION TIMEOUT CMD... — passes when CMD exits 0 in time; shows its output otherwise.
run() {
  local d=$1 limit=$2 rc; shift 2
  timeout "$limit" "$@" >"$SCRATCH/run.out" 2>&1; rc=$?
  if [ "$rc" -eq 0 ]; then ok "$d"; return 0; fi
  not_ok "$d (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after $limit s"))"
  tail -n 12 "$SCRATCH/run.out" | sed 's/^/#   /'
  return 1
}

# ---------------------------------------------------------------- the VM-disk workload
# (offset, length, pattern) writes, in order; the last overwrites the middle of
# the one that crosses 4 GiB.
WRITES=(
  "0 4M 0xab"
  "1073676288 256k 0x11"      # 1 GiB - 64 KiB: crosses 1 GiB
  "4292870144 4M 0x22"        # 4 GiB - 2 MiB: crosses 4 GiB
  "5368713216 1M 0x33"        # 5 GiB + 4 KiB
  "8585740288 4M 0x44"        # 8 GiB - 4 MiB: the end of the disk
  "4293918720 512k 0x55"      # 4 GiB - 1 MiB: overwrites part of 0x22
)
# What every byte should read as afterwards (never written: zeros).
READS=(
  "0 4M 0xab"
  "1073676288 256k 0x11"
  "4292870144 1M 0x22"
  "4293918720 512k 0x55"
  "4294443008 2560k 0x22"     # 4 GiB - 512 KiB .. 4 GiB + 2 MiB
  "5368713216 1M 0x33"
  "8585740288 4M 0x44"
  "4194304 1M 0"              # just after the first write
  "536870912 1M 0"            # 512 MiB
  "2147483648 1M 0"           # 2 GiB, never written
  "5368709120 4k 0"           # 5 GiB: the 4 KiB before 0x33
  "6442450944 1M 0"           # 6 GiB
)
qio_writes() { local w a=(); for w in "${WRITES[@]}"; do set -- $w; a+=(-c "write -P $3 $1 $2"); done; printf '%s\n' "${a[@]}"; }
qio_reads() { local r a=(); for r in "${READS[@]}"; do set -- $r; a+=(-c "read -P $3 $1 $2"); done; printf '%s\n' "${a[@]}"; }
NREADS=$(qio_reads | grep -c '^read')
mapfile -t WARGS < <(qio_writes)
mapfile -t RARGS < <(qio_reads)

# qemu_io DESCRIPTION WANT_OPS ARGS... — qemu-io must exit 0, report WANT_OPS
# completed operations and no failure.
qemu_io() {
  local d=$1 want=$2 rc n; shift 2
  timeout 120 qemu-io "$@" >"$SCRATCH/qio.out" 2>&1; rc=$?
  n=$(grep -cE '^(wrote|read) [0-9]+/[0-9]+ bytes' "$SCRATCH/qio.out")
  if [ "$rc" -eq 0 ] && [ "$n" -eq "$want" ] && ! grep -qiE 'fail|error|mismatch' "$SCRATCH/qio.out"; then
    ok "$d"
  else
    not_ok "$d (exit $rc, $n of $want operations done)"
    grep -iE 'fail|error|mismatch' "$SCRATCH/qio.out" | head -n 8 | sed 's/^/#   /'
  fi
}

# ---------------------------------------------------------------- format, mount
if ! t_mkfs "$IMG" 3G >"$SCRATCH/mkfs.out" 2>&1; then
  not_ok "format a 3 GiB volume"; sed 's/^/#   /' "$SCRATCH/mkfs.out"; finish; exit
fi
ok "format a 3 GiB volume"
if ! t_mount "$IMG" "$MNT"; then
  not_ok "mount"; daemon_log_tail; finish; exit
fi
ok "mount"
V=$MNT/vm
mkdir -p "$V"

# ---------------------------------------------------------------- qcow2 and sparse raw, cache=none
run "qemu-img create -f qcow2 8G" 60 qemu-img create -q -f qcow2 "$V/disk.qcow2" 8G
run "qemu-img create -f raw 8G" 60 qemu-img create -q -f raw "$V/disk.raw" 8G
check_eq "the raw image has the 8 GiB size" 8589934592 "$(stat -c %s "$V/disk.raw" 2>&1)"
# (qemu-img writes the first 4 KiB itself, for alignment probing)
check "the new raw image is sparse (< 1 MiB allocated)" test "$(stat -c %b "$V/disk.raw" 2>&1)" -lt 2048
check_eq "qemu-img info: the qcow2 virtual size is 8 GiB" 8589934592 \
  "$(timeout 60 qemu-img info --output=json "$V/disk.qcow2" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')"

for fmt in qcow2 raw; do
  f=$V/disk.$fmt
  qemu_io "$fmt: qemu-io -t none writes ${#WRITES[@]} patterns (incl. across 1 GiB, 4 GiB, and at 5 GiB and 8 GiB)" \
    $(( ${#WRITES[@]} + NREADS )) -t none -f "$fmt" "${WARGS[@]}" "${RARGS[@]}" "$f"
  qemu_io "$fmt: after close and reopen, qemu-io -t none reads every pattern and zeros elsewhere" \
    "$NREADS" -t none -f "$fmt" "${RARGS[@]}" "$f"
done
alive "qemu-io"
run "qemu-img check of the qcow2 image is clean" 120 qemu-img check "$V/disk.qcow2"
grep -q 'No errors were found' "$SCRATCH/run.out" || not_ok "qemu-img check says 'No errors were found'"
blocks=$(stat -c %b "$V/disk.raw")
check "the raw image holds its 13.25 MiB of data and stays sparse ($((blocks / 2048)) MiB allocated)" \
  test "$blocks" -ge $((13 * 2048 + 512)) -a "$blocks" -lt $((1024 * 2048))

# ---------------------------------------------------------------- convert and compare
run "qemu-img convert raw -> qcow2 (cache=none both sides)" 240 \
  qemu-img convert -t none -T none -f raw -O qcow2 "$V/disk.raw" "$V/conv.qcow2"
run "qemu-img convert qcow2 -> raw (cache=none both sides)" 240 \
  qemu-img convert -t none -T none -f qcow2 -O raw "$V/disk.qcow2" "$V/conv.raw"
run "qemu-img check of the converted qcow2 is clean" 120 qemu-img check "$V/conv.qcow2"
run "qemu-img compare: the raw image and its qcow2 conversion are identical" 240 \
  qemu-img compare -T none -f raw -F qcow2 "$V/disk.raw" "$V/conv.qcow2"
run "qemu-img compare: the qcow2 image and its raw conversion are identical" 240 \
  qemu-img compare -T none -f qcow2 -F raw "$V/disk.qcow2" "$V/conv.raw"
run "qemu-img compare: the qcow2 and raw images written alike are identical" 240 \
  qemu-img compare -T none -f qcow2 -F raw "$V/disk.qcow2" "$V/disk.raw"
qemu_io "the raw conversion reads back every pattern" "$NREADS" -t none -f raw "${RARGS[@]}" "$V/conv.raw"
# compare must be able to fail: one changed 4 KiB block at 5 GiB.
cp --sparse=always "$V/conv.qcow2" "$V/changed.qcow2"
timeout 60 qemu-io -t none -f qcow2 -c 'write -P 0x99 5368713216 4k' "$V/changed.qcow2" >/dev/null 2>&1
timeout 240 qemu-img compare -T none -f qcow2 -F qcow2 "$V/disk.qcow2" "$V/changed.qcow2" >"$SCRATCH/cmp.out" 2>&1
check_eq "qemu-img compare finds a changed block (exit 1)" 1 "$?"
grep -q 'Content mismatch at offset 5368713216' "$SCRATCH/cmp.out" ||
  not_ok "qemu-img compare names the changed offset ($(head -c 200 "$SCRATCH/cmp.out"))"
rm -f "$V/changed.qcow2"
alive "qemu-img convert/compare"

# ---------------------------------------------------------------- fio, O_DIRECT, crc32c verify
fio_run() {  # DESCRIPTION ARGS...
  local d=$1 rc; shift
  timeout 240 fio --output="$SCRATCH/fio.out" "$@" >"$SCRATCH/fio.err" 2>&1; rc=$?
  if [ "$rc" -eq 0 ] && grep -q 'err= 0' "$SCRATCH/fio.out" &&
     ! grep -qiE 'verify: bad|verify failed|bad magic|crc32c.*wanted' "$SCRATCH/fio.out" "$SCRATCH/fio.err"; then
    ok "$d"
  else
    not_ok "$d (exit $rc)"
    grep -hiE 'err=|verify|bad|fio:' "$SCRATCH/fio.out" "$SCRATCH/fio.err" | head -n 8 | sed 's/^/#   /'
  fi
  grep -hE '^ +(write|read):' "$SCRATCH/fio.out" | sed 's/^ */# fio: /'
}
FIO_RAND=(--name=rand --filename="$V/fio-rand.dat" --ioengine=libaio --direct=1 --bs=4k --size=256M --iodepth=32 --verify=crc32c --verify_state_save=0)
FIO_SEQ=(--name=seq --filename="$V/fio-seq.dat" --ioengine=libaio --direct=1 --bs=1M --size=256M --iodepth=8 --verify=crc32c --verify_state_save=0)
fio_run "fio randwrite 4k x 256 MiB, iodepth 32, libaio, O_DIRECT, crc32c verify" "${FIO_RAND[@]}" --rw=randwrite --verify_fatal=1
fio_run "fio sequential write 1M x 256 MiB, iodepth 8, libaio, O_DIRECT, crc32c verify" "${FIO_SEQ[@]}" --rw=write --verify_fatal=1
fio_run "fio re-reads and verifies the random-write file after its job closed it" "${FIO_RAND[@]}" --rw=read --readonly
alive "fio"

# ---------------------------------------------------------------- digests on the mount, then the oracles
IMAGES=(disk.qcow2 conv.qcow2 disk.raw conv.raw fio-rand.dat fio-seq.dat)
digests() {  # ROOT OUT — sha256sum of the small files, SHA-256 tree digest of all
  ( cd "$1/vm" && timeout 120 sha256sum disk.qcow2 conv.qcow2 fio-rand.dat fio-seq.dat &&
    timeout 300 "$OPS" treesum "${IMAGES[@]}" ) >"$2" 2>&1
}
t0=$(date +%s)
digests "$MNT" "$SCRATCH/d.mount"
diag "digests on the mount took $(( $(date +%s) - t0 )) s"
# SEEK_DATA/SEEK_HOLE must not hide data: the tree digest computed by reading
# everything equals the one that skips what SEEK_DATA calls holes.
( cd "$V" && timeout 120 "$OPS" -n treesum disk.qcow2 conv.qcow2 fio-rand.dat ) >"$SCRATCH/d.noseek" 2>&1
check_eq "digests that skip SEEK_HOLE ranges equal digests that read everything" \
  "$(cat "$SCRATCH/d.noseek")" "$(grep -E ' (disk.qcow2|conv.qcow2|fio-rand.dat)$' "$SCRATCH/d.mount" | grep -v '  ')"
t_umount "$MNT"
if fsck_clean "$IMG" "$SCRATCH/fsck.out"; then ok "e2fsck -fn is clean after the VM-disk workload"
else not_ok "e2fsck -fn is clean after the VM-disk workload"; grep -vE '^(Pass|e2fsck)|could be (shorter|narrower)|Optimize\? no|^$' "$SCRATCH/fsck.out" | head -n 20 | sed 's/^/#   /'; fi

if k_mount_ro "$IMG" "$KMNT"; then
  ok "the kernel mounts the volume read-only (ro,noload)"
  digests "$KMNT" "$SCRATCH/d.kernel"
  if diff -u "$SCRATCH/d.mount" "$SCRATCH/d.kernel" >"$SCRATCH/d.diff"; then
    ok "the kernel sees identical sha256 / tree digests of all ${#IMAGES[@]} images"
  else
    not_ok "the kernel sees identical sha256 / tree digests of all ${#IMAGES[@]} images"
    sed 's/^/#   /' "$SCRATCH/d.diff" | head -n 30
  fi
  K=$KMNT/vm
  qemu_io "kernel view: qemu-io reads every pattern of the qcow2 image" "$NREADS" -r -f qcow2 "${RARGS[@]}" "$K/disk.qcow2"
  qemu_io "kernel view: qemu-io reads every pattern of the raw image" "$NREADS" -r -f raw "${RARGS[@]}" "$K/disk.raw"
  run "kernel view: qemu-img check of the qcow2 image is clean" 120 qemu-img check "$K/disk.qcow2"
  FIO_RAND[1]=--filename=$K/fio-rand.dat
  FIO_SEQ[1]=--filename=$K/fio-seq.dat
  fio_run "kernel view: fio verifies every crc32c block of the random-write file" "${FIO_RAND[@]}" --rw=read --readonly
  fio_run "kernel view: fio verifies every crc32c block of the sequential file" "${FIO_SEQ[@]}" --rw=read --readonly
  umount "$KMNT"; detach_img "$IMG"
else
  not_ok "the kernel mounts the volume read-only (ro,noload)"
fi
# A sanitizer build of the daemon must have reported nothing.
if [ "$TARGET" = csvfs ] && ldd "$BIN/csvfs" 2>/dev/null | grep -q libasan; then
  san=$(grep -m1 -E 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$CSVFS_LOG")
  check_eq "no sanitizer report in the daemon's log" "" "$san"
fi
[ "$TEST_FAILS" -gt 0 ] && daemon_log_tail
diag "vmdisk.sh on $TARGET: $(( $(date +%s) - START )) s"
finish
