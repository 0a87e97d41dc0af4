#!/usr/bin/env bash
# badinput.sh — bad input gets a clear message that names the object and a
# non-zero exit, never a crash (no signal exit, no sanitizer report), for the
# daemon (csvfs) and the formatter (mkfs.csvfs); and a full volume: ENOSPC,
# earlier files intact, delete and write again, e2fsck clean, kernel read-back.
#
#   POSIX_TARGET=csvfs (default)
#   POSIX_TARGET=fuse2fs | ext4   references: fuse2fs for the daemon cases and
#                                 mkfs.ext4 (wrapped to print the UUID) for mkfs
source "$(dirname "$0")/../lib.sh"

TARGET=${POSIX_TARGET:-csvfs}
SCRATCH=$(scratch_dir)
on_exit "rm -rf '$SCRATCH'"   # scratch_dir's own on_exit ran in the $(...) subshell and is lost
MNT=$SCRATCH/mnt
KMNT=$SCRATCH/kmnt
LOGDIR=$TOP/$BUILD/test-logs
mkdir -p "$LOGDIR" "$MNT" "$KMNT"
export CSVFS_LOG=$LOGDIR/badinput-daemon.log
: >"$CSVFS_LOG"
START=$(date +%s)
diag "target: $TARGET"
SAN_RE='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|stack-buffer|heap-buffer'

detach_img() {
  local d i
  for d in $(losetup -l -n -O NAME -j "$1" 2>/dev/null); do losetup -d "$d"; done
  for i in $(seq 1 50); do [ -z "$(losetup -j "$1" 2>/dev/null)" ] && break; sleep 0.1; done
}
umount_if() { mountpoint -q "$1" && umount "$1"; return 0; }

# ---------------------------------------------------------------- the programs
mkfs_t() {  # mkfs.csvfs's CLI: [-L LABEL] [-U GUID] [-s SIZE] [-f] LUN
  if [ "$TARGET" = csvfs ]; then "$BIN/mkfs.csvfs" "$@" </dev/null; return; fi
  local OPTIND o label= guid= size= force=()
  while getopts 'L:U:s:f' o; do
    case $o in L) label=$OPTARG ;; U) guid=$OPTARG ;; s) size=$OPTARG ;; f) force=(-F) ;; *) return 2 ;; esac
  done
  shift $((OPTIND - 1))
  mkfs.ext4 -q "${force[@]}" ${label:+-L "$label"} ${guid:+-U "$guid"} "$1" ${size:+"$size"} </dev/null >&2 &&
    blkid -p -o value -s UUID "$1"
}
daemon_cmd() {  # LUN MNT [OPTS] — the command line that mounts
  local o="allow_other,default_permissions${3:+,$3}"
  if [ "$TARGET" = csvfs ]; then echo "$BIN/csvfs" -f -o "standalone,$o" "$1" "$2"
  else echo fuse2fs "$1" "$2" -f -o "$o"; fi
}

# try_daemon LUN MNT [OPTS] — runs the daemon (bounded); sets RC, MOUNTED and OUT.
# A daemon that mounts is unmounted again (that is a failure for bad input).
try_daemon() {
  local cmd i pid
  read -r -a cmd <<<"$(daemon_cmd "$@")"
  OUT=$SCRATCH/daemon.out MOUNTED=0 HUNG=0
  is_mounted "$2" && { timeout 20 fusermount3 -u "$2" || umount -l "$2"; }
  "${cmd[@]}" >"$OUT" 2>&1 </dev/null &
  pid=$!
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    if is_mounted "$2"; then MOUNTED=1; break; fi
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    is_mounted "$2" && { MOUNTED=1; timeout 20 fusermount3 -u "$2" || umount -l "$2"; }
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { [ "$MOUNTED" = 1 ] || HUNG=1; kill -9 "$pid"; }
  fi
  wait "$pid" 2>/dev/null; RC=$?
  # a daemon that died or was killed may leave its mount behind
  is_mounted "$2" && { MOUNTED=1; timeout 20 fusermount3 -u "$2" || umount -l "$2"; }
  cat "$OUT" >>"$CSVFS_LOG"
}

# refused WHAT OBJECT — judge the last run: it must have refused with a
# non-zero status (no signal), no sanitizer report, no mount, and a message
# that names OBJECT.
refused() {
  local what=$1 obj=$2 why=()
  [ "$MOUNTED" = 1 ] && why+=("it mounted")
  [ "$HUNG" = 1 ] && why+=("neither exited nor mounted within 15 s")
  [ "$RC" -eq 0 ] && why+=("exit status 0")
  [ "$RC" -eq 124 ] && why+=("timed out")
  [ "$HUNG" = 0 ] && [ "$MOUNTED" = 0 ] && [ "$RC" -gt 128 ] && why+=("killed by signal $((RC - 128))")
  grep -qE "$SAN_RE" "$OUT" && why+=("sanitizer report: $(grep -m1 -E "$SAN_RE" "$OUT")")
  if [ ${#why[@]} -eq 0 ]; then ok "$what: refused with exit status $RC"
  else not_ok "$what: refused with a non-zero exit, no crash ($(IFS=';'; echo "${why[*]}"))"; fi
  if grep -qF -- "$obj" "$OUT"; then ok "$what: the message names $obj"
  else not_ok "$what: the message names $obj (got: $(head -c 300 "$OUT" | tr '\n' '|'))"; fi
}

# try_mkfs ARGS... — runs the formatter; sets RC, OUT (stdout+stderr), STDOUT.
try_mkfs() {
  OUT=$SCRATCH/mkfs.out MOUNTED=0 HUNG=0
  if [ "$TARGET" = csvfs ]; then
    timeout 60 "$BIN/mkfs.csvfs" "$@" </dev/null >"$SCRATCH/mkfs.stdout" 2>"$SCRATCH/mkfs.stderr"; RC=$?
  else
    mkfs_t "$@" >"$SCRATCH/mkfs.stdout" 2>"$SCRATCH/mkfs.stderr"; RC=$?
  fi
  STDOUT=$(tr -d '[:space:]' <"$SCRATCH/mkfs.stdout")
  cat "$SCRATCH/mkfs.stdout" "$SCRATCH/mkfs.stderr" >"$OUT"
}
uuid_of() { blkid -p -o value -s UUID "$1" 2>/dev/null; }
is_guid() { [[ $1 =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]]; }

# ---------------------------------------------------------------- a good volume to spoil
GOOD=$SCRATCH/good.img
try_mkfs -s 64M "$GOOD"
if [ "$RC" -ne 0 ]; then not_ok "format a 64 MiB volume (exit $RC: $(head -c 300 "$OUT"))"; finish; exit; fi
ok "format a 64 MiB volume"
check "the good volume is e2fsck-clean" fsck_clean "$GOOD"
BS=$(dumpe2fs -h "$GOOD" 2>/dev/null | sed -n 's/^Block size: *//p')
FDB=$(dumpe2fs -h "$GOOD" 2>/dev/null | sed -n 's/^First block: *//p')
diag "block size $BS, first data block $FDB"
# control: the good volume mounts (else every refusal below would prove nothing)
try_daemon "$GOOD" "$MNT"
check_eq "control: the daemon mounts the good volume" 1 "$MOUNTED"
spoil() { cp --sparse=always "$GOOD" "$1"; }
poke() { dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }  # poke FILE OFFSET < bytes

# ---------------------------------------------------------------- the daemon
L=$SCRATCH/random.img
head -c 16M /dev/urandom >"$L"
try_daemon "$L" "$MNT"; refused "csvfs on a LUN of random bytes" "$L"

L=$SCRATCH/empty.img
: >"$L"
try_daemon "$L" "$MNT"; refused "csvfs on an empty LUN" "$L"

L=$SCRATCH/badmagic.img
spoil "$L"; printf '\x00\x00' | poke "$L" $((1024 + 56))
try_daemon "$L" "$MNT"; refused "csvfs on a superblock with a bad magic" "$L"

L=$SCRATCH/badsbcsum.img
spoil "$L"; printf 'XXXX' | poke "$L" $((1024 + 120))   # s_volume_name, checksum not updated
try_daemon "$L" "$MNT"; refused "csvfs on a superblock with a bad checksum" "$L"

L=$SCRATCH/ipg0.img
spoil "$L"; debugfs -w -R 'ssv inodes_per_group 0' "$L" >/dev/null 2>&1   # checksum recomputed
try_daemon "$L" "$MNT"; refused "csvfs on a superblock with 0 inodes per group" "$L"

L=$SCRATCH/gdgarbage.img
spoil "$L"; head -c 64 /dev/urandom | poke "$L" $(( (FDB + 1) * BS ))
try_daemon "$L" "$MNT"; refused "csvfs on a garbage group descriptor" "$L"

L=$SCRATCH/gdbitmap.img
spoil "$L"
debugfs -w -R 'set_bg 0 block_bitmap 0xfffffff' "$L" >/dev/null 2>&1
debugfs -w -R 'set_bg 0 checksum calc' "$L" >/dev/null 2>&1
e2fsck -fn "$L" 2>&1 | grep -q 'Corrupt group descriptor' ||
  not_ok "setup: debugfs made a group descriptor e2fsck calls corrupt"
try_daemon "$L" "$MNT"; refused "csvfs on a group descriptor with a valid checksum and an out-of-range bitmap" "$L"

L=$SCRATCH/truncated.img
spoil "$L"; truncate -s 32M "$L"
try_daemon "$L" "$MNT"; refused "csvfs on a LUN shorter than its filesystem" "$L"

L=$SCRATCH/no/such/lun.img
try_daemon "$L" "$MNT"; refused "csvfs on a missing LUN path" "$L"

L=$SCRATCH
try_daemon "$L" "$MNT"; refused "csvfs on a LUN that is a directory" "$L"

M=$SCRATCH/no-such-mountpoint
try_daemon "$GOOD" "$M"; refused "csvfs on a missing mountpoint" "$M"

try_daemon "$GOOD" "$MNT" "no_such_option=1"; refused "csvfs with a bad -o option" "no_such_option"

G=$(cat /proc/sys/kernel/random/uuid)
try_daemon "UUID=$G" "$MNT"; refused "csvfs on UUID= of a GUID no device has" "$G"

check "after all that, the good volume is still e2fsck-clean" fsck_clean "$GOOD"

# ---------------------------------------------------------------- mkfs.csvfs
L=$SCRATCH/absent.img
try_mkfs "$L"; refused "mkfs on a missing path without -s" "$L"
check "mkfs without -s did not create the missing file" test ! -e "$L"

L=$SCRATCH/tiny.img
truncate -s 64K "$L"
try_mkfs "$L"; refused "mkfs on a 64 KiB LUN" "$L"
L=$SCRATCH/tiny2.img
try_mkfs -s 64K "$L"; refused "mkfs -s 64K" "$L"

L=$SCRATCH/immutable.img
truncate -s 64M "$L"
if chattr +i "$L" 2>/dev/null; then
  on_exit "chattr -i '$L'"
  try_mkfs -f "$L"; refused "mkfs -f on an immutable (chattr +i) LUN" "$L"
  chattr -i "$L"
else
  diag "chattr +i not supported under $SCRATCH; skipped"
fi

L=$SCRATCH/ro-backing.img
truncate -s 64M "$L"
on_exit "detach_img '$L'"
if DEV=$(losetup -f --show -r "$L"); then
  try_mkfs -f "$DEV"; refused "mkfs -f on a read-only loop device" "$DEV"
  check_eq "the read-only device is untouched" "" "$(uuid_of "$L")"
  detach_img "$L"
else
  not_ok "setup: losetup -r"
fi

L=$SCRATCH/guid.img
try_mkfs -U not-a-guid -s 64M "$L"; refused "mkfs -U not-a-guid" "not-a-guid"
try_mkfs -U 1234abcd -s 64M "$L"; refused "mkfs -U 1234abcd" "1234abcd"
try_mkfs -s 12QB "$L"; refused "mkfs -s 12QB" "12QB"

# an existing filesystem: refused without -f, formatted with -f
L=$SCRATCH/existing.img
G1=$(cat /proc/sys/kernel/random/uuid) G2=$(cat /proc/sys/kernel/random/uuid)
try_mkfs -U "$G1" -L first -s 64M "$L"
check_eq "mkfs -U prints the GUID it was given" "$G1" "$STDOUT"
check_eq "the superblock UUID is the given GUID" "$G1" "$(uuid_of "$L")"
check_eq "mkfs -L sets the label" first "$(blkid -p -o value -s LABEL "$L" 2>/dev/null)"
try_mkfs -U "$G2" "$L"; refused "mkfs over an existing filesystem without -f" "$L"
check_eq "the refused mkfs left the filesystem alone (UUID unchanged)" "$G1" "$(uuid_of "$L")"
check "the refused mkfs left the filesystem e2fsck-clean" fsck_clean "$L"
try_mkfs -f "$L"
check_eq "mkfs -f over an existing filesystem exits 0" 0 "$RC"
check "mkfs -f prints a GUID ($STDOUT)" is_guid "$STDOUT"
check_eq "the printed GUID is the new superblock UUID" "$STDOUT" "$(uuid_of "$L")"
check "the new GUID differs from the old one" test "$STDOUT" != "$G1"
check "the reformatted volume is e2fsck-clean" fsck_clean "$L"
grep -qE "$SAN_RE" "$OUT" && not_ok "mkfs -f: no sanitizer report ($(grep -m1 -E "$SAN_RE" "$OUT"))"

# ---------------------------------------------------------------- a full volume
FULL=$SCRATCH/full.img
try_mkfs -s 64M "$FULL"
[ "$RC" -eq 0 ] || { not_ok "format the volume to fill"; finish; exit; }
is_mounted "$MNT" && { not_ok "setup: $MNT is still mounted"; umount -l "$MNT"; }
if [ "$TARGET" = csvfs ]; then mount_csvfs "$FULL" "$MNT" "allow_other,default_permissions"
else
  fuse2fs "$FULL" "$MNT" -f -o allow_other,default_permissions >>"$CSVFS_LOG" 2>&1 &
  CSVFS_PID=$!; on_exit "umount_csvfs '$MNT'"; wait_until 20 is_mounted "$MNT"
fi || { not_ok "mount the volume to fill"; finish; exit; }
ok "mount the volume to fill"
mkdir "$MNT/fill" "$SCRATCH/src"
free_b() { echo $(( $(stat -f -c '%a * %S' "$MNT") )); }
enough_free() { [ "$(free_b)" -ge "$1" ]; }
avail=$(free_b)
diag "statvfs: $((avail / 1048576)) MiB available before filling"
: >"$SCRATCH/sums"
n=0 enospc=0 deadline=$(( $(date +%s) + 90 ))
while [ "$n" -lt 400 ] && [ "$(date +%s)" -lt "$deadline" ]; do
  n=$((n + 1))
  head -c 1M /dev/urandom >"$SCRATCH/src/f$n"
  if dd if="$SCRATCH/src/f$n" of="$MNT/fill/f$n" bs=1M conv=fsync status=none 2>"$SCRATCH/dd.err"; then
    (cd "$SCRATCH/src" && sha256sum "f$n") >>"$SCRATCH/sums"
    rm -f "$SCRATCH/src/f$n"
  else
    grep -q 'No space left on device' "$SCRATCH/dd.err" && enospc=1
    rm -f "$SCRATCH/src/f$n" "$MNT/fill/f$n"
    break
  fi
done
full=$(grep -c '' "$SCRATCH/sums")
check_eq "writing 1 MiB files until the volume is full ends in ENOSPC" 1 "$enospc"
[ "$enospc" = 1 ] || diag "stopped after $n files: $(head -c 200 "$SCRATCH/dd.err")"
check "the files that fit hold >= 90% of the space statvfs reported ($full MiB of $((avail / 1048576)) MiB)" \
  test $((full * 1048576)) -ge $((avail * 9 / 10))
# the last few blocks, then a new directory needs a block there is not
dd if=/dev/zero of="$MNT/fill/tail" bs=4k conv=fsync status=none 2>"$SCRATCH/dd.err"
grep -q 'No space left on device' "$SCRATCH/dd.err" && ok "filling the last blocks ends in ENOSPC" ||
  not_ok "filling the last blocks ends in ENOSPC ($(head -c 200 "$SCRATCH/dd.err"))"
# (ext4 keeps a small reserve for metadata: the first directories may still fit)
nd=0
while [ "$nd" -lt 200 ] && mkdir "$MNT/fill/d$nd" 2>"$SCRATCH/mkdir.err"; do nd=$((nd + 1)); done
if grep -q 'No space left on device' "$SCRATCH/mkdir.err"; then ok "creating directories on a full volume ends in ENOSPC (after $nd)"
else not_ok "creating directories on a full volume ends in ENOSPC ($nd made; $(head -c 200 "$SCRATCH/mkdir.err"))"; fi
check "every file written before ENOSPC is intact" bash -c "cd '$MNT/fill' && sha256sum --quiet -c '$SCRATCH/sums'"
# delete every other file and the tail; the space comes back and can be written
rm -f "$MNT/fill/tail"; rmdir "$MNT"/fill/d* 2>/dev/null
awk 'NR % 2 == 1 { print $2 }' "$SCRATCH/sums" | (cd "$MNT/fill" && xargs -r rm -f)
awk 'NR % 2 == 0' "$SCRATCH/sums" >"$SCRATCH/kept"
freed=$(( (full + 1) / 2 ))
check "statvfs shows the space of the $freed deleted files again (within 10 s)" \
  wait_until 10 enough_free $(( (freed - 1) * 1048576 ))
again=0
for i in $(seq 1 $((freed / 2))); do
  head -c 1M /dev/urandom >"$SCRATCH/src/g$i"
  dd if="$SCRATCH/src/g$i" of="$MNT/fill/g$i" bs=1M conv=fsync status=none 2>/dev/null && again=$((again + 1))
  (cd "$SCRATCH/src" && sha256sum "g$i") >>"$SCRATCH/kept"
  rm -f "$SCRATCH/src/g$i"
done
check_eq "after deleting, $((freed / 2)) new 1 MiB files can be written" "$((freed / 2))" "$again"
check "the kept and the new files are intact" bash -c "cd '$MNT/fill' && sha256sum --quiet -c '$SCRATCH/kept'"
alive_pid=${CSVFS_PID:-}
timeout 20 fusermount3 -u "$MNT" || umount -l "$MNT"
for i in $(seq 1 600); do kill -0 "$alive_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$alive_pid" 2>/dev/null && { not_ok "the daemon exits within 60 s of unmount"; kill -9 "$alive_pid"; }
wait "$alive_pid"; check_eq "the daemon exits with status 0 after filling the volume" 0 "$?"
CSVFS_PID=
if fsck_clean "$FULL" "$SCRATCH/fsck.out"; then ok "e2fsck -fn is clean after filling, deleting and writing again"
else not_ok "e2fsck -fn is clean after filling, deleting and writing again"; grep -vE '^(Pass|e2fsck)|could be (shorter|narrower)|Optimize\? no|^$' "$SCRATCH/fsck.out" | head -n 20 | sed 's/^/#   /'; fi
on_exit "detach_img '$FULL'"
if DEV=$(losetup -f --show -r "$FULL") && on_exit "umount_if '$KMNT'" && mount -t ext4 -o ro,noload "$DEV" "$KMNT"; then
  check "kernel view: the kept and the new files are intact" bash -c "cd '$KMNT/fill' && sha256sum --quiet -c '$SCRATCH/kept'"
  umount "$KMNT"
else
  not_ok "the kernel mounts the filled volume read-only"
fi
detach_img "$FULL"
if [ "$TARGET" = csvfs ] && ldd "$BIN/csvfs" 2>/dev/null | grep -q libasan; then
  check_eq "no sanitizer report in any daemon output" "" "$(grep -m1 -E "$SAN_RE" "$CSVFS_LOG")"
fi
[ "$TEST_FAILS" -gt 0 ] && diag "daemon output: $CSVFS_LOG"
diag "badinput.sh on $TARGET: $(( $(date +%s) - START )) s"
finish
