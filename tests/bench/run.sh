#!/usr/bin/env bash
# make bench — csvfs benchmarks (design.md §10). NOT tests: nothing here asserts
# on a time or a rate. One run measures, side by side on the same disk and with
# the same image size:
#   raw     fio on the LUN image file itself (O_DIRECT): the ceiling
#   csvfs   a file on a standalone csvfs mount of a LUN image
#   fuse2fs a file on fuse2fs (the reference FUSE ext4, libext2fs like csvfs)
#   ext4    the kernel's ext4 on a loop device (direct-io=on) of an image
# and, for the metadata rates, the kernel's ext4 on the csvfs volume itself
# once csvfs has unmounted it (same image, same format), and writes
# docs/benchmarks.md (commands, machine facts, tables, ratios).
#
# All four are set up first and stay mounted; every fio job then runs on each
# of them back to back (the starting target rotates per round), so a change in
# the machine's load hits them all alike. Metadata runs are interleaved too.
#
# Needs root (FUSE, loop devices), fio, fuse2fs, e2fsprogs; parses with awk
# only (python3 and jq are not on every Debian 12 machine).
#
# Environment (defaults in brackets):
#   BENCH_DIR        where the images live [/var/tmp]; the disk being measured
#   BENCH_IMG        image size [4G]          BENCH_FILE   fio file size [1G]
#   BENCH_RUNTIME    seconds per time-based fio job [10]
#   BENCH_ROUNDS     fio rounds; the report takes each cell's best [2]
#   BENCH_META_SECS  seconds cap per metadata run [3]
#   BENCH_OUT        the report [docs/benchmarks.md]
#   BENCH_TARGETS    subset, e.g. "raw csvfs" [raw csvfs fuse2fs ext4]
set -u
# In a mount namespace of its own (as the crash tests): a namespace another
# process creates meanwhile would otherwise pin our FUSE mounts.
[ -n "${CSVFS_TEST_OWN_NS:-}" ] ||
  exec env CSVFS_TEST_OWN_NS=1 unshare -m --propagation private -- bash "$0" "$@"
BUILD=${BUILD:-build}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"          # on_exit, wait_until, mount_csvfs, umount_csvfs
cd "$TOP" || exit 1

BENCH_DIR=${BENCH_DIR:-/var/tmp}
IMG_SIZE=${BENCH_IMG:-4G}
FILE_SIZE=${BENCH_FILE:-1G}
RT=${BENCH_RUNTIME:-10}
ROUNDS=${BENCH_ROUNDS:-2}
META_SECS=${BENCH_META_SECS:-3}
OUT=${BENCH_OUT:-docs/benchmarks.md}
TARGETS=${BENCH_TARGETS:-raw csvfs fuse2fs ext4}
META_CREATE_MAX=60000     # files per create run (two runs per fs: < the 262144 inodes)
META_FSYNC_MAX=20000
META_STAT_MAX=1000000000  # stat and mixed runs are bounded by time only
META_MODES="create_fsync create mixed_fsync mixed stat stat_sync"

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (FUSE mounts, loop devices)"
for t in fio fuse2fs mkfs.ext4 e2fsck losetup fusermount3 awk dd timeout findmnt lsblk; do
  command -v "$t" >/dev/null || die "missing $t (make deps)"
done
for t in "$BIN/csvfs" "$BIN/mkfs.csvfs" "$TBIN/bench_meta"; do
  [ -x "$t" ] || die "missing $t: run 'make bench', which builds it"
done
for t in $TARGETS; do
  case $t in raw|csvfs|fuse2fs|ext4) ;; *) die "unknown target $t" ;; esac
done
has() { [[ " $TARGETS " == *" $1 "* ]]; }

mkdir -p "$BENCH_DIR"
W=$(mktemp -d "$BENCH_DIR/csvfs-bench.XXXXXX") || die "cannot create a directory under $BENCH_DIR"
on_exit "rm -rf --one-file-system '$W'"
CMDS="$W/commands.txt"; : > "$CMDS"
NOTES="$W/notes.txt"; : > "$NOTES"
declare -A R        # results: R[target.job.field], R[target.job.rN.field], R[target.mode.threads.field]
declare -A FILE IMG # per target: the fio file, the image whose page cache is dropped
start_epoch=$(date +%s)
read -r _ u0 n0 s0 i0 w0 q0 sq0 st0 _ < /proc/stat

# ------------------------------------------------------------------ helpers

# Record a command for the report: $W for the scratch directory, paths
# relative to the repository top, shell quoting only where needed.
record() {
  local s="" a re='^[][A-Za-z0-9_./=,:+%@$&-]+$'
  for a in "$@"; do
    a=${a//$W/\$W}; a=${a#"$TOP"/}
    [[ $a =~ $re ]] || a=$(printf '%q' "$a")
    s+="${s:+ }$a"
  done
  echo "$s" >> "$CMDS"
}
# step LIMIT cmd... — record and run a command, bounded in time.
step() { local limit=$1; shift; record "$@"; timeout -k 10 "$limit" "$@"; }
note() { echo "$*" >> "$NOTES"; log "NOTE: $*"; }

# Flush and drop the host page cache of one image file (not the whole
# machine's): fdatasync, then POSIX_FADV_DONTNEED. fuse2fs does buffered I/O on
# its image; without this its reads would come from RAM.
drop_cache() { timeout 60 dd of="$1" oflag=nocache conv=notrunc,fdatasync count=0 status=none 2>/dev/null || true; }

# fio job definitions: the same for every target, only --filename differs.
JOBS="seqwrite_new seqwrite seqread randwrite randread"
fio_args() {
  local common="--ioengine=libaio --direct=1 --size=$FILE_SIZE --output-format=terse --terse-version=3"
  case $1 in
    seqwrite_new) echo "--name=seqwrite_new --rw=write --bs=1M --iodepth=8 --fallocate=none --end_fsync=1 --runtime=60 $common" ;;
    seqwrite)     echo "--name=seqwrite --rw=write --bs=1M --iodepth=8 --time_based --runtime=$RT --end_fsync=1 $common" ;;
    seqread)      echo "--name=seqread --rw=read --bs=1M --iodepth=8 --time_based --runtime=$RT $common" ;;
    randwrite)    echo "--name=randwrite --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime=$RT --end_fsync=1 $common" ;;
    randread)     echo "--name=randread --rw=randread --bs=4k --iodepth=32 --time_based --runtime=$RT $common" ;;
  esac
}
job_dir() { case $1 in *read*) echo read ;; *) echo write ;; esac; }

# Terse v3: read bw KiB/s=7 iops=8 clat p50=24 p99=30 (usec); write = read + 41.
parse_terse() {   # FILE read|write -> "MiB/s IOPS p50_us p99_us" or nothing
  awk -F';' -v d="$2" '$1 == "3" && NF > 100 {
      o = (d == "read") ? 0 : 41
      p50 = $(24 + o); p99 = $(30 + o); sub(/.*=/, "", p50); sub(/.*=/, "", p99)
      if ($5 != "0") exit
      printf "%.1f %.0f %s %s\n", $(7 + o) / 1024, $(8 + o), p50, p99; exit }' "$1"
}

fio_one() {   # TARGET JOB ROUND
  local target=$1 job=$2 r=$3 file=${FILE[$1]} out res rc args
  # A new file for the allocating write (the raw LUN has no files: it rewrites).
  [ "$job" = seqwrite_new ] && [ "$target" != raw ] && rm -f "$file"
  drop_cache "${IMG[$target]}"
  read -r -a args <<<"$(fio_args "$job")"
  out="$W/fio-$target-$job-r$r.terse"
  step $((RT + 120)) fio "${args[@]}" --filename="$file" > "$out" 2> "$out.err"; rc=$?
  res=$(parse_terse "$out" "$(job_dir "$job")")
  if [ "$rc" -ne 0 ] || [ -z "$res" ]; then
    note "round $r, $target $job: fio failed (exit $rc): $(head -c 300 "$out.err" | tr '\n' ' ')"
    return
  fi
  read -r "R[$target.$job.r$r.mibs]" "R[$target.$job.r$r.iops]" "R[$target.$job.r$r.p50]" "R[$target.$job.r$r.p99]" <<<"$res"
  log "round $r $target $job: ${R[$target.$job.r$r.mibs]} MiB/s, ${R[$target.$job.r$r.iops]} IOPS"
  # The reported cell is the best round (least disturbed by the rest of the machine).
  if awk -v a="${R[$target.$job.r$r.iops]}" -v b="${R[$target.$job.iops]:-}" 'BEGIN { exit !(b == "" || a + 0 > b + 0) }'; then
    local f; for f in mibs iops p50 p99; do R[$target.$job.$f]=${R[$target.$job.r$r.$f]}; done
  fi
}

meta_one() {   # TARGET MODE THREADS
  local target=$1 mode=$2 t=$3 m=${FILE[$1]%/*} dir n out rc
  case $mode in
    create_fsync) dir="$m/bench-meta/cf$t"; n=$META_FSYNC_MAX ;;
    create)       dir="$m/bench-meta/c$t";  n=$META_CREATE_MAX ;;
    mixed_fsync)  dir="$m/bench-meta/mf$t"; n=$META_STAT_MAX ;;
    mixed)        dir="$m/bench-meta/mx$t"; n=$META_STAT_MAX ;;
    *)            dir="$m/bench-meta/c$t";  n=$META_STAT_MAX ;;
  esac
  mkdir -p "$dir"
  out=$(step $((META_SECS + 60)) "$TBIN/bench_meta" "$dir" "$t" "$n" "$mode" "$META_SECS" 2>"$W/meta.err"); rc=$?
  if [ "$rc" -ne 0 ] || [ -z "$out" ]; then
    note "$target: bench_meta $mode with $t threads failed (exit $rc): $(head -c 300 "$W/meta.err" | tr '\n' ' ') $out"
    return
  fi
  local f
  for f in ops_per_s lat_p50_us lat_p99_us ops; do
    R[$target.$mode.$t.$f]=$(sed -n "s/.* $f=\\([^ ]*\\).*/\\1/p" <<<"$out")
  done
  log "$target $mode x$t: ${R[$target.$mode.$t.ops_per_s]} ops/s"
}

# ------------------------------------------------------------------ targets

# Each filesystem has its own mount point; every one is torn down on any exit.
F2_PID=
stop_fuse2fs() {
  local mnt="$W/mnt-fuse2fs"
  is_mounted "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
  [ -n "$F2_PID" ] || return 0
  local _
  for _ in $(seq 1 100); do kill -0 "$F2_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$F2_PID" 2>/dev/null && { note "fuse2fs $F2_PID did not exit after unmount; killed"; kill -9 "$F2_PID"; }
  wait "$F2_PID" 2>/dev/null
  F2_PID=
}
LOOP=
stop_ext4() {
  local mnt="$W/mnt-ext4"
  grep -q " $mnt ext4 " /proc/self/mounts && { umount "$mnt" || umount -l "$mnt"; }
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  LOOP=
}
stop_csvfs() {
  umount_csvfs "$W/mnt-csvfs" > "$W/umount.out"
  grep '^not ok' "$W/umount.out" | sed 's/^not ok - /csvfs: /' >> "$NOTES"
}
on_exit stop_fuse2fs
on_exit stop_ext4
on_exit stop_csvfs

drop_target() {   # TARGET — leave it out of the tables after a setup failure
  note "$1: $2; $1 is left out"
  TARGETS=$(tr ' ' '\n' <<<"$TARGETS" | grep -vx "$1" | tr '\n' ' ')
}

setup_raw() {
  IMG[raw]="$W/raw.img"; FILE[raw]="$W/raw.img"
  step 30 truncate -s "$IMG_SIZE" "${IMG[raw]}" || drop_target raw "truncate failed"
}

setup_csvfs() {
  local img="$W/csvfs.img" mnt="$W/mnt-csvfs"
  IMG[csvfs]=$img; FILE[csvfs]="$mnt/fio.dat"
  CSVFS_LOG="$W/csvfs.log"
  step 120 "$BIN/mkfs.csvfs" -L bench -s "$IMG_SIZE" "$img" >/dev/null || { drop_target csvfs "mkfs.csvfs failed"; return; }
  record "$BIN/csvfs" -f -o standalone "$img" "$mnt" "&"
  mount_csvfs "$img" "$mnt" || drop_target csvfs "mount failed: $(tail -3 "$CSVFS_LOG" | tr '\n' ' ')"
}

mkfs_ext4() {  # IMG
  step 30 truncate -s "$IMG_SIZE" "$1" &&
  step 120 mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "$1"
}

setup_fuse2fs() {
  local img="$W/fuse2fs.img" mnt="$W/mnt-fuse2fs"
  IMG[fuse2fs]=$img; FILE[fuse2fs]="$mnt/fio.dat"
  mkfs_ext4 "$img" || { drop_target fuse2fs "mkfs.ext4 failed"; return; }
  mkdir -p "$mnt"
  record fuse2fs "$img" "$mnt" -o fakeroot,allow_other -f "&"
  fuse2fs "$img" "$mnt" -o fakeroot,allow_other -f > "$W/fuse2fs.log" 2>&1 &
  F2_PID=$!
  wait_until 20 is_mounted "$mnt" ||
    { drop_target fuse2fs "mount did not appear: $(tail -3 "$W/fuse2fs.log" | tr '\n' ' ')"; stop_fuse2fs; }
}

setup_ext4() {
  local img="$W/ext4.img" mnt="$W/mnt-ext4"
  IMG[ext4]=$img; FILE[ext4]="$mnt/fio.dat"
  mkfs_ext4 "$img" || { drop_target ext4 "mkfs.ext4 failed"; return; }
  mkdir -p "$mnt"
  LOOP=$(step 30 losetup --direct-io=on -f --show "$img") || { LOOP=; drop_target ext4 "losetup failed"; return; }
  step 30 mount "$LOOP" "$mnt" || { drop_target ext4 "mount failed"; stop_ext4; }
}

# csvfs is unmounted (and checked) before the rest: its image then serves
# the kernel's ext4 (ext4vol).
teardown_csvfs() {
  if has csvfs; then
    record fusermount3 -u "$W/mnt-csvfs"
    stop_csvfs
    if grep -qiE 'error|warn|fail' "$CSVFS_LOG"; then
      note "csvfs log has warnings/errors: $(grep -iE 'error|warn|fail' "$CSVFS_LOG" | head -3 | tr '\n' ' ')"
    fi
    if ! step 300 e2fsck -fn "${IMG[csvfs]}" > "$W/fsck.out" 2>&1; then
      # Keep the evidence for the fs/ owners: image, daemon log, e2fsck output.
      KEPT=$(mktemp -d "$BENCH_DIR/csvfs-bench-fsck-failure.XXXXXX")
      cp "$W/fsck.out" "$CSVFS_LOG" "$KEPT/"; mv "${IMG[csvfs]}" "$KEPT/"
      cp "$W/fsck.out" "$W/fsck.failed"
      note "csvfs: e2fsck -fn of the csvfs volume after the bench is NOT clean (output below); the image, the daemon log and the e2fsck output are kept in $KEPT"
    fi
  fi
}

# The kernel's ext4 on the csvfs volume, after csvfs released it (MMP clean;
# the kernel runs its own MMP and waits ~11 s at mount). Metadata only.
VOL_LOOP=
stop_ext4vol() {
  local mnt="$W/mnt-ext4vol"
  grep -q " $mnt ext4 " /proc/self/mounts && { umount "$mnt" || umount -l "$mnt"; }
  [ -n "$VOL_LOOP" ] && losetup -d "$VOL_LOOP"
  VOL_LOOP=
}
on_exit stop_ext4vol
setup_ext4vol() {
  local mnt="$W/mnt-ext4vol"
  FILE[ext4vol]="$mnt/kernel/fio.dat"
  mkdir -p "$mnt"
  VOL_LOOP=$(step 30 losetup --direct-io=on -f --show "${IMG[csvfs]}") || { VOL_LOOP=; note "ext4vol: losetup failed"; return; }
  step 90 mount -t ext4 "$VOL_LOOP" "$mnt" || { note "ext4vol: kernel mount of the csvfs volume failed"; stop_ext4vol; return; }
  # csvfs's metadata runs used up to ~160,000 of the volume's inodes
  step 300 rm -rf "$mnt/bench-meta" "$mnt/fio.dat"
}

teardown() {
  if [ -n "$VOL_LOOP" ]; then
    record umount "$W/mnt-ext4vol"; record losetup -d "$VOL_LOOP"; stop_ext4vol
    step 300 e2fsck -fn "${IMG[csvfs]}" > "$W/fsck-vol.out" 2>&1 ||
      note "ext4vol: e2fsck -fn of the csvfs volume after the kernel's runs is not clean: $(grep -vE '^(Pass|e2fsck)' "$W/fsck-vol.out" | head -3 | tr '\n' ' ')"
  fi
  if has fuse2fs; then record fusermount3 -u "$W/mnt-fuse2fs"; stop_fuse2fs; fi
  if has ext4; then record umount "$W/mnt-ext4"; record losetup -d "$LOOP"; stop_ext4; fi
  rm -f "$W"/*.img
}

# ------------------------------------------------------------------ machine facts

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
fs_line=$(findmnt -no SOURCE,FSTYPE -T "$W" | head -1)
src=${fs_line%% *}
disk=$(lsblk -ndo PKNAME "$src" 2>/dev/null | head -1); [ -n "$disk" ] || disk=$(basename "$src")
disk_desc=$(lsblk -ndo NAME,SIZE,ROTA,TYPE,MODEL "/dev/$disk" 2>/dev/null | awk '{m=""; for (i=5;i<=NF;i++) m=m" "$i; printf "%s, %s, rotational=%s, %s%s", $1, $2, $3, $4, (m=="" ? "" : ", model" m)}')
sched=$(cat "/sys/block/$disk/queue/scheduler" 2>/dev/null || echo "?")
cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
os=$( . /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")
virt=$(systemd-detect-virt 2>/dev/null || echo "unknown")
commit=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$TOP" status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit (with uncommitted changes)"
fio_ver=$(fio --version)
f2_ver=$(dpkg-query -W -f='${Version}' fuse2fs 2>/dev/null || echo "?")

# ------------------------------------------------------------------ the run

log "images under $W ($fs_line), disk $disk_desc; targets: $TARGETS"
for t in $TARGETS; do "setup_$t"; done
log "set up: $TARGETS"

read -r -a tlist <<<"$TARGETS"
for ((r = 1; r <= ROUNDS; r++)); do
  for job in $JOBS; do
    for ((k = 0; k < ${#tlist[@]}; k++)); do
      t=${tlist[$(( (k + r - 1) % ${#tlist[@]} ))]}
      fio_one "$t" "$job" "$r"
    done
  done
done
for mode in $META_MODES; do
  for th in 1 8; do
    for t in $TARGETS; do [ "$t" = raw ] || meta_one "$t" "$mode" "$th"; done
  done
done
teardown_csvfs
has csvfs && [ ! -s "$W/fsck.failed" ] && setup_ext4vol
if [ -n "$VOL_LOOP" ]; then
  for mode in $META_MODES; do
    for th in 1 8; do meta_one ext4vol "$mode" "$th"; done
  done
fi
teardown

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - start_epoch ))
# CPU use over the run: the whole machine vs this bench's processes (children
# that were waited for: fio, bench_meta, the daemons after unmount).
read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ < /proc/stat
hz=$(getconf CLK_TCK)
times > "$W/times.txt"
mine=$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, p, "m"); sub(/s/, "", p[2]); s += p[1] * 60 + p[2] } print s }' "$W/times.txt")
cpu_use=$(awk -v busy=$(( (u1+n1+s1+q1+sq1+st1) - (u0+n0+s0+q0+sq0+st0) )) -v idle=$(( (i1+w1) - (i0+w0) )) \
  -v hz="$hz" -v mine="$mine" -v n="$(nproc)" -v el="$elapsed" 'BEGIN {
    tot = busy + idle; if (tot <= 0 || el <= 0) { print "?"; exit }
    printf "machine %.0f %% busy (of %d CPUs); this bench'"'"'s processes (user+sys) %.0f %%", 100 * busy / tot, n, 100 * mine / (el * n) }')

# ------------------------------------------------------------------ report

v() { echo "${R[$1]:-n/a}"; }
# ratio A B percent|times -> "93 %" / "3.1×" / "n/a"
ratio() {
  awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" -v k="$3" 'BEGIN {
    if (a == "" || b == "" || b + 0 == 0) { print "n/a"; exit }
    r = a / b
    if (k == "percent") printf "%.0f %%", r * 100; else printf "%.2f×", r }'
}
# meets A B THRESHOLD -> "yes"/"**no**"/"n/a"
meets() {
  awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" -v th="$3" 'BEGIN {
    if (a == "" || b == "" || b + 0 == 0) { print "n/a"; exit }
    print (a / b >= th) ? "yes" : "**no**" }'
}
label() {
  case $1 in
    seqwrite_new) echo "seq write 1 MiB QD8, new file" ;;
    seqwrite)     echo "seq write 1 MiB QD8, overwrite" ;;
    seqread)      echo "seq read 1 MiB QD8" ;;
    randwrite)    echo "rand write 4 KiB QD32" ;;
    randread)     echo "rand read 4 KiB QD32" ;;
    create_fsync) echo "create + fsync" ;;
    create)       echo "create" ;;
    mixed_fsync)  echo "mixed namespace ops + fsync" ;;
    mixed)        echo "mixed namespace ops" ;;
    stat)         echo "stat (attr cache allowed)" ;;
    stat_sync)    echo "stat, forced GETATTR" ;;
  esac
}
metric() { case $1 in seq*) echo mibs ;; *) echo iops ;; esac; }
unit() { case $1 in seq*) echo "MiB/s" ;; *) echo "IOPS" ;; esac; }
ALL="raw csvfs fuse2fs ext4"

mkdir -p "$(dirname "$OUT")"
{
cat <<'EOF'
# csvfs benchmarks

Generated by `make bench` (`tests/bench/run.sh`); do not edit by hand — rerun
it. These are benchmarks, not tests: nothing asserts on a number. One run
measures every configuration side by side, on the same disk, with images of
the same size, so the ratios within one run are what to read; absolute numbers
move with the machine and with whatever else it is doing (see "This run").

## What is measured

Four ways to store a file, each on a fresh sparse image file in the same
directory, all set up before the first measurement and kept mounted:

* **raw** — fio directly on a LUN image file, with O_DIRECT. csvfs moves file
  data straight between the application and the LUN (O_DIRECT), so this is
  its ceiling.
* **csvfs** — a file on a standalone (one-node, coordinator) csvfs mount of a
  LUN image formatted by `mkfs.csvfs`. fio opens it with O_DIRECT, which csvfs
  serves with FUSE `direct_io`.
* **fuse2fs** — the same workload on fuse2fs, the Debian FUSE driver for ext4.
  Like csvfs it is built on libext2fs, so it is the "plain FUSE ext4"
  baseline. It does buffered I/O on its image and, in e2fsprogs 1.47.0, does
  not write the journal ("Writing to the journal is not supported").
* **ext4** — the kernel's ext4 on a loop device made with
  `losetup --direct-io=on`, so the loop driver, like csvfs, does O_DIRECT to
  the image (the default buffered loop device would measure the page cache).
  A reference point, not a target.

**Data** (fio, libaio, O_DIRECT, one job, a 1 GiB file): a 1 MiB sequential
write that creates the file (every block allocated on the way; capped at
60 s), then, time-based, a sequential overwrite, a sequential read, 4 KiB
random writes and 4 KiB random reads at queue depth 32 over the written file.
Each job runs on the four targets back to back before the next job starts,
and the whole sequence runs for several rounds (the starting target rotates);
a cell is the best round, and the per-round numbers are listed below. Before
every job the image file's page cache is flushed and dropped (`dd
oflag=nocache conv=notrunc,fdatasync count=0`, which affects only that file),
and every write job ends with an fsync (`--end_fsync=1`, inside fio's measured
runtime), so a filesystem that buffers beneath O_DIRECT — fuse2fs — pays for
making the data durable instead of being credited with RAM speed. The images
are sparse, so first writes also allocate in the host filesystem, for every
target alike.

**Metadata** (`tests/helpers/bench_meta.c`): each thread works in its own
directory; *create* = `open(O_CREAT|O_EXCL)` + `close` of empty files;
*create + fsync* adds `fsync(fd)`, whose latency is reported; *mixed
namespace ops* cycles create, rename, mkdir, rmdir and unlink (five
operations per cycle), and *+ fsync* makes each one durable (the new file's
fsync, then the directory's after each of the others); *stat* =
`fstatat` of the created files, which the kernel may answer from its
attribute cache (csvfs sets 1 s attribute and entry timeouts; fuse2fs an
attribute timeout of 0, so it answers every stat); *forced GETATTR* =
`statx(AT_STATX_FORCE_SYNC)`, which makes a FUSE daemon answer every call.
A run stops at a file cap or a time cap, whichever comes first. The metadata
runs are repeated with the kernel's ext4 on the csvfs volume itself, once
csvfs has unmounted it (loop device, direct-io=on). An fsync on
csvfs and on ext4 commits a journal transaction; on fuse2fs it writes the
changed metadata in place with no journal, which is cheaper but not crash-safe.

**Targets** (design brief): csvfs reaches **≥ 90 %** of the raw LUN on
sequential I/O, and **≥ 3×** fuse2fs on every data row. The "met" columns say
whether this run did; they fail nothing.

Not measured yet (design.md §10 asks for them once cluster mode works):
participant vs coordinator, direct vs redirected I/O, failover times.
EOF

echo
echo "## This run"
echo
echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'); wall time of the whole bench: ${elapsed} s"
echo "* csvfs commit: $commit"
echo "* CPU: $cpu; nproc: $(nproc); memory: $mem; systemd-detect-virt: $virt"
echo "* Kernel: $(uname -r); OS: $os"
echo "* Disk under \`$BENCH_DIR\`: $fs_line on $disk_desc; I/O scheduler: $sched"
echo "* Load average before / after: $load_before / $load_after; CPU over the run: $cpu_use"
echo "* fio $fio_ver; fuse2fs $f2_ver; image size $IMG_SIZE (sparse); fio file $FILE_SIZE; time-based jobs ${RT} s; $ROUNDS round(s); metadata runs ≤ ${META_SECS} s"
if awk -v l="${load_before%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
  echo "* **The machine was busy before the bench started** (load average ${load_before%% *} on $(nproc) CPUs): absolute numbers are depressed and the ratios are noisier than on an idle machine."
fi
if [ "$virt" != none ]; then
  echo "* The machine is virtual ($virt): the hypervisor may cache the disk, so the raw LUN can read or write faster than a physical disk would, and rounds vary."
fi
echo

echo "## Data path (fio)"
echo
echo "| workload | unit | raw | csvfs | fuse2fs | ext4 (kernel) | csvfs / raw | ≥ 90 % met | csvfs / fuse2fs | ≥ 3× met |"
echo "|---|---|--:|--:|--:|--:|--:|:-:|--:|:-:|"
for j in $JOBS; do
  k=$(metric "$j")
  seq90="—"; case $j in seq*) seq90=$(meets "csvfs.$j.$k" "raw.$j.$k" 0.9) ;; esac
  echo "| $(label "$j") | $(unit "$j") | $(v "raw.$j.$k") | $(v "csvfs.$j.$k") | $(v "fuse2fs.$j.$k") | $(v "ext4.$j.$k") | $(ratio "csvfs.$j.$k" "raw.$j.$k" percent) | $seq90 | $(ratio "csvfs.$j.$k" "fuse2fs.$j.$k" times) | $(meets "csvfs.$j.$k" "fuse2fs.$j.$k" 3) |"
done
echo
echo "The same cells in the other unit:"
echo
echo "| workload | raw | csvfs | fuse2fs | ext4 (kernel) |"
echo "|---|--:|--:|--:|--:|"
for j in $JOBS; do
  case $j in seq*) k=iops; u="IOPS" ;; *) k=mibs; u="MiB/s" ;; esac
  echo "| $(label "$j") ($u) | $(v "raw.$j.$k") | $(v "csvfs.$j.$k") | $(v "fuse2fs.$j.$k") | $(v "ext4.$j.$k") |"
done
echo
echo "Completion latency (fio clat) of the same runs, p50 / p99, µs:"
echo
echo "| workload | raw | csvfs | fuse2fs | ext4 (kernel) |"
echo "|---|--:|--:|--:|--:|"
for j in $JOBS; do
  row="| $(label "$j") |"
  for t in $ALL; do row+=" $(v "$t.$j.p50") / $(v "$t.$j.p99") |"; done
  echo "$row"
done
echo
echo "Every round ($(unit seqread) for sequential, IOPS for random; round 1 / round 2 / …):"
echo
echo "| workload | raw | csvfs | fuse2fs | ext4 (kernel) |"
echo "|---|--:|--:|--:|--:|"
for j in $JOBS; do
  k=$(metric "$j")
  row="| $(label "$j") |"
  for t in $ALL; do
    cell=""
    for ((r = 1; r <= ROUNDS; r++)); do cell+="${cell:+ / }$(v "$t.$j.r$r.$k")"; done
    row+=" $cell |"
  done
  echo "$row"
done
echo

echo "## Metadata (bench_meta)"
echo
echo "Operations per second. *ext4 (same volume)* is the kernel's ext4 on the csvfs"
echo "volume itself, loop-mounted after csvfs unmounted it (same image, same format,"
echo "same journal); *ext4 (kernel)* is the separate mkfs.ext4 image above."
echo
echo "| operation | threads | csvfs | fuse2fs | ext4 (kernel) | ext4 (same volume) | csvfs / fuse2fs | csvfs / ext4 (same volume) |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|"
for mode in $META_MODES; do
  for th in 1 8; do
    p="$mode.$th.ops_per_s"
    echo "| $(label "$mode") | $th | $(v "csvfs.$p") | $(v "fuse2fs.$p") | $(v "ext4.$p") | $(v "ext4vol.$p") | $(ratio "csvfs.$p" "fuse2fs.$p" times) | $(ratio "csvfs.$p" "ext4vol.$p" percent) |"
  done
done
echo
echo "fsync latency, p50 / p99, µs (bench_meta's histogram, ±3 %): in *create + fsync*"
echo "the fsync of each new file; in *mixed + fsync* every fsync (the new file's, and"
echo "the directory's after each rename, mkdir, rmdir, unlink):"
echo
echo "| operation | threads | csvfs | fuse2fs | ext4 (kernel) | ext4 (same volume) |"
echo "|---|--:|--:|--:|--:|--:|"
for mode in create_fsync mixed_fsync; do
  for th in 1 8; do
    row="| $(label "$mode") | $th |"
    for t in csvfs fuse2fs ext4 ext4vol; do row+=" $(v "$t.$mode.$th.lat_p50_us") / $(v "$t.$mode.$th.lat_p99_us") |"; done
    echo "$row"
  done
done
echo
echo "Operations per run (caps: $META_CREATE_MAX for create, $META_FSYNC_MAX for create + fsync, none for mixed; a create run below its cap hit the ${META_SECS} s limit):"
echo
echo "| operation | threads | csvfs | fuse2fs | ext4 (kernel) | ext4 (same volume) |"
echo "|---|--:|--:|--:|--:|--:|"
for mode in create_fsync create mixed_fsync mixed; do
  for th in 1 8; do
    echo "| $(label "$mode") | $th | $(v "csvfs.$mode.$th.ops") | $(v "fuse2fs.$mode.$th.ops") | $(v "ext4.$mode.$th.ops") | $(v "ext4vol.$mode.$th.ops") |"
  done
done
echo

echo "## Notes"
echo
echo "n/a in a table: that configuration was not run or its step failed (see below)."
echo
if [ -s "$NOTES" ]; then sed 's/^/* /' "$NOTES"; else echo "* Every step completed; no daemon reported an error; the csvfs volume was e2fsck-clean afterwards."; fi
echo
if [ -s "$W/fsck.failed" ]; then
  echo "\`e2fsck -fn\` of the csvfs volume after the bench (first 40 lines):"
  echo
  echo '```'
  head -40 "$W/fsck.failed"
  echo '```'
  echo
fi

echo "## Commands"
echo
echo "Every command the run executed, in order, from the repository top (\`\$W\` is"
echo "the scratch directory \`$BENCH_DIR/csvfs-bench.XXXXXX\`; \`&\` marks a daemon"
echo "started in the background; each command ran under \`timeout\`). Before every"
echo "fio job: \`dd of=IMAGE oflag=nocache conv=notrunc,fdatasync count=0\`; before"
echo "each \"new file\" job on a filesystem, the previous fio.dat is removed."
echo
echo '```sh'
cat "$CMDS"
echo '```'
} > "$OUT"

log "wrote $OUT in ${elapsed} s"
