#!/usr/bin/env bash
# Cluster benchmarks (design.md §10) — NOT a test: nothing here asserts on a
# number. One run measures, side by side on this machine, and writes
# docs/benchmarks-cluster.md:
#   1. fio, O_DIRECT + libaio: 1 MiB sequential write/read and 4 KiB random
#      read/write at iodepth 32 on (a) a raw image file on the same host
#      filesystem as the lab's LUN, (b) a file on the coordinator's mount,
#      (c) a file on a participant's mount, (d) another file on the same
#      participant's mount while it is redirected (csvctl redirect on: its
#      data goes through the coordinator, design.md §7); every file is
#      written fully once first, so the random writes are overwrites.
#   2. metadata: create (open O_CREAT|O_EXCL + close), stat and unlink rates
#      on the coordinator and on a participant (tests/helpers/bench_create);
#      (metaagg) the creates of one participant alone, then of 3 participants
#      at once, each in a directory of its own (in the first lab with more
#      than 3 nodes).
#   3. dlm-glue lock latency in a --no-mount lab (tests/helpers/dg_bench):
#      uncontended, cached (re-request of a resource held compatibly) and
#      contended PR/EX ping-pong; 3 and 5 nodes.
#   4. a planned coordinator move (csvctl move), and takeover after kill -9
#      (a) of the coordinator's csvfs only, (b) of the whole node (corosync,
#      then csvfs; the self-fence deadline), (c) of a node cut off from the
#      others and fenced by the lab's fence agent (csvfs-lab fence); 3 and 5
#      nodes.
#   5. a participant's LUN path fails, then hangs, under fio (a lab with
#      --paths): time to redirected, time back to direct, longest stall.
#
# Usage (root): make && make build/tests/dg_bench build/tests/bench_create
#               tests/bench/cluster.sh
# It uses its own lab (--lab benchc, or BENCH_LAB) and always takes it down.
#
# Knobs (environment):
#   BENCH_SIZE_MB=512        size of each fio file
#   BENCH_RUNTIME=10         seconds per time-based fio job
#   BENCH_RAMP=1             fio ramp_time (s), not counted
#   BENCH_SEQ_QD=8           iodepth of the 1 MiB sequential jobs (random: 32)
#   BENCH_LUN_SIZE=2G        the lab's scratch LUN
#   BENCH_META_COUNT=5000    at most this many creates / unlinks per node
#   BENCH_META_MS=4000       ... and at most this long (stat: the same time)
#   BENCH_LOCK_COUNT=500     lock+unlock pairs (uncontended, cached)
#   BENCH_PP_ROUNDS=300      ping-pong rounds
#   BENCH_TAKEOVER_ROUNDS=3  rounds per kind and cluster size
#   BENCH_NODES="3 5"        cluster sizes for the lock and takeover parts
#   BENCH_TAKEOVER_KINDS="move csvfs node fenced"  which role changes the takeover part runs
#   BENCH_FENCE_DEADLINE=4000  fence_deadline= of the mounted labs (ms)
#   BENCH_PATHFAIL_SECS=14   pathfail: fio's run; the fault 3 s in, for 5 s
#   BENCH_AGG_PARTICIPANTS=3 metaagg: participants creating at once
#   BENCH_PARTS="fio meta metaagg takeover locks pathfail"  which parts to run
#   BENCH_OUT=docs/benchmarks-cluster.md
set -u
BUILD=${BUILD:-build}
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="$TOP/$BUILD/bin"
TBIN="$TOP/$BUILD/tests"
LAB="$BIN/csvfs-lab"
CSVCTL="$BIN/csvctl"
DGB="$TBIN/dg_bench"
BC="$TBIN/bench_create"
V=/ClusterStorage/Volume1

SIZE_MB=${BENCH_SIZE_MB:-512}
RT=${BENCH_RUNTIME:-10}
RAMP=${BENCH_RAMP:-1}
SEQ_QD=${BENCH_SEQ_QD:-8}
LUN_SIZE=${BENCH_LUN_SIZE:-2G}
META_COUNT=${BENCH_META_COUNT:-5000}
META_MS=${BENCH_META_MS:-4000}
LOCK_COUNT=${BENCH_LOCK_COUNT:-500}
PP_ROUNDS=${BENCH_PP_ROUNDS:-300}
TK_ROUNDS=${BENCH_TAKEOVER_ROUNDS:-3}
NODES_LIST=${BENCH_NODES:-3 5}
FENCE_DEADLINE=${BENCH_FENCE_DEADLINE:-4000}
PARTS=${BENCH_PARTS:-fio meta metaagg takeover locks pathfail}
TK_KINDS=${BENCH_TAKEOVER_KINDS:-move csvfs node fenced}
AGG_PARTS=${BENCH_AGG_PARTICIPANTS:-3}
PF_SECS=${BENCH_PATHFAIL_SECS:-14}
OUT=${BENCH_OUT:-$TOP/docs/benchmarks-cluster.md}

export CSVFS_LAB=${BENCH_LAB:-benchc}   # another name when several people share the machine
unset CSVFS_BIN CSVFS_LAB_TOKEN
# Every daemon the lab starts (also on "start" after a kill) gets this.
export CSVFS_LAB_DAEMON_OPTS="fence_deadline=$FENCE_DEADLINE"

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (csvfs-lab)"
for c in corosync fio jq nsenter unshare ip; do
  command -v "$c" >/dev/null 2>&1 || die "$c not installed (make deps)"
done
for f in "$LAB" "$CSVCTL" "$BIN/csvfs" "$DGB" "$BC"; do
  [ -x "$f" ] || die "$f missing: make -j2 && make $BUILD/tests/dg_bench $BUILD/tests/bench_create"
done
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

# Scratch next to the lab's scratch LUNs (/var/tmp/csvfs-lab), on the same
# host filesystem, so the raw image and the LUN sit on the same storage.
mkdir -p /var/tmp
S=$(mktemp -d /var/tmp/csvfs-bench.XXXXXX) || die "mktemp failed"
BGPIDS=()
cleanup() {
  local p
  touch "$S"/stop.all 2>/dev/null
  for p in "${BGPIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null; done
  "$LAB" down >/dev/null 2>&1
  rm -rf --one-file-system "$S"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The lab's fence agent as the daemons run it (fence_cmd=PATH NODEID NAME):
# csvfs-lab fence in this script's namespaces when $S/fence-mode says ok;
# otherwise it fails at once and the self-fence deadline applies.
cat >"$S/fence-agent" <<EOF
#!/bin/sh
[ "\$(cat '$S/fence-mode' 2>/dev/null)" = ok ] || exit 1
exec nsenter --mount=/proc/$$/ns/mnt --net=/proc/$$/ns/net -- '$LAB' --lab '$CSVFS_LAB' fence "\$2"
EOF
chmod +x "$S/fence-agent"
echo fail >"$S/fence-mode"
export CSVFS_LAB_DAEMON_OPTS="$CSVFS_LAB_DAEMON_OPTS,fence_cmd=$S/fence-agent,fence_timeout=10000"

ms_now() { date +%s%3N; }
T_START=$(ms_now)
# The machine may be shared: note its load (1-min average) at every phase
# start and which other labs are up, for the report.
note_load() { echo "$1 $(cut -d' ' -f1 /proc/loadavg) $(ls /run/csvfs-lab 2>/dev/null | grep -vx "$CSVFS_LAB" | grep -v '^lock$' | tr '\n' ' ')" >>"$S/load.txt"; }
LOGS=()          # anomalies, one line each, for the report

# ---- lab helpers ----------------------------------------------------------------------
on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
status_json() { timeout 5 "$LAB" exec "$1" -- "$CSVCTL" status --json 2>/dev/null; }
coord_of() { status_json "$1" | jq -r '.coordinator // empty' 2>/dev/null; }
lab_down() { "$LAB" down >/dev/null 2>&1; }
lab_up() {  # lab_up N [--no-mount]
  local n=$1; shift
  lab_down
  local t0; t0=$(ms_now)
  if [ "$*" = --no-mount ]; then
    "$LAB" up -n "$n" --no-mount >"$S/up.out" 2>&1
  else
    "$LAB" up -n "$n" --size "$LUN_SIZE" >"$S/up.out" 2>&1
  fi
  local rc=$?
  note_load "lab-up-$n${*:+-nomount}"
  [ $rc -eq 0 ] || { say "lab up -n $n $* failed:"; tail -5 "$S/up.out" >&2; LOGS+=("lab up -n $n $* failed (rc $rc)"); return 1; }
  say "lab up -n $n $* in $(( $(ms_now) - t0 )) ms"
  local tok cons
  tok=$(on 1 corosync-cmapctl -g runtime.config.totem.token 2>/dev/null | sed 's/.*= //')
  cons=$(on 1 corosync-cmapctl -g runtime.config.totem.consensus 2>/dev/null | sed 's/.*= //')
  echo "$n nodes${*:+ ($*)}: token $tok ms, consensus $cons ms" >>"$S/corosync.txt"
}
# stable N — every node mounted, up, and all agree on one coordinator (60 s max).
stable() {
  local n=$1 end=$(( $(date +%s) + 60 )) k c first ok
  while [ "$(date +%s)" -lt "$end" ]; do
    ok=1 first=
    for k in $(seq 1 "$n"); do
      c=$(status_json "$k" | jq -r --argjson n "$n" \
        'if ((.nodes // []) | map(select(.state == "up" and .mounted == true)) | length) == $n then (.coordinator // "") else "" end' 2>/dev/null)
      [ -n "$c" ] || { ok=0; break; }
      [ -z "$first" ] && first=$c
      [ "$c" = "$first" ] || { ok=0; break; }
    done
    [ $ok = 1 ] && { echo "$first"; return 0; }
    sleep 0.3
  done
  return 1
}
daemon_pid() { ( eval "$("$LAB" env "$1" 2>/dev/null)"; echo "${CSVFS_LAB_CSVFS_PID:-}" ); }
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
HZ=$(getconf CLK_TCK)

# ---- 1. fio ---------------------------------------------------------------------------------
# fio_run TAG WHERE FILE RW BS QD [layout] — WHERE: host or a node number.
# Appends "TAG RW MiB/s IOPS p50_us p99_us cpu_local_s cpu_coord_s" to $S/fio.tsv.
fio_run() {
  local tag=$1 where=$2 file=$3 rw=$4 bs=$5 qd=$6 layout=${7:-}
  local args=(fio --name="$tag" --filename="$file" --size="${SIZE_MB}M" --rw="$rw" --bs="$bs"
    --iodepth="$qd" --direct=1 --ioengine=libaio --group_reporting
    --output-format=json --output="$S/fio-$tag.json")
  if [ -n "$layout" ]; then
    args+=(--fallocate=none --end_fsync=1)
  else
    args+=(--time_based --runtime="$RT" --ramp_time="$RAMP" --norandommap --randrepeat=0)
  fi
  echo "${args[*]}" >>"$S/fio-commands.txt"
  local lp="" cp0="" l0=0 c0=0
  if [ "$where" != host ]; then
    lp=$(daemon_pid "$where"); cp0=$(daemon_pid "$CN")
    l0=$(cpu_ticks "$lp"); c0=$(cpu_ticks "$cp0")
  fi
  local rc
  if [ "$where" = host ]; then
    timeout $(( RT + RAMP + 180 )) "${args[@]}" >/dev/null 2>"$S/fio-$tag.err"; rc=$?
  else
    timeout $(( RT + RAMP + 180 )) "$LAB" exec "$where" -- "${args[@]}" >/dev/null 2>"$S/fio-$tag.err"; rc=$?
  fi
  local lcpu=- ccpu=-
  if [ "$where" != host ]; then
    lcpu=$(awk -v a="$l0" -v b="$(cpu_ticks "$lp")" -v hz="$HZ" 'BEGIN{printf "%.1f", (b-a)/hz}')
    if [ "$where" != "$CN" ]; then
      ccpu=$(awk -v a="$c0" -v b="$(cpu_ticks "$cp0")" -v hz="$HZ" 'BEGIN{printf "%.1f", (b-a)/hz}')
    fi
  fi
  local dir=write; case $rw in read|randread) dir=read ;; esac
  local vals
  vals=$(jq -r ".jobs[0].$dir | [(.bw_bytes/1048576), .iops, (.clat_ns.percentile[\"50.000000\"] // 0)/1000, (.clat_ns.percentile[\"99.000000\"] // 0)/1000] | map(tostring) | join(\" \")" \
    "$S/fio-$tag.json" 2>/dev/null)
  if [ $rc -ne 0 ] || [ -z "$vals" ]; then
    LOGS+=("fio $tag ($rw on $where) failed: rc $rc; $(head -c 300 "$S/fio-$tag.err" | tr '\n' ' ')")
    vals="0 0 0 0"
  fi
  echo "$tag $rw $vals $lcpu $ccpu" >>"$S/fio.tsv"
  say "fio $tag: $vals (cpu local $lcpu s, coordinator $ccpu s)"
}

# redirected ON|OFF — the participant's user redirect (a lease longer than any job).
redirected() {
  if [ "$1" = on ]; then on "$PN" "$CSVCTL" redirect on --for 2h >/dev/null 2>&1
  else on "$PN" "$CSVCTL" redirect off >/dev/null 2>&1; fi || LOGS+=("csvctl redirect $1 on node$PN failed")
}

run_fio() {
  local raw="$S/raw.img" cf="$V/bench-coordinator.img" pf="$V/bench-participant.img" rf="$V/bench-redirected.img"
  # lay out every file once (written fully; the random jobs overwrite)
  fio_run layout-raw host "$raw" write 1M 8 layout
  fio_run layout-coordinator "$CN" "$cf" write 1M 8 layout
  fio_run layout-participant "$PN" "$pf" write 1M 8 layout
  redirected on
  fio_run layout-redirected "$PN" "$rf" write 1M 8 layout
  redirected off
  local w spec rw bs qd
  for spec in "seqwrite write 1M $SEQ_QD" "seqread read 1M $SEQ_QD" "randread randread 4k 32" "randwrite randwrite 4k 32"; do
    set -- $spec; w=$1 rw=$2 bs=$3 qd=$4
    fio_run "$w-raw" host "$raw" "$rw" "$bs" "$qd"
    fio_run "$w-coordinator" "$CN" "$cf" "$rw" "$bs" "$qd"
    fio_run "$w-participant" "$PN" "$pf" "$rw" "$bs" "$qd"
    redirected on
    fio_run "$w-redirected" "$PN" "$rf" "$rw" "$bs" "$qd"
    redirected off
  done
  rm -f "$raw"
  on "$CN" rm -f "$cf" "$pf" "$rf"
}

# ---- 2. metadata -----------------------------------------------------------------------------
run_meta() {
  local k role
  for role in coordinator participant; do
    k=$CN; [ $role = participant ] && k=$PN
    on "$k" mkdir -p "$V/meta-$role" || { LOGS+=("mkdir meta-$role on node$k failed"); continue; }
  done
  local op
  for op in create stat unlink; do
    for role in coordinator participant; do
      k=$CN; [ $role = participant ] && k=$PN
      local extra=(--count "$META_COUNT")
      [ $op = stat ] && extra=(--count 10000000)
      echo "bench_create $op $V/meta-$role ${extra[*]} --max-ms $META_MS   # on node$k ($role)" >>"$S/meta-commands.txt"
      local line
      line=$(timeout $(( META_MS / 1000 + 120 )) "$LAB" exec "$k" -- "$BC" "$op" "$V/meta-$role" "${extra[@]}" --max-ms "$META_MS" 2>"$S/meta-$op-$role.err" | grep '^result')
      [ -n "$line" ] || { LOGS+=("bench_create $op on node$k ($role) failed: $(head -c 300 "$S/meta-$op-$role.err")"); line="result $op n=0 secs=0 rate=0 p50=0 p99=0 max=0"; }
      [ -s "$S/meta-$op-$role.err" ] && LOGS+=("bench_create $op on node$k ($role): $(head -c 300 "$S/meta-$op-$role.err" | tr '\n' ' ')")
      echo "$role $line" >>"$S/meta.tsv"
      say "meta $role: $line"
    done
  done
  on "$CN" rmdir "$V/meta-coordinator" "$V/meta-participant" 2>/dev/null
}

# 2b. Aggregate creates: the first AGG_PARTS participants (not CN) of an
# n-node lab, one alone, then all at once, each in a directory of its own.
# metaagg.tsv: "single|parallel node=K n=N secs=S rate=R p50=MS p99=MS".
run_meta_agg() {
  local n=$1 k parts=() tag line
  for k in $(seq 1 "$n"); do
    [ "$k" = "$CN" ] && continue
    [ ${#parts[@]} -lt "$AGG_PARTS" ] && parts+=("$k")
  done
  [ ${#parts[@]} -eq "$AGG_PARTS" ] || { LOGS+=("metaagg: a $n-node lab has fewer than $AGG_PARTS participants"); return; }
  AGG_N=$n AGG_CN=$CN AGG_NODES="${parts[*]}"
  for k in "${parts[@]}"; do on "$k" mkdir -p "$V/agg-single-$k" "$V/agg-parallel-$k" || LOGS+=("metaagg: mkdir on node$k failed"); done
  agg_one() {  # agg_one TAG K: one bench_create run on node K, its result line
    echo "bench_create create $V/agg-$1-$2 --count $META_COUNT --max-ms $META_MS   # on node$2 ($1)" >>"$S/metaagg-commands.txt"
    timeout $(( META_MS / 1000 + 120 )) "$LAB" exec "$2" -- "$BC" create "$V/agg-$1-$2" --count "$META_COUNT" \
      --max-ms "$META_MS" 2>"$S/metaagg-$1-$2.err" | grep '^result' >"$S/metaagg-$1-$2.out"
  }
  agg_one single "${parts[0]}"
  local pids=()
  for k in "${parts[@]}"; do agg_one parallel "$k" & pids+=($!); done
  wait "${pids[@]}"
  for tag in single parallel; do
    for k in "${parts[@]}"; do
      [ $tag = single ] && [ "$k" != "${parts[0]}" ] && continue
      line=$(cat "$S/metaagg-$tag-$k.out" 2>/dev/null)
      [ -n "$line" ] || { LOGS+=("metaagg: bench_create $tag on node$k failed: $(head -c 300 "$S/metaagg-$tag-$k.err")"); continue; }
      echo "$tag node=$k ${line#result create }" >>"$S/metaagg.tsv"
      say "metaagg $tag node$k: $line"
    done
  done
  for k in "${parts[@]}"; do on "$CN" rm -rf "$V/agg-single-$k" "$V/agg-parallel-$k" 2>/dev/null; done
}

# ---- 4. takeover --------------------------------------------------------------------------------
# start_stall_probes NODE SECS TAG — what an application on NODE waits during a
# role change: fio, one O_DIRECT 4 KiB random write at a time (psync, 200/s)
# over a written 64 MiB file (its longest completion = the longest data
# stall), and a loop of creates (O_CREAT|O_EXCL, 100/s) timing each one
# (the longest metadata stall). Both run SECS seconds; sets PROBE_PIDS.
start_stall_probes() {
  local k=$1 secs=$2 tag=$3
  on "$k" sh -c "[ -s '$V/stall-n$k.img' ] || dd if=/dev/zero of='$V/stall-n$k.img' bs=1M count=64 oflag=direct conv=fsync status=none"
  on "$k" mkdir -p "$V/stall-meta-$tag"
  on "$k" fio --name=stall --filename="$V/stall-n$k.img" --size=64M --rw=randwrite --bs=4k --direct=1 \
    --ioengine=psync --rate_iops=200 --time_based --runtime="$secs" --output-format=json \
    --output="$S/$tag-stall-fio.json" >/dev/null 2>"$S/$tag-stall-fio.err" &
  PROBE_PIDS=("$!")
  on "$k" bash -c 'set -C; d=$1; end=$((EPOCHSECONDS + $2)); max=0 i=0 fails=0
    while [ "$EPOCHSECONDS" -lt "$end" ]; do
      t0=${EPOCHREALTIME/./}; : >"$d/m$i" 2>/dev/null || fails=$((fails + 1)); t1=${EPOCHREALTIME/./}
      echo "c $t0 $((t1 - t0))"
      [ $((t1 - t0)) -gt "$max" ] && max=$((t1 - t0)); i=$((i + 1)); sleep 0.01
    done; echo "max_us=$max creates=$i fails=$fails"' sh "$V/stall-meta-$tag" "$secs" >"$S/$tag-stall-meta.out" 2>&1 &
  PROBE_PIDS+=("$!")
}

# stall_results NODE TAG T0_NS — "IO_MS META_MS BEFORE_MS" once the probes are
# done ("-" unknown). BEFORE_MS: the longest create that ended before T0 (the
# command's start): what the machine's load alone costs a create, the floor
# under META_MS on a shared machine.
stall_results() {
  local k=$1 tag=$2 t0us=$(( $3 / 1000 )) io meta before
  io=$(jq -r '.jobs[0].write.clat_ns.max // empty' "$S/$tag-stall-fio.json" 2>/dev/null | awk '{ printf "%d", $1 / 1e6 }')
  meta=$(sed -n 's/.*max_us=\([0-9]*\).*/\1/p' "$S/$tag-stall-meta.out" | awk '{ printf "%d", $1 / 1e3 }')
  before=$(awk -v t0="$t0us" '$1 == "c" && $2 + $3 < t0 && $3 > m { m = $3 } END { if (m != "") printf "%d", m / 1e3 }' "$S/$tag-stall-meta.out")
  grep -q 'fails=[1-9]' "$S/$tag-stall-meta.out" && LOGS+=("$tag: creates failed on node$k: $(cat "$S/$tag-stall-meta.out")")
  [ "$(jq -r '.jobs[0].error // 0' "$S/$tag-stall-fio.json" 2>/dev/null)" = 0 ] ||
    LOGS+=("$tag: fio on node$k reported an error: $(head -c 200 "$S/$tag-stall-fio.err")")
  on "$k" rm -rf "$V/stall-meta-$tag" 2>/dev/null
  echo "${io:--} ${meta:--} ${before:--}"
}

# start_watcher NODE OLD TAG OUT — on NODE, polls csvctl status until the
# coordinator is not OLD, then creates (O_CREAT|O_EXCL) until one succeeds.
start_watcher() {
  local w=$1 old=$2 tag=$3 wout=$4
  timeout 100 "$LAB" exec "$w" -- sh -c '
    old=$1 csvctl=$2 v=$3 tag=$4
    end=$(( $(date +%s) + 90 )); echo "watching $(date +%s%N)"
    while [ "$(date +%s)" -lt "$end" ]; do
      c=$(timeout 2 "$csvctl" status --json 2>/dev/null | sed -n "s/.*\"coordinator\":\"\([^\"]*\)\".*/\1/p")
      if [ -n "$c" ] && [ "$c" != "$old" ]; then echo "seen $(date +%s%N) $c"; break; fi
      sleep 0.02
    done
    i=0
    while [ "$(date +%s)" -lt "$end" ]; do
      i=$((i + 1))
      if (set -C; : > "$v/$tag.$i") 2>/tmp/.bench-create-err.$$; then echo "created $(date +%s%N) after $i attempt(s)"; rm -f /tmp/.bench-create-err.$$; exit 0; fi
      echo "create-failed $(date +%s%N) $(cat /tmp/.bench-create-err.$$)"
      sleep 0.02
    done
    rm -f /tmp/.bench-create-err.$$; echo timeout; exit 1' sh "$old" "$CSVCTL" "$V" "$tag" >"$wout" 2>&1 &
  WATCHER_PID=$!
  BGPIDS+=("$WATCHER_PID")
}

# detected_ms K CN T0NS — ms from T0NS to when node K's daemon logged corosync's
# verdict that node CN is down (its "left the group (node down)" line); - if none.
detected_ms() {
  local line ts ms
  line=$(grep "membership: node $2 (node$2) pid [0-9]* left the group (node down)" \
    "/run/csvfs-lab/$CSVFS_LAB/nodes/$1/csvfs.log" 2>/dev/null | tail -1)
  ts=${line%% *}
  ms=$(date -d "$ts" +%s%3N 2>/dev/null) || { echo -; return; }
  [ -n "$ts" ] && [ "$ms" -ge $(( $3 / 1000000 )) ] && echo $(( ms - $3 / 1000000 )) || echo -
}

# takeover_round N KIND ROUND — KIND csvfs (daemon only) or node (corosync, then csvfs).
takeover_round() {
  local n=$1 kind=$2 round=$3 old cn p k
  old=$(stable "$n") || { LOGS+=("takeover $n/$kind/$round: cluster not stable before the kill"); return 1; }
  cn=${old#node}
  # Two watchers, on the first two nodes that are not the coordinator: at
  # most one of them becomes the new coordinator, the other one stays a
  # participant, and its times are the ones reported.
  local ws=() wps=() w
  for k in $(seq 1 "$n"); do [ "$k" != "$cn" ] && ws+=("$k"); [ ${#ws[@]} -ge 2 ] && break; done
  for w in "${ws[@]}"; do
    start_watcher "$w" "$old" "tk-$n-$kind-$round-n$w" "$S/tk-$n-$kind-$round-n$w.out"
    wps+=("$WATCHER_PID")
  done
  for w in "${ws[@]}"; do
    for k in $(seq 1 50); do grep -q '^watching' "$S/tk-$n-$kind-$round-n$w.out" 2>/dev/null && break; sleep 0.1; done
  done
  # the probes on the last watcher: the election prefers the lowest nodeid,
  # so it is the one most likely to stay a participant
  local pk=${ws[-1]} psecs=6 tag="tk-$n-$kind-$round"
  [ "$kind" = node ] && psecs=$(( FENCE_DEADLINE / 1000 + 6 ))
  start_stall_probes "$pk" "$psecs" "$tag"
  sleep 1
  local t0 t1
  t0=$(date +%s%N)
  if [ "$kind" = move ]; then
    timeout 30 "$LAB" exec "$cn" -- "$CSVCTL" move >>"$S/tk-lab.out" 2>&1
  elif [ "$kind" = csvfs ]; then
    "$LAB" kill "$cn" csvfs >>"$S/tk-lab.out" 2>&1
  elif [ "$kind" = fenced ]; then
    # cut off, still running: the survivors' fence agent powers it off
    "$LAB" partition "$cn" >>"$S/tk-lab.out" 2>&1
  else
    # corosync first: "kill NODE all" kills csvfs first, and its corosync
    # then reports a clean CPG leave — the others would not need to wait for
    # detection and fencing, so it would not be a node crash.
    "$LAB" kill "$cn" corosync >>"$S/tk-lab.out" 2>&1
    "$LAB" kill "$cn" csvfs >>"$S/tk-lab.out" 2>&1
  fi
  t1=$(date +%s%N)
  for w in "${wps[@]}"; do wait "$w" 2>/dev/null; done
  for w in "${PROBE_PIDS[@]}"; do wait "$w" 2>/dev/null; done
  local stalls; stalls=$(stall_results "$pk" "$tag" "$t0")
  # the watcher that stayed a participant (the other one may be the new coordinator)
  local seen="" created="" new="" p="" wout cand
  for w in "${ws[@]}"; do
    wout="$S/tk-$n-$kind-$round-n$w.out"
    cand=$(sed -n 's/^seen [0-9]* \(.*\)/\1/p' "$wout" | head -1)
    [ -n "$cand" ] && new=$cand
    if [ -n "$cand" ] && [ "$cand" != "node$w" ] && [ -z "$p" ]; then
      p=$w
      seen=$(sed -n 's/^seen \([0-9]*\) .*/\1/p' "$wout" | head -1)
      created=$(sed -n 's/^created \([0-9]*\) .*/\1/p' "$wout" | head -1)
    fi
  done
  [ -n "$p" ] || { p=${ws[0]}; wout="$S/tk-$n-$kind-$round-n$p.out"; }
  wout="$S/tk-$n-$kind-$round-n$p.out"
  local fails; fails=$(grep -c '^create-failed' "$wout")
  [ "$fails" -gt 0 ] && LOGS+=("takeover $n nodes/$kind/round $round: $fails create attempt(s) on node$p failed first: $(grep -m1 '^create-failed' "$wout" | cut -d' ' -f3- | head -c 200)")
  local engine=-
  if [ -n "$new" ]; then
    engine=$(grep 'this node is now the coordinator' "/run/csvfs-lab/$CSVFS_LAB/nodes/${new#node}/csvfs.log" 2>/dev/null | tail -1 | sed -n 's/.* in \([0-9]*\) ms$/\1/p')
    [ -n "$engine" ] || engine=-
  fi
  local s_ms=- c_ms=-
  [ -n "$seen" ] && s_ms=$(( (seen - t0) / 1000000 ))
  [ -n "$created" ] && c_ms=$(( (created - t0) / 1000000 ))
  [ -n "$seen" ] && [ -n "$created" ] || LOGS+=("takeover $n nodes/$kind/round $round: watcher on node$p saw no new coordinator or create: $(tail -2 "$wout" | tr '\n' ' ')")
  # a node that dies: when the watcher's daemon heard of it (corosync's token and consensus)
  local det_ms=-
  { [ "$kind" = node ] || [ "$kind" = fenced ]; } && det_ms=$(detected_ms "$p" "$cn" "$t0")
  echo "$n $kind $round $old ${new:--} node$p $s_ms $c_ms $(( (t1 - t0) / 1000000 )) $engine node$pk $stalls $det_ms" >>"$S/takeover.tsv"
  say "takeover $n/$kind/$round: $old -> ${new:-?} seen by node$p at $s_ms ms, create ok at $c_ms ms (kill cmd $(( (t1 - t0) / 1000000 )) ms, engine $engine ms)"
  # a move leaves every node up: nothing to bring back
  if [ "$kind" = move ]; then
    stable "$n" >/dev/null && return 0
    LOGS+=("takeover $n nodes/move/round $round: the cluster did not settle after the move")
    return 1
  fi
  # bring the node back
  [ "$kind" = fenced ] && "$LAB" heal "$cn" >>"$S/tk-lab.out" 2>&1
  if [ "$kind" = node ] || [ "$kind" = fenced ]; then
    "$LAB" start "$cn" corosync >>"$S/tk-lab.out" 2>&1
    # csvfs only once this corosync is back in a quorate membership of n: a
    # daemon started earlier founds a lockspace alone and, at the merge,
    # gives up ("cannot take the coordinator-info lock") and unmounts.
    local end=$(( $(date +%s) + 30 ))
    until "$LAB" quorum "$cn" 2>/dev/null | grep -q "^members=$n quorate=yes"; do
      [ "$(date +%s)" -ge "$end" ] && { LOGS+=("node$cn: corosync not back in a quorate membership of $n after 30 s"); break; }
      sleep 0.2
    done
  fi
  local tries
  for tries in 1 2; do
    "$LAB" start "$cn" csvfs >>"$S/tk-lab.out" 2>&1
    if stable "$n" >/dev/null; then return 0; fi
    LOGS+=("takeover $n nodes/$kind/round $round: node$cn did not rejoin as a mounted participant (try $tries): $(grep -v '^===' "/run/csvfs-lab/$CSVFS_LAB/nodes/$cn/csvfs.log" | grep -E 'error|cannot' | tail -1 | cut -c1-240)")
    sleep 2
  done
  return 1
}

# move_phases DIR — one line per planned move found in the daemons' saved logs
# of a lab (DIR/node*-csvfs.log), from their own log lines: "STOP_DOWN
# DOWN_NEW NEW_SEEN STOP_SEEN" in ms: the old coordinator stops serving
# (GOAWAY) → it stepped down (engine detached, move published) → the new
# coordinator's engine is open → the last participant is connected to it.
move_phases() {
  local f n
  for f in "$1"/node*-csvfs.log; do
    [ -f "$f" ] || continue
    n=$(basename "$f" -csvfs.log)
    grep -v '^===' "$f" | sed "s/^\([^ ]*\) /\1 $n /"
  done | sort | awk '
    function ms(s,   t) { t = substr(s, 12, 12); return ((substr(t, 1, 2) * 60 + substr(t, 4, 2)) * 60 + substr(t, 7, 6)) * 1000 }
    function flush() { if (stop && down && nw && seen) printf "%d %d %d %d\n", down - stop, nw - down, seen - nw, seen - stop }
    { t = ms($1); if (mv && t < mv) t += 86400000 }   # past midnight
    /moving the coordinator role to/ { flush(); mv = t; stop = down = nw = seen = 0; next }
    !mv || t - mv > 3000 { next }
    /rio: server on port .* stopped/ && !stop { stop = t }
    /stepped down as coordinator/ && stop && !down { down = t }
    /is now the coordinator/ && down && !nw { nw = t }
    /this node is a participant/ && nw { seen = t }
    END { flush() }'
}

run_takeover() {
  local n=$1 kind r
  for kind in $TK_KINDS; do
    if [ "$kind" = fenced ]; then echo ok >"$S/fence-mode"; else echo fail >"$S/fence-mode"; fi
    for r in $(seq 1 "$TK_ROUNDS"); do
      takeover_round "$n" "$kind" "$r" || { say "takeover $n/$kind/$r: cluster did not recover; stopping this size"; return 1; }
    done
  done
}

# ---- 3. locks ----------------------------------------------------------------------------------
# lock_test N NAME SPEC... — SPEC "K:ARGS" runs dg_bench ARGS on node K;
# every other node runs dg_bench idle so that all N are members.
lock_test() {
  local n=$1 name=$2; shift 2
  local ls="bench-$name-$n-$$" k spec args stopf="$S/stop.$name.$n" pids=() idles=()
  rm -f "$stopf"
  declare -A role=()
  for spec in "$@"; do role[${spec%%:*}]=${spec#*:}; done
  for k in $(seq 1 "$n"); do
    if [ -n "${role[$k]:-}" ]; then
      # shellcheck disable=SC2086
      args=(${role[$k]})
      echo "dg_bench $ls ${args[*]} --members $n --max-ms 30000   # on node$k" >>"$S/lock-commands.txt"
      timeout 90 "$LAB" exec "$k" -- "$DGB" "$ls" "${args[@]}" --members "$n" --max-ms 30000 \
        >"$S/lock-$n-$name-$k.out" 2>"$S/lock-$n-$name-$k.err" &
      pids+=($!)
    else
      timeout 90 "$LAB" exec "$k" -- "$DGB" "$ls" idle --until-file "$stopf" --max-ms 60000 \
        >"$S/lock-$n-$name-$k.idle" 2>&1 &
      idles+=($!)
    fi
    BGPIDS+=($!)
  done
  local p
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || LOGS+=("dg_bench $name on $n nodes: a measuring process failed: $(cat "$S"/lock-$n-$name-*.out | grep -m1 '^error')"); done
  touch "$stopf"
  for p in "${idles[@]}"; do wait "$p" 2>/dev/null; done
  for k in $(seq 1 "$n"); do
    [ -f "$S/lock-$n-$name-$k.out" ] || continue
    grep '^result' "$S/lock-$n-$name-$k.out" | sed "s/^result /$n $name node$k /" >>"$S/locks.tsv"
  done
  say "locks $n/$name: $(grep "^$n $name " "$S/locks.tsv" | cut -d' ' -f3-6 | tr '\n' ';')"
}

run_locks() {
  local n=$1 readers=() k
  lock_test "$n" uncontended "1:uncontended --count $LOCK_COUNT"
  lock_test "$n" cached "1:cached --count $LOCK_COUNT"
  lock_test "$n" pp2 "1:pingpong pp --role writer --rounds $PP_ROUNDS" "2:pingpong pp --role reader --rounds $PP_ROUNDS"
  for k in $(seq 2 "$n"); do readers+=("$k:pingpong pp --role reader --rounds $PP_ROUNDS"); done
  lock_test "$n" ppall "1:pingpong pp --role writer --rounds $PP_ROUNDS" "${readers[@]}"
}

# ---- 5. a participant's path fails, or hangs, under load ---------------------------------------------
# A lab of the first size with a path per node (up --paths) and the path timeout
# redirect.sh uses (2 s). On the participant fio writes 4 KiB at random, QD 8,
# O_DIRECT, for PF_SECS s; 3 s in, its path fails (or hangs), 5 s later it
# works again. Measured: from the fault to the node's log line "-> redirected",
# from the path's return to "-> direct", and fio's longest completion latency
# (the longest one application I/O waited: its stall) and errors.
log_ms() {  # epoch ms of the first line of file $1 matching $2 at or after epoch ms $3
  local line t
  while IFS= read -r line; do
    t=$(date -d "${line%% *}" +%s%3N 2>/dev/null) || continue
    [ "$t" -ge "$3" ] && { echo "$t"; return 0; }
  done < <(grep -- "$2" "$1")
  echo "-"
}
run_pathfail() {
  local n=$first_n kind log j t_fault t_ok t_red t_dir
  CSVFS_LAB_DAEMON_OPTS="fence_deadline=$FENCE_DEADLINE,path_timeout=2000" \
    "$LAB" up -n "$n" --size "$LUN_SIZE" --paths >"$S/up-paths.out" 2>&1 ||
    { LOGS+=("lab up --paths failed: $(tail -1 "$S/up-paths.out")"); return; }
  local c; c=$(stable "$n") || { LOGS+=("the --paths lab never became stable"); lab_down; return; }
  local cn=${c#node} pn=1; [ "$pn" = "$cn" ] && pn=2
  log="/run/csvfs-lab/$CSVFS_LAB/nodes/$pn/csvfs.log"
  on "$pn" fio --name=pflayout --filename="$V/pathfail.img" --size=256M --rw=write --bs=1M \
    --direct=1 --ioengine=libaio --iodepth=8 >/dev/null 2>&1
  for kind in fail hang; do
    j="$S/pathfail-$kind.json"
    echo "fio --name=pathfail --filename=\$V/pathfail.img --size=256M --rw=randwrite --bs=4k --iodepth=8 --ioengine=libaio --direct=1 --time_based --runtime=$PF_SECS (node$pn; fault $kind at 3 s for 5 s)" >>"$S/fio-commands.txt"
    on "$pn" fio --name=pathfail --filename="$V/pathfail.img" --size=256M --rw=randwrite --bs=4k \
      --iodepth=8 --ioengine=libaio --direct=1 --time_based --runtime="$PF_SECS" \
      --output-format=json --output="$j" >/dev/null 2>&1 &
    local fpid=$!
    sleep 3; t_fault=$(ms_now); "$LAB" fault "$pn" path "$kind" >/dev/null
    sleep 5; t_ok=$(ms_now); "$LAB" fault "$pn" path ok >/dev/null
    wait "$fpid"
    t_red=$(log_ms "$log" "I/O state: direct -> redirected" "$t_fault")
    t_dir=$(log_ms "$log" "-> direct: path" "$t_ok")
    local stall err iops
    stall=$(jq -r '.jobs[0].write.clat_ns.max / 1000000 | floor' "$j" 2>/dev/null || echo -)
    err=$(jq -r '.jobs[0].error' "$j" 2>/dev/null || echo -)
    iops=$(jq -r '.jobs[0].write.iops | floor' "$j" 2>/dev/null || echo -)
    echo "$kind $( [ "$t_red" = - ] && echo - || echo $(( t_red - t_fault )) ) $( [ "$t_dir" = - ] && echo - || echo $(( t_dir - t_ok )) ) $stall $err $iops" >>"$S/pathfail.tsv"
    say "pathfail $kind: to redirected $(( ${t_red/-/0} - t_fault )) ms, back to direct $(( ${t_dir/-/0} - t_ok )) ms, longest stall $stall ms, fio error $err, $iops IOPS"
    sleep 2
  done
  "$LAB" down --save-logs "$S/logs-pathfail" >/dev/null 2>&1
}

# ---- run ---------------------------------------------------------------------------------------------
: >"$S/fio.tsv"; : >"$S/meta.tsv"; : >"$S/metaagg.tsv"; : >"$S/takeover.tsv"; : >"$S/locks.tsv"; : >"$S/corosync.txt"; : >"$S/pathfail.tsv"
declare -A PHASE_MS=()
first_n=${NODES_LIST%% *}
CN= PN=
if has_part fio || has_part meta || has_part metaagg || has_part takeover; then
  for n in $NODES_LIST; do
    t=$(ms_now)
    lab_up "$n" || continue
    C=$(stable "$n") || { LOGS+=("mounted lab of $n nodes never became stable"); continue; }
    CN=${C#node}; PN=1; [ "$PN" = "$CN" ] && PN=2
    say "$n nodes: coordinator node$CN, participant node$PN"
    if [ "$n" = "$first_n" ]; then
      FIO_CN=$CN FIO_PN=$PN FIO_N=$n
      if has_part fio; then note_load fio; t1=$(ms_now); run_fio; PHASE_MS[fio]=$(( $(ms_now) - t1 )); fi
      if has_part meta; then note_load meta; t1=$(ms_now); run_meta; PHASE_MS[meta]=$(( $(ms_now) - t1 )); fi
    fi
    if has_part metaagg && [ -z "${AGG_N:-}" ] && [ "$n" -gt "$AGG_PARTS" ]; then
      note_load metaagg; t1=$(ms_now); run_meta_agg "$n"; PHASE_MS[metaagg]=$(( $(ms_now) - t1 ))
    fi
    if has_part takeover; then note_load "takeover-$n"; t1=$(ms_now); run_takeover "$n"; PHASE_MS[takeover-$n]=$(( $(ms_now) - t1 )); fi
    "$LAB" down --save-logs "$S/logs-mounted-$n" >/dev/null 2>&1
    move_phases "$S/logs-mounted-$n" >"$S/move-phases-$n.txt"
    PHASE_MS[mounted-lab-$n]=$(( $(ms_now) - t ))
  done
fi
if has_part locks; then
  for n in $NODES_LIST; do
    t=$(ms_now)
    lab_up "$n" --no-mount || continue
    run_locks "$n"
    lab_down
    PHASE_MS[locks-$n]=$(( $(ms_now) - t ))
  done
fi
if has_part pathfail; then
  t=$(ms_now); note_load pathfail; run_pathfail; PHASE_MS[pathfail]=$(( $(ms_now) - t ))
fi
note_load end
T_TOTAL=$(( $(ms_now) - T_START ))

# ---- report ------------------------------------------------------------------------------------------
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.0f %%", 100 * a / b; else printf "n/a" }'; }
verdict() { awk -v a="$1" -v b="$2" -v g="$3" 'BEGIN{ if (b <= 0) print "n/a"; else if (100 * a / b >= g) print "meets"; else print "**below**" }'; }
f1() { awk -v x="$1" 'BEGIN{ printf "%.1f", x }'; }
f0() { awk -v x="$1" 'BEGIN{ printf "%.0f", x }'; }
fiov() { awk -v t="$1" -v f="$2" '$1 == t { print $f; exit }' "$S/fio.tsv"; }  # fields: 3 MiB/s 4 IOPS 5 p50us 6 p99us 7 cpu 8 cpu-coord
metav() { awk -v r="$1" -v o="$2" -v k="$3" '$1 == r && $3 == o { for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' "$S/meta.tsv"; }
lockv() { awk -v n="$1" -v t="$2" -v node="$3" -v k="$4" '$1 == n && $2 == t && $3 == node { for (i = 5; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' "$S/locks.tsv"; }
# worst value of key k over the readers (nodes 2..N) of test t
lockmax() { awk -v n="$1" -v t="$2" -v k="$3" 'BEGIN{m = ""} $1 == n && $2 == t && $4 == "pingpong-PR" { for (i = 5; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k && (m == "" || kv[2] + 0 > m + 0)) m = kv[2] } } END{ print (m == "" ? "-" : m) }' "$S/locks.tsv"; }
stats3() {  # min / median / max of a column of numbers on stdin
  sort -n | awk '{ v[NR] = $1 } END{ if (NR == 0) { print "- / - / -"; exit } m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%d / %d / %d", v[1], m, v[NR] }'
}

mkdir -p "$(dirname "$OUT")"
# Hand-written analysis kept across runs: the blocks of the old report between a
# "<!-- kept: NAME -->" line and a "<!-- /kept -->" line go into the new one, after part 2.
KEPT=$S/kept.md
: >"$KEPT"
[ -f "$OUT" ] && awk '/^<!-- kept: /{ k = 1 } k { print } /^<!-- \/kept -->/{ k = 0 }' "$OUT" >"$KEPT"

{
  echo "# Cluster benchmarks"
  echo
  echo "Written by \`tests/bench/cluster.sh\` (design.md §10) on $(date -u '+%Y-%m-%d %H:%M UTC'); the whole run took $(( T_TOTAL / 1000 )) s."
  echo "These are measurements, not tests: nothing asserts on a number. Every node of the lab"
  echo "runs on the same machine (docs/lab.md): the nodes share the CPUs, the kernel and the"
  echo "disk under the LUN image, so absolute numbers say little about real hardware — the ratios"
  echo "between raw, coordinator and participant, measured side by side in one run, are the point."
  echo
  echo "## Machine and settings"
  echo
  echo '```'
  echo "nproc:    $(nproc)"
  echo "cpu:      $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  echo "memory:   $(free -m | awk '/^Mem:/ { print $2 " MiB total, " $7 " MiB available" }')"
  echo "kernel:   $(uname -srm)"
  echo "storage:  LUN image and raw image on $(df -T /var/tmp | awk 'NR == 2 { print $2 " (" $1 ")" }'), /var/tmp"
  echo "fio:      $(fio --version)"
  echo "corosync: $(corosync -v 2>/dev/null | head -1)"
  echo "load:     1-min load average $(awk '{ print $2 }' "$S/load.txt" | sort -n | sed -n '1p;$p' | tr '\n' ' ' | sed 's/ $//; s/ / to /') at the phase starts (this machine's nproc is $(nproc))"
  echo "others:   other csvfs-lab labs up during the run: $(awk '{ for (i = 3; i <= NF; i++) print $i }' "$S/load.txt" | sort -u | tr '\n' ' ')"
  echo "csvfs:    $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null) (+ $(git -C "$TOP" status --porcelain 2>/dev/null | wc -l) uncommitted file(s) in the tree)"
  echo '```'
  echo
  echo "corosync (csvfs-lab defaults: \`token: 1000\`, \`token_coefficient: 0\`; read back with"
  echo "\`corosync-cmapctl -g runtime.config.totem.token\` / \`.consensus\` in each lab):"
  echo
  sed 's/^/* /' "$S/corosync.txt"
  echo
  echo "Mounted labs run with \`fence_deadline=$FENCE_DEADLINE\` (self-fence deadline ${FENCE_DEADLINE} ms, as in"
  echo "\`cluster_fs.sh\`) and \`fence_cmd=\` the lab's fence agent (part 4), scratch LUN \`--size $LUN_SIZE\`. Lab name \`$CSVFS_LAB\`."
  echo
  echo "Knobs of this run: BENCH_SIZE_MB=$SIZE_MB BENCH_RUNTIME=$RT BENCH_RAMP=$RAMP BENCH_SEQ_QD=$SEQ_QD"
  echo "BENCH_META_COUNT=$META_COUNT BENCH_META_MS=$META_MS BENCH_LOCK_COUNT=$LOCK_COUNT BENCH_PP_ROUNDS=$PP_ROUNDS"
  echo "BENCH_TAKEOVER_ROUNDS=$TK_ROUNDS BENCH_NODES=\"$NODES_LIST\" BENCH_AGG_PARTICIPANTS=$AGG_PARTS."
  echo
  echo "Phase times (s): $(for k in "${!PHASE_MS[@]}"; do echo "$k $(( PHASE_MS[$k] / 1000 ))"; done | sort | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')."
  echo

  if has_part fio; then
    echo "## 1. Data path: fio, O_DIRECT, libaio"
    echo
    echo "${FIO_N:-?}-node lab; coordinator node${FIO_CN:-?}, participant node${FIO_PN:-?}. Targets: (a) **raw** — an"
    echo "image file on the host filesystem that holds the LUN image; (b) **coordinator** — a file on"
    echo "the coordinator's mount; (c) **participant** — a file on a participant's mount (data moved"
    echo "by the participant itself on its own O_DIRECT descriptor of the LUN, metadata forwarded)."
    echo "Each file is ${SIZE_MB} MiB and was first written fully (1 MiB sequential, \`--fallocate=none"
    echo "--end_fsync=1\`, from the node that then benchmarks it), so every timed write is an"
    echo "overwrite of written blocks. Timed jobs: \`--time_based --runtime=$RT --ramp_time=$RAMP\`;"
    echo "sequential 1 MiB at iodepth $SEQ_QD, random 4 KiB at iodepth 32 (\`--norandommap --randrepeat=0\`)."
    echo "Command (participant, random write):"
    echo
    echo '```'
    echo "csvfs-lab --lab $CSVFS_LAB exec ${FIO_PN:-2} -- $(grep -m1 -- '--name=randwrite-participant' "$S/fio-commands.txt" | sed "s|$S|\$OUT|g")"
    echo '```'
    echo
    echo "| workload | raw MiB/s | raw IOPS | coordinator MiB/s | coordinator IOPS | participant MiB/s | participant IOPS | participant / raw | participant / coordinator |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in layout seqwrite seqread randread randwrite; do
      r=$(fiov "$w-raw" 3); ri=$(fiov "$w-raw" 4)
      c=$(fiov "$w-coordinator" 3); ci=$(fiov "$w-coordinator" 4)
      p=$(fiov "$w-participant" 3); pi=$(fiov "$w-participant" 4)
      label=$w; [ $w = layout ] && label="first write (layout, 1 MiB seq, qd 8)"
      [ $w = seqwrite ] && label="1 MiB seq write (qd $SEQ_QD)"; [ $w = seqread ] && label="1 MiB seq read (qd $SEQ_QD)"
      [ $w = randread ] && label="4 KiB rand read (qd 32)"; [ $w = randwrite ] && label="4 KiB rand write (qd 32)"
      echo "| $label | $(f1 "${r:-0}") | $(f0 "${ri:-0}") | $(f1 "${c:-0}") | $(f0 "${ci:-0}") | $(f1 "${p:-0}") | $(f0 "${pi:-0}") | $(pct "${p:-0}" "${r:-0}") | $(pct "${p:-0}" "${c:-0}") |"
    done
    echo
    echo "Completion latency (fio clat, µs, p50 / p99) and CPU time of the csvfs daemons during the"
    echo "job (the benchmarking node's own daemon; for the participant also the coordinator's):"
    echo
    echo "| workload | raw | coordinator | participant | coordinator daemon CPU s | participant daemon CPU s (coordinator's) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for w in layout seqwrite seqread randread randwrite; do
      echo "| $w | $(f0 "$(fiov "$w-raw" 5)") / $(f0 "$(fiov "$w-raw" 6)") | $(f0 "$(fiov "$w-coordinator" 5)") / $(f0 "$(fiov "$w-coordinator" 6)") | $(f0 "$(fiov "$w-participant" 5)") / $(f0 "$(fiov "$w-participant" 6)") | $(fiov "$w-coordinator" 7) | $(fiov "$w-participant" 7) ($(fiov "$w-participant" 8)) |"
    done
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---:|---|"
    echo "| participant seq write ≥ 90 % of raw | $(pct "$(fiov seqwrite-participant 3)" "$(fiov seqwrite-raw 3)") | $(verdict "$(fiov seqwrite-participant 3)" "$(fiov seqwrite-raw 3)" 90) |"
    echo "| participant seq read ≥ 90 % of raw | $(pct "$(fiov seqread-participant 3)" "$(fiov seqread-raw 3)") | $(verdict "$(fiov seqread-participant 3)" "$(fiov seqread-raw 3)" 90) |"
    echo "| participant 4k rand read ≥ 70 % of coordinator | $(pct "$(fiov randread-participant 4)" "$(fiov randread-coordinator 4)") | $(verdict "$(fiov randread-participant 4)" "$(fiov randread-coordinator 4)" 70) |"
    echo "| participant 4k rand write ≥ 70 % of coordinator | $(pct "$(fiov randwrite-participant 4)" "$(fiov randwrite-coordinator 4)") | $(verdict "$(fiov randwrite-participant 4)" "$(fiov randwrite-coordinator 4)" 70) |"
    echo
    echo "### Redirected I/O"
    echo
    echo "The participant node${FIO_PN:-?} again, on a file of its own, while \`csvctl redirect on\` sends its"
    echo "data through the coordinator (OP_LUN_READ / OP_LUN_WRITE over TLS, at most 1 MiB a"
    echo "request; the participant's data flushes become OP_LUN_FLUSH;"
    echo "docs/cluster.md \"Redirected I/O\"), side by side with its direct runs above."
    echo
    echo "| workload | participant direct MiB/s | IOPS | redirected MiB/s | IOPS | p50 / p99 µs | redirected / direct | coordinator daemon CPU s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for w in layout seqwrite seqread randread randwrite; do
      p=$(fiov "$w-participant" 3); pi=$(fiov "$w-participant" 4)
      d=$(fiov "$w-redirected" 3); di=$(fiov "$w-redirected" 4)
      echo "| $w | $(f1 "${p:-0}") | $(f0 "${pi:-0}") | $(f1 "${d:-0}") | $(f0 "${di:-0}") | $(f0 "$(fiov "$w-redirected" 5)") / $(f0 "$(fiov "$w-redirected" 6)") | $(pct "${d:-0}" "${p:-0}") | $(fiov "$w-redirected" 8) |"
    done
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---:|---|"
    echo "| redirected seq write ≥ 60 % of direct | $(pct "$(fiov seqwrite-redirected 3)" "$(fiov seqwrite-participant 3)") | $(verdict "$(fiov seqwrite-redirected 3)" "$(fiov seqwrite-participant 3)" 60) |"
    echo "| redirected seq read ≥ 60 % of direct | $(pct "$(fiov seqread-redirected 3)" "$(fiov seqread-participant 3)") | $(verdict "$(fiov seqread-redirected 3)" "$(fiov seqread-participant 3)" 60) |"
    echo
  fi

  if has_part meta; then
    echo "## 2. Metadata: create, stat, unlink"
    echo
    echo "\`tests/helpers/bench_create\`, one process, one file at a time, in a directory of its own"
    echo "(\`$V/meta-coordinator\`, \`$V/meta-participant\`), on the coordinator node${FIO_CN:-?} and on the"
    echo "participant node${FIO_PN:-?} of the same ${FIO_N:-?}-node lab, one after the other. create = \`open(O_CREAT|O_EXCL|O_WRONLY)\` +"
    echo "\`close\` of a new name, at most $META_COUNT files or $META_MS ms; stat = \`stat()\` of those files round"
    echo "robin for $META_MS ms; unlink = \`unlink()\` of them. The coordinator's kernel caches no attributes"
    echo "or names in cluster mode, so its stats and lookups reach its daemon; a participant's kernel caches"
    echo "them under attribute locks (docs/cluster.md, \"Attribute caching\"), so its repeated stats of"
    echo "unchanged files reach nobody, and its first ones reach the coordinator over TLS."
    echo
    echo '```'
    sed 's/^/csvfs-lab --lab benchc exec K -- /' "$S/meta-commands.txt" | sed "s|$TOP/||" | head -2
    echo '```'
    echo
    echo "| operation | coordinator ops/s | p50 / p99 ms | participant ops/s | p50 / p99 ms | participant / coordinator |"
    echo "|---|---:|---:|---:|---:|---:|"
    for op in create stat unlink; do
      cr=$(metav coordinator "$op" rate); pr=$(metav participant "$op" rate)
      echo "| $op | $(f0 "${cr:-0}") | $(metav coordinator "$op" p50) / $(metav coordinator "$op" p99) | $(f0 "${pr:-0}") | $(metav participant "$op" p50) / $(metav participant "$op" p99) | $(pct "${pr:-0}" "${cr:-0}") |"
    done
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---:|---|"
    echo "| participant create ≥ 60 % of coordinator | $(pct "$(metav participant create rate)" "$(metav coordinator create rate)") | $(verdict "$(metav participant create rate)" "$(metav coordinator create rate)" 60) |"
    echo
  fi

  if has_part metaagg && [ -s "$S/metaagg.tsv" ]; then
    aggv() { awk -v t="$1" -v k="$2" '$1 == t { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$S/metaagg.tsv"; }
    single=$(aggv single rate | head -1)
    files=$(aggv parallel n | awk '{ s += $1 } END { print s + 0 }')
    wall=$(aggv parallel secs | sort -g | tail -1)
    agg=$(awk -v f="$files" -v w="${wall:-0}" 'BEGIN{ if (w > 0) printf "%.1f", f / w; else print 0 }')
    echo "### Aggregate creates: $AGG_PARTS participants at once"
    echo
    echo "The same create loop, in a ${AGG_N:-?}-node lab (coordinator node${AGG_CN:-?}, mounted as for part 4): first on one"
    echo "participant alone, then on $AGG_PARTS participants (nodes ${AGG_NODES:-?}) at once, each in a directory of"
    echo "its own (\`$V/agg-single-K\`, \`$V/agg-parallel-K\`); at most $META_COUNT files or $META_MS ms each."
    echo "Aggregate = the files the $AGG_PARTS created together / the longest of their run times. Their"
    echo "changes meet in the coordinator's journal, where concurrent requests share a commit"
    echo "(group commit, fs/meta_volume.c volume_sync)."
    echo
    echo "| run | node | creates | s | creates/s | p50 / p99 ms |"
    echo "|---|---|---:|---:|---:|---:|"
    awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "| %s | node%s | %s | %s | %s | %s / %s |\n", $1, v["node"], v["n"], v["secs"], v["rate"], v["p50"], v["p99"] }' "$S/metaagg.tsv"
    echo "| **aggregate** | $AGG_PARTS at once | $files | ${wall:-0} | $agg | |"
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---:|---|"
    echo "| aggregate creates/s, $AGG_PARTS participants at once / 1 participant ≥ 2× | $(awk -v a="$agg" -v b="${single:-0}" 'BEGIN{ if (b > 0) printf "%.2f×", a / b; else print "n/a" }') | $(verdict "$agg" "${single:-0}" 200) |"
    echo
  fi

  # the hand-written analysis of the old report, kept (see KEPT above)
  [ -s "$KEPT" ] && { cat "$KEPT"; echo; }

  if has_part locks; then
    echo "## 3. Lock latency: dlm-glue (cpg backend)"
    echo
    echo "\`tests/helpers/dg_bench\` in a lab started with \`--no-mount\` (no csvfs; one dg_bench process"
    echo "per node, so every node is a member of the lockspace; nodes not measuring run \`dg_bench idle\`)."
    echo "Times in ms from the request to its grant (the ast), p50 / p99; all requests go through"
    echo "corosync's total order (CPG agreed delivery), whichever node asks."
    echo
    echo "* **uncontended**: node1, $LOCK_COUNT × lock EX on a fresh resource + \`dg_unlock\` (the unlock is"
    echo "  asynchronous: its delivery is not waited for and shows up in the next lock)."
    echo "* **cached**: node1 holds \`cached\` in PR and asks $LOCK_COUNT × for another PR lock on it (+ unlock)."
    echo "  The cpg backend has no node-local grant cache, so this is a full CPG round trip too."
    echo "* **ping-pong 2 nodes**: node1 writer (NL→EX, hold until a blocking callback, EX→NL writing the"
    echo "  round into the value block), node2 reader (NL→PR, hold until a blocking callback, PR→NL, ask"
    echo "  again); $PP_ROUNDS rounds. Every timed request meets an incompatible holder on the other node:"
    echo "  request → bast → the holder's down-convert → grant. The first two requests are not counted."
    echo "* **ping-pong 1 writer + (N−1) readers**: the same with every other node a reader; the PR row is"
    echo "  the worst reader's value."
    echo
    echo '```'
    grep -E -- "--members $first_n .*node1$" "$S/lock-commands.txt" 2>/dev/null | sed 's/ *# on node1$//' | sed 's/-[0-9]*-[0-9]* / /' | awk '!seen[$0]++' | sed 's/^/csvfs-lab --lab benchc exec 1 -- /'
    echo '```'
    echo
    hdr="| measurement |"; sep="|---|"
    for n in $NODES_LIST; do hdr="$hdr $n nodes p50 | $n nodes p99 |"; sep="$sep---:|---:|"; done
    echo "$hdr"; echo "$sep"
    row() { local label=$1 t=$2 node=$3 line="| $1 |" n; for n in $NODES_LIST; do
        if [ "$node" = worst ]; then line="$line $(lockmax "$n" "$t" p50) | $(lockmax "$n" "$t" p99) |";
        else line="$line $(lockv "$n" "$t" "$node" p50) | $(lockv "$n" "$t" "$node" p99) |"; fi; done; echo "$line"; }
    row "uncontended lock EX + unlock" uncontended node1
    row "cached: PR again while holding PR" cached node1
    row "ping-pong 2 nodes: writer EX" pp2 node1
    row "ping-pong 2 nodes: reader PR" pp2 node2
    row "ping-pong 1 + (N−1): writer EX" ppall node1
    row "ping-pong 1 + (N−1): readers PR (worst)" ppall worst
    echo
    echo "Ping-pong rounds completed per second (writer's rounds / its elapsed time):"
    echo
    echo "| test |$(for n in $NODES_LIST; do printf ' %s nodes |' "$n"; done)"
    echo "|---|$(for n in $NODES_LIST; do printf -- '---:|'; done)"
    for t in pp2 ppall; do
      line="| $t |"
      for n in $NODES_LIST; do
        nn=$(lockv "$n" "$t" node1 n); tt=$(lockv "$n" "$t" node1 total_ms)
        line="$line $(awk -v a="${nn:-0}" -v b="${tt:-0}" 'BEGIN{ if (b > 0) printf "%.0f", (a + 2) * 1000 / b; else printf "-" }') |"
      done
      echo "$line"
    done
    echo
  fi

  if has_part takeover; then
    echo "## 4. Coordinator move, and takeover after kill -9"
    echo
    echo "Mounted labs of $NODES_LIST nodes with \`fence_deadline=$FENCE_DEADLINE\`. Each round: wait until every node"
    echo "is up and mounted and all agree on the coordinator; start a watcher on each of two participants (the two lowest-numbered"
    echo "nodes that are not the coordinator; the times reported are those of the one that stays a participant) that polls \`csvctl status --json\` every ~20 ms until"
    echo "\"coordinator\" names another node, then creates a new file (\`set -C; : > FILE\`, i.e."
    echo "O_CREAT|O_EXCL) until one succeeds; kill; then restart the killed node and wait until it is a"
    echo "mounted participant again."
    echo
    echo "* **(0) planned move**: \`csvctl move\` on the coordinator (any other node takes the role;"
    echo "  nothing is killed, and nothing is restarted after)."
    echo "* **(a) csvfs only**: \`csvfs-lab kill K csvfs\` — the daemon dies, its corosync lives, so"
    echo "  its CPG leave is clean and its locks are released at once."
    echo "* **(b) whole node**: \`csvfs-lab kill K corosync\` then \`csvfs-lab kill K csvfs\` — the others"
    echo "  notice after token + consensus and release its locks only at the self-fence deadline"
    echo "  (${FENCE_DEADLINE} ms after the departure). \`kill K all\` is not used for this: it kills csvfs"
    echo "  *first*, and the still-running corosync then reports a clean CPG leave of the daemon, so"
    echo "  the others take over at once as in (a). The fence agent is configured but fails at once"
    echo "  (exit 1), so this is the deadline alone."
    echo "* **(c) node fenced**: \`csvfs-lab partition K\` cuts the coordinator's node off (it lives"
    echo "  on, loses quorum and pauses); the survivors notice after token + consensus, and one of"
    echo "  them runs \`fence_cmd\`, the lab's agent \`csvfs-lab fence K\` (every process of node K"
    echo "  killed, like a power switch); its exit 0 releases the node's locks without waiting for the"
    echo "  deadline. The node is then healed and restarted."
    echo
    echo "Times in ms from just before the \`csvfs-lab kill\` command (\"kill cmd\" is how long that"
    echo "command took; the process dies somewhere inside it). \"seen\": the participant's csvctl names"
    echo "the new coordinator; \"create\": its create succeeded. \"engine\": what the new coordinator"
    echo "logs for its own part (\"this node is now the coordinator … in N ms\": journal open, replay,"
    echo "MMP, serving)."
    echo
    echo "Application stalls: during each round, on the last of the two watcher nodes (the election"
    echo "prefers low nodeids, so it usually stays a participant), fio writes 4 KiB at random with"
    echo "O_DIRECT, one write at a time, 200/s, over a written 64 MiB file, and a loop creates a file"
    echo "(O_CREAT|O_EXCL) every ~10 ms, from 1 s before the kill for 6 s (the deadline + 6 s for (b))."
    echo "\"longest write\" is fio's longest completion latency, \"longest create\" the longest create:"
    echo "what an application on that node waited at most across the role change. \"create before\":"
    echo "the longest of the creates that ended before the command started (about 1 s of them, no role"
    echo "change): what the machine's load alone costs a create, the floor under \"longest create\" on a"
    echo "shared machine."
    echo
    echo "\"create after detection\": for a node that dies, from the moment the watcher's daemon logged"
    echo "corosync's verdict (\`left the group (node down)\`: token + consensus after the death) to its"
    echo "create's success: fencing, the takeover and the create, what csvfs adds to corosync's detection."
    echo
    echo "| nodes | kill | seen ms (min / median / max) | create ms (min / median / max) | longest write ms (min / median / max) | longest create ms (min / median / max) | create before ms (min / median / max) | create after detection ms (min / median / max) |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for n in $NODES_LIST; do
      for kind in $TK_KINDS; do
        label="(a) csvfs only"; [ $kind = node ] && label="(b) whole node"; [ $kind = move ] && label="(0) planned move"
        [ $kind = fenced ] && label="(c) node fenced"
        s=$(awk -v n="$n" -v k="$kind" '$1 == n && $2 == k && $7 != "-" { print $7 }' "$S/takeover.tsv" | stats3)
        c=$(awk -v n="$n" -v k="$kind" '$1 == n && $2 == k && $8 != "-" { print $8 }' "$S/takeover.tsv" | stats3)
        w=$(awk -v n="$n" -v k="$kind" '$1 == n && $2 == k && $12 != "-" && $12 != "" { print $12 }' "$S/takeover.tsv" | stats3)
        m=$(awk -v n="$n" -v k="$kind" '$1 == n && $2 == k && $13 != "-" && $13 != "" { print $13 }' "$S/takeover.tsv" | stats3)
        b=$(awk -v n="$n" -v k="$kind" '$1 == n && $2 == k && $14 != "-" && $14 != "" { print $14 }' "$S/takeover.tsv" | stats3)
        d=$(awk -v n="$n" -v k="$kind" '$1 == n && $2 == k && $8 != "-" && $15 != "-" && $15 != "" { print $8 - $15 }' "$S/takeover.tsv" | stats3)
        echo "| $n | $label | $s | $c | $w | $m | $b | ${d:--} |"
      done
    done
    echo
    echo "Every round:"
    echo
    echo "| nodes | kill | round | old → new coordinator | watcher | seen ms | create ms | kill cmd ms | engine ms | stalls on | longest write ms | longest create ms | create before ms | detected ms | create after detection ms |"
    echo "|---|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    awk '{ d = ($8 != "-" && $15 != "-" && $15 != "") ? $8 - $15 : "-"
           printf "| %s | %s | %s | %s → %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, ($15 == "" ? "-" : $15), d }' "$S/takeover.tsv"
    echo
    if [ -n "$(cat "$S"/move-phases-*.txt 2>/dev/null)" ]; then
      echo "A planned move phase by phase, from the daemons' own log lines (min / median / max over"
      echo "the rounds, ms): the old coordinator stops serving (\`rio: server on port … stopped\`, its"
      echo "GOAWAY) → it stepped down (final commit, journal marked clean, MMP released, the move"
      echo "written to the value block: \`stepped down as coordinator\`) → the new coordinator's"
      echo "engine is open (\`is now the coordinator\`; it serves and publishes itself before, and"
      echo "requests wait for this) → the last participant is connected to it and has told its opens"
      echo "and locks (\`this node is a participant\`). The last column is the window in which a"
      echo "participant's metadata request waits."
      echo
      echo "| nodes | moves | GOAWAY → stepped down | → engine open | → last participant connected | GOAWAY → last participant connected |"
      echo "|---|---:|---:|---:|---:|---:|"
      for n in $NODES_LIST; do
        [ -s "$S/move-phases-$n.txt" ] || continue
        line="| $n | $(wc -l <"$S/move-phases-$n.txt") |"
        for col in 1 2 3 4; do
          line="$line $(awk -v c="$col" '{ print $c }' "$S/move-phases-$n.txt" | stats3) |"
        done
        echo "$line"
      done
      echo
    fi
  fi

  if has_part pathfail; then
    echo "## A participant's path fails, or hangs, under load"
    echo
    echo "A $first_n-node lab with a path per node (\`up --paths\`), \`path_timeout=2000\`. On a"
    echo "participant, fio writes 4 KiB at random, QD 8, O_DIRECT, for $PF_SECS s; 3 s in its path"
    echo "fails (every I/O EIO) or hangs (no I/O answered), 5 s later it works again. \"to"
    echo "redirected\": from the fault to the node's log line \`direct -> redirected\` (the first"
    echo "failed or timed-out transfer; the same request then goes through the coordinator);"
    echo "\"to direct\": from the path's return to the \`-> direct\` line (the prober's backoff, then"
    echo "3 reads in a row); \"longest stall\": fio's longest completion latency over the run, the"
    echo "longest any application I/O waited. IOPS over the whole run (direct, redirected, direct)."
    echo
    echo "| fault | to redirected ms | to direct ms | longest stall ms | fio errors | IOPS |"
    echo "|---|---:|---:|---:|---:|---:|"
    awk '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$S/pathfail.tsv"
    echo
  fi

  echo "## Observations"
  echo
  if [ ${#LOGS[@]} -eq 0 ]; then
    echo "* The script noted no failure in this run."
  else
    for l in "${LOGS[@]}"; do echo "* $l"; done
  fi
} >"$OUT"
say "wrote $OUT in $(( T_TOTAL / 1000 )) s"
if [ -n "${BENCH_KEEP:-}" ]; then mkdir -p "$BENCH_KEEP" && cp -a "$S"/. "$BENCH_KEEP"/ && say "raw results kept in $BENCH_KEEP"; fi
exit 0
