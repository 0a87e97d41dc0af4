#!/usr/bin/env bash
# File lock benchmarks (docs/file-locks.md) — NOT a test: nothing here
# asserts on a number. On a 3-node lab, writes docs/benchmarks-file-locks.md:
#   1. an OFD lock + unlock pair, uncontended, on the coordinator and on a
#      participant (tests/helpers/lock_bench lat);
#   2. the handoff of one contended write lock between two nodes: how long
#      after the holder's unlock the waiter on the other node holds it
#      (lock_bench handoff, both participants, and participant/coordinator);
#   3. what QEMU pays: the wall time of `qemu-io -t none -c 'read 0 4k'` on a
#      qcow2 image (open with its lock bytes, one read, close) on a
#      participant, and of `qemu-img info`.
#
# Usage (root): make && tests/bench/file_locks.sh
#   BENCH_LOCK_COUNT=2000  lock+unlock pairs      BENCH_HANDOFFS=300  rounds per process
#   BENCH_QEMU_RUNS=20     qemu-io runs           BENCH_OUT=docs/benchmarks-file-locks.md
#   CSVFS_BIN=DIR          the daemon and tools to measure (e.g. an older build:
#                          its numbers go to BENCH_OUT as they are)
set -u
BUILD=${BUILD:-build}
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB=$TOP/$BUILD/bin/csvfs-lab
LB=$TOP/$BUILD/tests/lock_bench
COUNT=${BENCH_LOCK_COUNT:-2000}
HANDOFFS=${BENCH_HANDOFFS:-300}
QRUNS=${BENCH_QEMU_RUNS:-20}
OUT=${BENCH_OUT:-$TOP/docs/benchmarks-file-locks.md}
export CSVFS_LAB=benchfl
V=/ClusterStorage/Volume1
say() { echo "bench: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "needs root"; exit 1; }
[ -x "$LB" ] || { say "$LB missing (make $BUILD/tests/lock_bench)"; exit 1; }
S=$(mktemp -d /tmp/csvfs-bench-fl.XXXXXX)
cleanup() { "$LAB" down >/dev/null 2>&1; rm -rf "$S"; }
trap cleanup EXIT
"$LAB" down >/dev/null 2>&1
"$LAB" up -n 3 --size 1G >"$S/up.out" 2>&1 || { say "lab up failed"; tail -5 "$S/up.out" >&2; exit 1; }
on() { local k=$1; shift; timeout 300 "$LAB" exec "$k" -- "$@"; }
coord=
for i in $(seq 1 60); do
  coord=$(on 1 "$TOP/$BUILD/bin/csvctl" status --json 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]*\)".*/\1/p')
  [ -n "$coord" ] && break; sleep 0.5
done
[ -n "$coord" ] || { say "no coordinator"; exit 1; }
p1=$(( coord % 3 + 1 )); p2=$(( p1 % 3 + 1 ))
say "coordinator node$coord, participants node$p1 node$p2"
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" | head -1; }

# 1. uncontended
lat_c=$(on "$coord" "$LB" lat "$V/lat-c" "$COUNT")
lat_p=$(on "$p1" "$LB" lat "$V/lat-p" "$COUNT")
say "uncontended: coordinator $lat_c; participant $lat_p"

# 2. handoff between two nodes
handoff() {  # A B — both run, prints A's and B's result lines
  rm -f "$S/shm"
  on "$1" "$LB" handoff "$V/handoff" "$HANDOFFS" "$S/shm" 1 >"$S/h1" 2>&1 &
  local a=$!
  on "$2" "$LB" handoff "$V/handoff" "$HANDOFFS" "$S/shm" 2 >"$S/h2" 2>&1
  wait "$a"
  cat "$S/h1" "$S/h2"
}
ho_pp=$(handoff "$p1" "$p2")
ho_pc=$(handoff "$p1" "$coord")
say "handoff participant/participant: $(echo "$ho_pp" | tr '\n' ';')"
say "handoff participant/coordinator: $(echo "$ho_pc" | tr '\n' ';')"

# 3. QEMU
on "$p1" qemu-img create -q -f qcow2 "$V/vm.qcow2" 1G
qtime() {  # NODE CMD... — mean and best wall ms over QRUNS runs
  local k=$1; shift
  local i t0 t1 all=()
  for i in $(seq 1 "$QRUNS"); do
    t0=$(date +%s%N); on "$k" "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    all+=($(( (t1 - t0) / 1000 )))
  done
  printf '%s\n' "${all[@]}" | sort -n | awk '{ a[NR] = $1; s += $1 } END { printf "median %.1f ms, best %.1f ms", a[int((NR + 1) / 2)] / 1000, a[1] / 1000 }'
}
q_io=$(qtime "$p1" qemu-io -t none -f qcow2 -c 'read 0 4k' "$V/vm.qcow2")
q_info=$(qtime "$p1" qemu-img info "$V/vm.qcow2")
q_base=$(qtime "$p1" true)
say "qemu-io open+read+close on a participant: $q_io; qemu-img info: $q_info; lab exec alone: $q_base"

rev=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null)
bin=${CSVFS_BIN:-$TOP/$BUILD/bin}
{
  echo "# Benchmarks: cluster-wide file locks"
  echo
  echo "Written by \`tests/bench/file_locks.sh\` (\`make bench\`) on $(date -u +%Y-%m-%d) at $rev,"
  echo "binaries from \`$bin\`; a 3-node csvfs-lab on one machine ($(nproc) cores,"
  echo "load $(cut -d' ' -f1-3 /proc/loadavg) at the end). Not a test: nothing asserts on these."
  echo
  echo "## Uncontended OFD lock + unlock (one pair = two requests)"
  echo
  echo "| where | pairs | p50 | p99 | mean |"
  echo "|---|--:|--:|--:|--:|"
  for r in "coordinator:$lat_c" "participant:$lat_p"; do
    l=${r#*:}
    echo "| ${r%%:*} | $(echo "$l" | field count) | $(echo "$l" | field p50_us) µs | $(echo "$l" | field p99_us) µs | $(echo "$l" | field mean_us) µs |"
  done
  echo
  echo "## Handoff of a contended write lock (unlock on one node → the waiter on the other holds it)"
  echo
  echo "| pair | waiter | handoffs | p50 | p99 |"
  echo "|---|---|--:|--:|--:|"
  echo "$ho_pp" | while read -r _ _ id rest; do
    echo "| participant / participant | ${id#id=} | $(echo " $rest" | field count) | $(echo " $rest" | field p50_us) µs | $(echo " $rest" | field p99_us) µs |"
  done
  echo "$ho_pc" | while read -r _ _ id rest; do
    w=participant; [ "${id#id=}" = 2 ] && w=coordinator
    echo "| participant / coordinator | $w | $(echo " $rest" | field count) | $(echo " $rest" | field p50_us) µs | $(echo " $rest" | field p99_us) µs |"
  done
  echo
  echo "## What QEMU pays on a participant ($QRUNS runs each, wall time including \`csvfs-lab exec\`)"
  echo
  echo "| command | time |"
  echo "|---|---|"
  echo "| \`qemu-io -t none -f qcow2 -c 'read 0 4k'\` (open with lock bytes, read, close) | $q_io |"
  echo "| \`qemu-img info\` (open read-only with lock bytes, close) | $q_info |"
  echo "| \`csvfs-lab exec true\` (the exec alone) | $q_base |"
} >"$OUT"
say "wrote $OUT"
