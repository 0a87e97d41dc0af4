#!/usr/bin/env bash
# `ls -l` of a large directory and a participant daemon's memory (issue 14) —
# NOT a test: nothing here asserts on a number. In a 3-node csvfs-lab:
#   1. BENCH_LSL_RUNS times: the coordinator creates a fresh directory of
#      BENCH_LSL_FILES files, then `ls -l` of it is timed on the coordinator
#      and on a participant, back to back (the order alternates per run).
#      Fresh directory per run: the participant's kernel and daemon have never
#      seen its names; the coordinator's kernel caches nothing in cluster mode
#      (it revalidates every name), so both are cold as far as the daemons go.
#   2. the coordinator creates BENCH_MEM_FILES files spread over directories
#      of 1000, then the participant stats every one (find | xargs stat); the
#      participant daemon's VmRSS and VmHWM (/proc/PID/status) before and after.
# Results: the section "ls -l and memory" of docs/benchmarks-attrcache.md
# (BENCH_OUT); the rows are printed on stdout too.
#
# Knobs: BENCH_LAB=rdpb  BENCH_LSL_FILES=10000  BENCH_LSL_RUNS=3
#        BENCH_MEM_FILES=100000  BENCH_LUN_SIZE=3G  BENCH_OUT  BENCH_DAEMON_OPTS
#        (extra -o options for every daemon, e.g. attr_cache=4096)
set -u
BUILD=${BUILD:-build}
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="$TOP/$BUILD/bin"
LAB="$BIN/csvfs-lab"
CSVCTL="$BIN/csvctl"
V=/ClusterStorage/Volume1
FILES=${BENCH_LSL_FILES:-10000}
RUNS=${BENCH_LSL_RUNS:-3}
MEM_FILES=${BENCH_MEM_FILES:-100000}
LUN_SIZE=${BENCH_LUN_SIZE:-3G}
OUT=${BENCH_OUT:-$TOP/docs/benchmarks-attrcache.md}
export CSVFS_LAB=${BENCH_LAB:-rdpb}
export CSVFS_LAB_DAEMON_OPTS=${BENCH_DAEMON_OPTS:-}
unset CSVFS_BIN CSVFS_LAB_TOKEN

say() { echo "bench-lsl: $*" >&2; }
die() { say "$*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (csvfs-lab)"
for c in corosync jq nsenter; do command -v "$c" >/dev/null 2>&1 || die "$c not installed (make deps)"; done
[ -x "$LAB" ] && [ -x "$BIN/csvfs" ] || die "build first: make -j2"

S=$(mktemp -d /var/tmp/csvfs-bench-lsl.XXXXXX) || die "mktemp failed"
cleanup() { "$LAB" down >/dev/null 2>&1; rm -rf --one-file-system "$S"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

on() { timeout 600 "$LAB" exec "$1" -- "${@:2}"; }
status_json() { timeout 10 "$LAB" exec "$1" -- "$CSVCTL" status --json "$V" 2>/dev/null; }
daemon_pid() { ( eval "$("$LAB" env "$1" 2>/dev/null)"; echo "${CSVFS_LAB_CSVFS_PID:-}" ); }
ms_now() { date +%s%3N; }
mem_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{v[NR]=$1} END {print (NR ? v[int((NR+1)/2)] : "-")}'; }

"$LAB" down >/dev/null 2>&1
"$LAB" up -n 3 --size "$LUN_SIZE" >"$S/up.out" 2>&1 || { tail -5 "$S/up.out" >&2; die "lab up failed"; }
C=
for _ in $(seq 100); do
  C=$(status_json 1 | jq -r '.coordinator // empty' 2>/dev/null); C=${C#node}
  [ -n "$C" ] && break
  sleep 0.3
done
[ -n "$C" ] || die "no coordinator known"
P=1; [ "$C" = 1 ] && P=2
say "coordinator node$C, participant node$P; load $(cut -d' ' -f1-3 /proc/loadavg)"

# mkfiles NODE DIR N — N empty files in DIR (one process: touch with many names)
mkfiles() {
  on "$1" sh -c "mkdir -p '$2' && cd '$2' && seq -f 'f%06g' 0 $(( $3 - 1 )) | xargs touch"
}
# time_lsl NODE DIR — prints the ms of one `ls -l` (its output counted, not shown)
time_lsl() {
  local t0 t1 n
  t0=$(ms_now)
  n=$(on "$1" ls -l "$2" | wc -l)
  t1=$(ms_now)
  [ "$n" -gt "$FILES" ] || say "ls -l $2 on node$1 listed $n lines, expected $FILES and a total"
  echo "$(( t1 - t0 ))"
}

: >"$S/lsl.tsv"
for run in $(seq 1 "$RUNS"); do
  d=$V/lsl$run
  mkfiles "$C" "$d" "$FILES" || die "creating $FILES files in $d failed"
  order="$C $P"; [ $(( run % 2 )) = 0 ] && order="$P $C"
  for k in $order; do
    role=coordinator; [ "$k" = "$P" ] && role=participant
    ms=$(time_lsl "$k" "$d")
    echo "$run $role $ms" >>"$S/lsl.tsv"
    say "run $run: ls -l of $FILES on $role: $ms ms"
  done
done

# ---- memory after many lookups on the participant ----------------------------------------
pp=$(daemon_pid "$P")
rss0=$(mem_kib "$pp" VmRSS)
per=1000
t0=$(ms_now)
for i in $(seq 0 $(( (MEM_FILES + per - 1) / per - 1 ))); do
  mkfiles "$C" "$V/mem/d$i" "$per" || die "creating $V/mem/d$i failed"
done
say "created $MEM_FILES files in $(( $(ms_now) - t0 )) ms"
t0=$(ms_now)
nstat=$(on "$P" sh -c "find '$V/mem' -type f | xargs stat -c %i | wc -l")
say "stat of $nstat files on node$P in $(( $(ms_now) - t0 )) ms"
rss1=$(mem_kib "$pp" VmRSS)
hwm1=$(mem_kib "$pp" VmHWM)
attr=$(status_json "$P" | jq -c '.attr_locks // {}' 2>/dev/null)
echo "$rss0 $rss1 $hwm1 $nstat $attr" >"$S/mem.txt"
say "participant daemon: VmRSS $rss0 -> $rss1 KiB, VmHWM $hwm1 KiB; attr_locks $attr"
"$LAB" down >/dev/null 2>&1

# ---- report ------------------------------------------------------------------------------
cm=$(awk '$2 == "coordinator" {print $3}' "$S/lsl.tsv" | median)
pm=$(awk '$2 == "participant" {print $3}' "$S/lsl.tsv" | median)
ratio=$(awk -v c="$cm" -v p="$pm" 'BEGIN { if (p > 0) printf "%d %%", 100 * c / p; else print "-" }')
{
  echo
  echo "## ls -l and memory (tests/bench/lsl.sh, $(date -u +%Y-%m-%d), commit $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null))"
  echo
  echo "\`BENCH_LSL_FILES=$FILES BENCH_LSL_RUNS=$RUNS BENCH_MEM_FILES=$MEM_FILES tests/bench/lsl.sh\`" \
       "(daemon options: ${CSVFS_LAB_DAEMON_OPTS:-none}); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| run | role | \`ls -l\` ms |"
  echo "|---|---|--:|"
  awk '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$S/lsl.tsv"
  echo
  echo "Median: coordinator $cm ms, participant $pm ms: participant / coordinator (speed) = **$ratio**."
  echo
  read -r a b h n j <"$S/mem.txt"
  echo "Participant daemon after \`stat\` of $n files (in directories of $per):" \
       "VmRSS $(( a / 1024 )) → $(( b / 1024 )) MiB, VmHWM $(( h / 1024 )) MiB; attribute locks $j."
} | tee -a "$OUT"
