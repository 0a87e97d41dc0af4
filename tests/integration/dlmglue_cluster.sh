#!/usr/bin/env bash
# dlm-glue's cpg backend over REAL corosync (docs/locking.md, "The cpg
# wiring"): a 3-node csvfs-lab (no mount), one dg_tool process per node at a
# time (a lockspace admits one process per node). Covers lock contention with
# blocking callbacks, NOQUEUE, cancel, value blocks, a PR/EX ping-pong whose
# counter in the value block passes from node to node, kill -9 of a holder
# process (clean CPG leave: released at once), kill of a holder node's
# corosync (released only after the self-fence deadline), and a partition
# (the cut-off node loses quorum and gets no grants, the other two keep
# quorum, and after heal the node rejoins fresh from a snapshot).
#
# Self-fence deadline arithmetic (docs/lab.md): token 1000 ms + consensus
# 1200 ms = 2200 ms failure detection; DEADLINE = 4000 ms leaves 1800 ms of
# I/O drain. A holder whose corosync dies is seen gone after ~2.5-3 s, and
# its locks are released DEADLINE after that: ~6.5-7 s after the kill.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
TOOL="$TBIN/dg_tool"
export CSVFS_LAB=dgtest
unset CSVFS_BIN CSVFS_LAB_DAEMON_OPTS CSVFS_LAB_TOKEN
DEADLINE=4000
VOL=8d1f6c3e-4b2a-4e5f-9a7b-2c3d4e5f6a7b   # a volume GUID: the lockspace name
t_start=$(date +%s)

skip() { ok "dlmglue_cluster skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync corosync-quorumtool ip nsenter unshare; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] || { not_ok "$LAB missing (make $BUILD/bin/csvfs-lab)"; finish; exit; }
[ -x "$TOOL" ] || { not_ok "$TOOL missing (make $BUILD/tests/dg_tool)"; finish; exit; }

S=$(scratch_dir)
: >"$S/pids"
# DGC_KEEP_LOGS=DIR keeps every dg_tool output and log there.
[ -n "${DGC_KEEP_LOGS:-}" ] && on_exit "mkdir -p '$DGC_KEEP_LOGS' && cp -a '$S'/. '$DGC_KEEP_LOGS'/"
# Teardown (reverse order): stop every dg_tool we started (by the pid it
# printed, then its csvfs-lab wrapper), then the lab.
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down >/dev/null 2>&1"
on_exit "stop_all"
stop_all() {
  local p
  while read -r p; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; done <"$S/pids"
  sleep 0.3
  while read -r p; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done <"$S/pids"
  return 0
}

# dg NODE ARGS... — runs dg_tool on NODE in the foreground (bounded).
dg() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- "$TOOL" --deadline "$DEADLINE" "$VOL" "$@"; }
# bg NAME NODE ARGS... — runs dg_tool on NODE in the background; output in $S/NAME.out/.err.
bg() {
  local name=$1 k=$2; shift 2
  timeout 120 "$LAB" exec "$k" -- "$TOOL" --deadline "$DEADLINE" "$VOL" "$@" >"$S/$name.out" 2>"$S/$name.err" &
  echo $! >"$S/$name.wrapper"; echo $! >>"$S/pids"
}
# The dg_tool process itself (it prints its pid when connected).
tool_pid() { sed -n 's/^connected node [0-9]* pid \([0-9]*\) .*/\1/p' "$S/$1.out" | head -1; }
has() { grep -q -- "$2" "$S/$1.out"; }
wait_line() { wait_until "$2" has "$1" "$3"; }
record_tool() { local p; p=$(tool_pid "$1"); [ -n "$p" ] && echo "$p" >>"$S/pids"; }
# stop NAME — SIGTERM to the tool (clean leave), then wait (bounded) for the wrapper.
stop() {
  local p w i; p=$(tool_pid "$1"); w=$(cat "$S/$1.wrapper" 2>/dev/null)
  [ -n "$p" ] && kill -TERM "$p" 2>/dev/null
  for i in $(seq 1 100); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
  wait "$w" 2>/dev/null
}
# finished NAME SECONDS — waits for the background tool to exit; its status in $RC.
finished() {
  local w i; w=$(cat "$S/$1.wrapper"); RC=
  for i in $(seq 1 $(($2 * 10))); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$w" 2>/dev/null; then RC=timeout; return 1; fi
  wait "$w"; RC=$?
}
ms() { date +%s%3N; }
show() { diag "--- $1.out"; sed 's/^/#   /' "$S/$1.out"; diag "--- $1.err (tail)"; tail -15 "$S/$1.err" | sed 's/^/#   /'; }
sees() { [ "$("$LAB" quorum "$1" 2>/dev/null)" = "$2" ]; }

# ---- lab -----------------------------------------------------------------------
t0=$(date +%s)
"$LAB" up -n 3 --no-mount >"$S/up.out" 2>&1; rc=$?
check_eq "lab up -n 3 --no-mount" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
diag "lab up in $(($(date +%s) - t0)) s"

# ---- members, names and addresses from cmap -------------------------------------
dg 1 members >"$S/members.out" 2>"$S/members.err"; rc=$?
check_eq "members on node1 exits 0" 0 "$rc"
check "node1 is up, named node1 at 10.213.0.11 (cmap)" grep -q '^node 1 node1 10.213.0.11 up$' "$S/members.out"
check "node1 is quorate" grep -q '^quorate 1$' "$S/members.out"
check "one log line per event: founding is logged" grep -q 'founded lockspace' "$S/members.err"

# ---- contention: NOQUEUE, blocking callback, cancel --------------------------------
bg h1 1 hold r1 EX --for 60000
check "node1 holds r1 in EX" wait_line h1 20 '^granted EX'
record_tool h1
dg 2 lock r1 PR --noqueue >"$S/nq.out" 2>"$S/nq.err"; rc=$?
check "node2: PR NOQUEUE on r1 fails with EAGAIN" grep -q '^error EAGAIN$' "$S/nq.out"
check_eq "... and dg_tool exits 1" 1 "$rc"
dg 3 cancel r1 PR --after 1000 >"$S/cancel.out" 2>&1; rc=$?
check "node3: a waiting PR request is cancelled (-ECANCELED)" grep -q '^canceled$' "$S/cancel.out"
check "node1 got a blocking callback for PR" wait_line h1 5 '^bast PR$'
stop h1

# ---- value block: written under EX, read by the next holder ----------------------
bg keep 1 hold v1 NL --valblk --for 60000       # keeps the resource (and its value block) alive
check "node1 holds v1 in NL" wait_line keep 20 '^granted NL'
record_tool keep
dg 2 lock v1 EX --write hello-from-2 >"$S/lvbw.out" 2>"$S/lvbw.err"
check "node2 takes v1 in EX and releases it writing the value block" grep -q '^released$' "$S/lvbw.out"
dg 3 lock v1 PR --valblk >"$S/lvbr.out" 2>"$S/lvbr.err"
check "node3 reads the value block node2 wrote" grep -q '^granted PR lvb=hello-from-2$' "$S/lvbr.out"
stop keep

# ---- PR/EX ping-pong across three nodes ---------------------------------------------
ROUNDS=12
t0=$(ms)
for k in 1 2 3; do bg pp$k $k pingpong pp --rounds $ROUNDS --hold 400 --members 3; done
pp_ok=1
for k in 1 2 3; do finished pp$k 90 || true; [ "$RC" = 0 ] || { pp_ok=0; show pp$k; }; done
check "ping-pong: all three nodes finish $ROUNDS rounds" test "$pp_ok" = 1
diag "ping-pong took $(( $(ms) - t0 )) ms"
wrote=$(cat "$S"/pp[123].out | sed -n 's/^wrote //p' | sort -n | tr '\n' ' ')
check_eq "ping-pong: every increment of the value-block counter happened once (1..$((3 * ROUNDS)))" \
  "$(seq 1 $((3 * ROUNDS)) | tr '\n' ' ')" "$wrote"
# A node saw another node's write when its first read is not 0 or a read
# jumps past its own last write.
readers=0
for k in 1 2 3; do
  sed -n 's/^got //p' "$S/pp$k.out" | awk 'NR==1 && $1>0 {moved=1} NR>1 && $1>prev+1 {moved=1} {prev=$1} END {exit !moved}' &&
    readers=$((readers + 1))
done
check "ping-pong: at least two nodes read values another node wrote under EX ($readers)" test "$readers" -ge 2
check "ping-pong: blocking callbacks drove the hand-offs" \
  test "$(cat "$S"/pp[123].out | grep -c '^bast EX$')" -ge "$ROUNDS"

# ---- kill -9 of a holder process (its corosync stays up) ------------------------------
bg k1 1 hold k1 EX --for 60000
check "node1 holds k1 in EX" wait_line k1 20 '^granted EX'
record_tool k1
bg k2 2 lock k1 EX --wait 20000
check "node2 waits for k1" wait_until 20 grep -q 'joined lockspace' "$S/k2.err"
sleep 0.5
t0=$(ms); kill -KILL "$(tool_pid k1)"
finished k2 25
elapsed=$(( $(ms) - t0 ))
check "node2 gets k1 once node1's dg_tool is killed (clean CPG leave)" has k2 '^granted EX'
check "... at once, not after the ${DEADLINE} ms deadline (took ${elapsed} ms)" test "$elapsed" -lt 2500
check "... logged as a clean leave" grep -q 'left the lockspace cleanly' "$S/k2.err"

# ---- kill of a holder node's corosync ------------------------------------------------------
bg c1 1 hold c1 EX --for 60000
check "node1 holds c1 in EX" wait_line c1 20 '^granted EX'
record_tool c1
bg c2 2 lock c1 EX --wait 40000
check "node2 waits for c1" wait_until 20 grep -q 'joined lockspace' "$S/c2.err"
sleep 0.5
t0=$(ms)
check "kill 1 corosync" "$LAB" kill 1 corosync
finished c2 45
elapsed=$(( $(ms) - t0 ))
check "node2 gets c1 after node1's corosync died" has c2 '^granted EX'
check "... only after the self-fence deadline: ${elapsed} ms >= ${DEADLINE} ms + detection" test "$elapsed" -ge $((DEADLINE + 1500))
check "... and not much later (${elapsed} ms < $((DEADLINE + 8000)) ms)" test "$elapsed" -lt $((DEADLINE + 8000))
check "... node2 logged the node down and the deadline fencing" \
  bash -c "grep -q 'is down holding locks' '$S/c2.err' && grep -q 'self-fence deadline passed' '$S/c2.err'"
check "node1's dg_tool learns its lock is lost (-ENOTCONN)" wait_line c1 10 '^lost EX'
check "... and its quorum callback says 0" has c1 '^event quorum 0'
stop c1
check "start 1 corosync" "$LAB" start 1 corosync
check "three members again" wait_until 30 sees 1 "members=3 quorate=yes ids=1,2,3"

# ---- partition: node3 loses quorum, 1 and 2 keep it; heal: node3 rejoins fresh ----------
bg watch2 2 watch --for 90000          # a member on the majority side to hand out snapshots
check "node2 watcher joined" wait_line watch2 20 '^connected'
record_tool watch2
bg probe3 3 probe p1 --for 90000
check "node3 holds p1 in EX" wait_line probe3 20 '^granted EX'
record_tool probe3
bg p1 1 lock p1 EX --wait 40000
check "node1 waits for p1" wait_until 20 grep -q 'joined lockspace' "$S/p1.err"
sleep 0.5
t0=$(ms)
check "partition 3" "$LAB" partition 3
check "node3 loses quorum (quorum callback 0)" wait_line probe3 20 '^event quorum 0$'
check "node3 gets no grant without quorum (NOQUEUE: EAGAIN)" wait_line probe3 10 '^probe-noquorum EAGAIN$'
finished p1 45
elapsed=$(( $(ms) - t0 ))
check "node1 (majority) gets p1 after node3's self-fence deadline (${elapsed} ms)" has p1 '^granted EX'
check "... not before the deadline" test "$elapsed" -ge "$DEADLINE"
dg 1 members >"$S/members1.out" 2>/dev/null
check "nodes 1 and 2 keep quorum" grep -q '^quorate 1$' "$S/members1.out"
check "node2's watcher never lost quorum" bash -c "! grep -q '^event quorum 0' '$S/watch2.out'"
check "heal 3" "$LAB" heal 3
check "node3 drops its old locks at the merge (-ENOTCONN)" wait_line probe3 20 '^lost EX$'
check "node3 rejoins fresh and can lock p1 again" wait_line probe3 30 '^probe-rejoined granted$'
has probe3 '^probe-rejoined granted$' || show probe3
check "... its log shows the takeover and a snapshot join" \
  bash -c "grep -q 'takeover: partition merge' '$S/probe3.err' && grep -q 'joined lockspace .* from node 2.s snapshot' '$S/probe3.err'"
finished probe3 10
stop watch2

# ---- sanitizer reports, if this is a SAN build ------------------------------------------------
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$S"/*.err >/dev/null 2>&1; then
  not_ok "sanitizer report in a dg_tool log"; grep -hE -A15 'Sanitizer|runtime error' "$S"/*.err | head -40 | sed 's/^/# /'
else
  ok "no sanitizer report in any dg_tool log"
fi

check "lab down" "$LAB" down
diag "dlmglue_cluster took $(($(date +%s) - t_start)) s"
finish
