#!/usr/bin/env bash
# Snapshot benchmark (docs/snapshot.md) — NOT a test: nothing here asserts on
# a number. For each cluster size, a lab whose LUN is an image on a
# loop-mounted XFS with reflink=1; fio (4 KiB random writes, O_DIRECT,
# libaio, iodepth 4) runs on every node while csvctl takes snapshots with the
# reflink hook (tools/hooks/reflink.sh). Per snapshot: the time until every
# node was frozen, the time frozen (checkpoint, hook, resume), csvctl's own
# wall time from start to exit, and the longest write stall: from the
# daemons' logs (the longest a change waited at a node's freeze gate) and,
# independently, fio's largest completion latency on any node.
# Writes docs/benchmarks-snapshot.md.
#
# Usage (root): make && tests/bench/snapshot.sh   (make bench runs it)
# Knobs: BENCH_NODES="3 5", BENCH_SNAPS=5 (snapshots per size),
#        BENCH_SNAP_OUT=docs/benchmarks-snapshot.md
set -u
BUILD=${BUILD:-build}
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="$TOP/$BUILD/bin"
LAB="$BIN/csvfs-lab"
CTL="$BIN/csvctl"
HOOK="$TOP/tools/hooks/reflink.sh"
V=/ClusterStorage/Volume1
NODES_LIST=${BENCH_NODES:-3 5}
SNAPS=${BENCH_SNAPS:-5}
OUT=${BENCH_SNAP_OUT:-$TOP/docs/benchmarks-snapshot.md}
export CSVFS_LAB=benchs
unset CSVFS_BIN CSVFS_LAB_DAEMON_OPTS

[ "$(id -u)" -eq 0 ] || { echo "snapshot bench: needs root" >&2; exit 1; }
for c in corosync mkfs.xfs fio; do
  command -v "$c" >/dev/null || { echo "snapshot bench: $c missing (make deps)" >&2; exit 1; }
done
S=$(mktemp -d /tmp/csvfs-bench-snap.XXXXXX)
XFS=$S/xfs
cleanup() {
  "$LAB" down >/dev/null 2>&1
  mountpoint -q "$XFS" && umount "$XFS"
  rm -rf --one-file-system "$S"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$LAB" down >/dev/null 2>&1
mkdir -p "$XFS"
truncate -s 8G "$S/xfs.img"
mkfs.xfs -q -m reflink=1 "$S/xfs.img" && mount -o loop "$S/xfs.img" "$XFS" || exit 1

field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" | head -1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rows=""

bench_size() {  # bench_size N
  local n=$1 k s t0 t1 reply coord
  rm -f "$XFS"/*.img
  truncate -s 2G "$XFS/lun.img"
  "$LAB" up -n "$n" --lun "$XFS/lun.img" >"$S/up.out" 2>&1 || { cat "$S/up.out" >&2; return 1; }
  for ((k = 1; k <= n; k++)); do
    timeout 200 "$LAB" exec "$k" -- fio --name=bench$k --filename="$V/fio.$k" --size=256M --bs=4k \
      --rw=randwrite --direct=1 --ioengine=libaio --iodepth=4 --time_based --runtime=$((SNAPS * 3 + 8)) \
      --output-format=json >"$S/fio.$n.$k.json" 2>"$S/fio.$n.$k.err" &
  done
  sleep 4
  for ((s = 1; s <= SNAPS; s++)); do
    t0=$(now_ms)
    reply=$(timeout 60 "$LAB" exec 1 -- "$CTL" snapshot --json --hook "$HOOK" --name "b$n-$s" "$V")
    t1=$(now_ms)
    coord=$(printf '%s' "$reply" | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p')
    rows+="| $n | $s | $(printf '%s' "$reply" | field freeze_wait_ms) | $(printf '%s' "$reply" | field frozen_ms) | $(printf '%s' "$reply" | field hook_ms) | $(printf '%s' "$reply" | field longest_write_stall_ms) | $((t1 - t0)) | $coord |"$'\n'
    rm -f "$XFS/b$n-$s.img"
    sleep 2
  done
  wait
  "$LAB" down --save-logs "$S/logs.$n" >/dev/null 2>&1
  # The longest wait at any node's gate, from the daemons' thaw lines.
  stall_log=$(cat "$S/logs.$n"/node*-csvfs.log 2>/dev/null | sed -n 's/.*the longest for \([0-9]*\) ms.*/\1/p' | sort -n | tail -1)
  stall_fio=$(python3 -c 'import json,sys
print(max(json.load(open(f))["jobs"][0]["write"]["clat_ns"]["max"] for f in sys.argv[1:]))' "$S"/fio.$n.*.json 2>/dev/null)
  stalls+="| $n | ${stall_log:-?} | $(awk -v ns="${stall_fio:-0}" 'BEGIN {printf "%.1f", ns / 1e6}') |"$'\n'
}

stalls=""
for n in $NODES_LIST; do bench_size "$n"; done

{
  echo "# Snapshot benchmark"
  echo
  echo "Written by \`tests/bench/snapshot.sh\` (\`make bench\`) on $(date -u +%Y-%m-%d), $(nproc) CPUs,"
  echo "$(uname -r). A csvfs-lab whose LUN is an image on a loop-mounted XFS with \`reflink=1\`;"
  echo "fio 4 KiB random writes (O_DIRECT, libaio, iodepth 4) on every node while \`csvctl"
  echo "snapshot\` on node1 takes $SNAPS snapshots with \`tools/hooks/reflink.sh\`. Nothing"
  echo "here is asserted; numbers vary with the machine and its load."
  echo
  echo "Per snapshot (ms): *to freeze* — from the request until every node had let go of"
  echo "its \`freeze\` PR; *frozen* — from then until the thaw (checkpoint, hook, resume);"
  echo "*longest write stall* — the longest any change waited at any node's freeze gate, as"
  echo "csvctl reports it (every node tells the coordinator when it thaws);"
  echo "*csvctl* — the whole command, process start to exit, on a node's shell."
  echo
  echo "| nodes | # | to freeze | frozen | hook | longest write stall | csvctl | coordinator |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s' "$rows"
  echo
  echo "Longest write stall per cluster size (ms): the longest any change waited at a"
  echo "node's freeze gate (the daemons' logs), and the largest fio completion latency on"
  echo "any node during the whole run (it includes ordinary latency, not only stalls)."
  echo
  echo "| nodes | longest gate wait (logs) | largest fio latency |"
  echo "|---|---|---|"
  printf '%s' "$stalls"
} >"$OUT"
echo "snapshot bench: wrote $OUT"
