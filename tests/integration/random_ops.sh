#!/usr/bin/env bash
# Random operation sequences checked against a model (issue 15; tests/helpers/fsrand.c,
# docs/testing.md): file and namespace runs on a standalone mount, then on a 3-node
# csvfs-lab — on the coordinator, on a participant, across all three nodes (one
# directory seen through each node's mount, a VM-migration handoff at every switch),
# and on node2 + node3 while the coordinator role keeps moving (csvctl move, node1 and
# back; with RANDOPS_KILLS=1 node1's daemon is killed -9 and restarted whenever it is
# the coordinator, so the tester's own mounts never die): it must see no error. Ends
# with the lab down and e2fsck -fn of the LUN clean.
#
# make check runs the role-change phase under moves; the coordinator killed under
# the namespace tester is churn.sh's part of make check (issue 9). make soak
# (RANDOPS_KILLS=1) runs the kills phase here too: node1's daemon killed -9
# whenever it is the coordinator, for longer.
#
# Knobs (make soak sets them, tests/soak.sh): RANDOPS_OPS operations per run (3000),
# RANDOPS_SECONDS time cap per run (20), RANDOPS_ROLE_SECONDS length of the
# role-change run (40), RANDOPS_SHRINK minimiser budget per failure (15),
# RANDOPS_SEED a fixed seed (default: a new one per run, printed), RANDOPS_KILLS=1
# kill -9 node1's daemon when it is the coordinator instead of moving the role away,
# RANDOPS_STANDALONE=0 no standalone runs (a soak of the lab's roles alone),
# RANDOPS_ONLY_ROLE=1 only the role-change runs (no standalone, coordinator,
# participant or three-node runs: for looping the role phase alone), =moves or
# =kills only that one role-change run (with RANDOPS_ROLE_CROSS=1 as in make soak),
# RANDOPS_PARALLEL=1 the six lab runs before the role phase side by side (make soak),
# RANDOPS_MODES which testers the standalone, coordinator, participant and three-node
# runs use ("file ns", the default; "ns" or "file" alone), RANDOPS_NS_COMPARE the
# namespace tester's full-tree compare interval (fsrand -k; default 25), RANDOPS_TOUCHED=1
# what each namespace operation touched compared after it too (fsrand -T; make soak).
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-randops}   # another name lets two checkouts run it side by side
unset CSVFS_BIN CSVFS_LAB_TOKEN
export CSVFS_LAB_DAEMON_OPTS="fence_deadline=4000,pause_timeout=20000"
V=/ClusterStorage/Volume1
FSRAND="$TBIN/fsrand"
OPS=${RANDOPS_OPS:-3000}
SECS=${RANDOPS_SECONDS:-20}
ROLE_SECS=${RANDOPS_ROLE_SECONDS:-40}
SHRINK=${RANDOPS_SHRINK:-15}
SEED=${RANDOPS_SEED:-}
KILLS=${RANDOPS_KILLS:-0}
ONLY_ROLE=${RANDOPS_ONLY_ROLE:-0}
MODES=${RANDOPS_MODES:-file ns}
NS_COMPARE=${RANDOPS_NS_COMPARE:-}
case " $MODES " in *" file "*|*" ns "*) ;; *) MODES_BAD=1 ;; esac
case $NS_COMPARE in ''|[1-9]|[1-9][0-9]*) ;; *) MODES_BAD=1 ;; esac

skip() { ok "random_ops skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare e2fsck; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] || { not_ok "$LAB missing"; finish; exit; }
[ -x "$FSRAND" ] || { not_ok "$FSRAND missing (make $BUILD/tests/fsrand)"; finish; exit; }

if [ -n "${MODES_BAD:-}" ]; then
  not_ok "RANDOPS_MODES='$MODES' (file, ns or both) or RANDOPS_NS_COMPARE='$NS_COMPARE' (a positive count) is not valid"
  finish; exit
fi
wants() { case " $MODES " in *" $1 "*) return 0 ;; esac; return 1; }

S=$(scratch_dir)
RUNS=0
t_start=$(date +%s)

# fsrand_run WHAT MODE [fsrand options] ROOT... — one bounded run; an ok/not ok line,
# then fsrand's summary (or its failure and minimised sequence) as "# " lines.
fsrand_run() {
  local what=$1 mode=$2; shift 2
  RUNS=$((RUNS + 1))
  local out="$S/fsrand-$RUNS.out" rc k=()
  [ "$mode" = ns ] && [ -n "$NS_COMPARE" ] && k=(-k "$NS_COMPARE")
  [ "$mode" = ns ] && [ "${RANDOPS_TOUCHED:-0}" = 1 ] && k+=(-T)
  timeout $((SECS + SHRINK * 4 + 240)) "$FSRAND" "$mode" -n "$OPS" -t "$SECS" -S "$SHRINK" ${SEED:+-s "$SEED"} \
    "${k[@]}" -p "ro$RUNS" "$@" >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then ok "$what: fsrand $mode"; else not_ok "$what: fsrand $mode (exit $rc)"; fi
  if [ "$(wc -l <"$out")" -gt 70 ]; then
    head -12 "$out" | sed 's/^\([^#]\)/# \1/'; echo "#   ... ($(wc -l <"$out") lines, all in $out)"
    tail -45 "$out" | sed 's/^\([^#]\)/# \1/'
  else
    sed 's/^\([^#]\)/# \1/' "$out"
  fi
  cat "$out" >>"$S/all-runs.out"
  return "$rc"
}

fault_control() {
  local out="$S/fault-control.out" made failed_at
  timeout 120 "$FSRAND" ns -s 1 -n 400 -k 100000 -T -F 30 -S 2 -p fault "$S/sa/rt" >"$out" 2>&1
  made=$(sed -n 's/^# -F: after op #\([0-9]*\) made.*/\1/p' "$out")
  failed_at=$(sed -n 's/^FAIL fsrand ns seed=[0-9]* op #\([0-9]*\) of.*/\1/p' "$out" | head -1)
  if [ -n "$made" ] && [ "$failed_at" = "$made" ] && grep -q 'readdir lists fault' "$out"; then
    ok "standalone: fsrand ns fails at the operation after which an unmodelled entry appeared (op #$made)"
  else
    not_ok "standalone: fsrand ns -F 30 did not fail at the faulted operation (made after #${made:-?}, failed at #${failed_at:-none})"
    sed 's/^/# /' "$out" | head -20
  fi
}

# ---- standalone -----------------------------------------------------------------------
truncate -s 1G "$S/sa.img"
"$BIN/mkfs.csvfs" "$S/sa.img" >/dev/null
if [ "$ONLY_ROLE" != 0 ] || [ "${RANDOPS_STANDALONE:-1}" = 0 ]; then
  diag "RANDOPS_ONLY_ROLE=$ONLY_ROLE RANDOPS_STANDALONE=${RANDOPS_STANDALONE:-1}: standalone runs left out"
elif mount_csvfs "$S/sa.img" "$S/sa"; then
  mkdir -p "$S/sa/rt"
  wants file && fsrand_run "standalone" file standalone="$S/sa/rt"
  wants ns && fsrand_run "standalone" ns standalone="$S/sa/rt"
  # The negative control of the check after every operation: with the tree compared
  # only at the end (-k), an entry made behind the model's back after operation 30 must
  # fail the run at the operation it was made after.
  wants ns && fault_control
  umount_csvfs "$S/sa"
  fsck_clean "$S/sa.img" "$S/sa-fsck.out"; rc=$?
  check_eq "standalone: e2fsck -fn clean after the runs" 0 "$rc"
else
  not_ok "standalone mount"
fi

# ---- a 3-node lab ----------------------------------------------------------------------
LUN=$S/lun.img
truncate -s 2G "$LUN"
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/random_ops'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/random_ops/' 2>/dev/null"
"$LAB" up -n 3 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, csvfs mounted on every node" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }

on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- "$@"; }
coordinator() {
  on "$1" "$BIN/csvctl" status --json 2>/dev/null | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p' | head -1
}
daemon_pid() { (eval "$("$LAB" env "$1")"; echo "${CSVFS_LAB_CSVFS_PID:-}"); }
# root K — the test directory as node K's mount sees it, through the magic link
# /proc/<node K's csvfs pid>/root (one process drives every node).
root() { echo "node$1=/proc/$(daemon_pid "$1")/root$V/rt"; }

check "every node knows the coordinator" wait_until 30 sh -c "[ -n \"\$(\"$LAB\" exec 1 -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]\\+\\)\".*/\\1/p')\" ]"
on 1 mkdir -p "$V/rt"
for k in 1 2 3; do
  r=$(root "$k"); p=${r#*=}
  check "node$k's mount is reachable as ${p%$V/rt}" test -d "$p"
done
d1=$(stat -c %d "$(root 1 | cut -d= -f2)"); d2=$(stat -c %d "$(root 2 | cut -d= -f2)")
check "... and each node's root is its own mount (st_dev $d1 vs $d2)" test "$d1" != "$d2"

# Runs side by side (each on its own work directory, -p): bg_run WHAT MODE ARGS... starts
# one in the background, bg_wait waits for all started, prints their lines in start order
# and counts their failures here (a subshell's not_ok does not reach this shell).
BG_PIDS=(); BG_TAPS=()
bg_run() {
  local tap="$S/bg-$((RUNS + 1)).tap"
  ( fsrand_run "$@" >"$tap" ) &
  BG_PIDS+=($!); BG_TAPS+=("$tap")
  RUNS=$((RUNS + 1))   # the subshell counted its run in its own copy: distinct run numbers
}
bg_wait() {
  local p t
  for p in "${BG_PIDS[@]}"; do wait "$p"; done
  for t in "${BG_TAPS[@]}"; do
    cat "$t"
    grep -q '^not ok' "$t" && TEST_FAILS=$((TEST_FAILS + 1))
  done
  BG_PIDS=(); BG_TAPS=()
}

C=$(coordinator 1); cn=${C#node}; pn=$(( cn % 3 + 1 ))
diag "coordinator node$cn, participant node$pn"
# one after another in make check; RANDOPS_PARALLEL=1 (make soak) runs the six at once
# (more interleavings across nodes, and a soak's wall time is that of the slowest run)
plain_run() {
  wants "$2" || return 0
  if [ "${RANDOPS_PARALLEL:-0}" = 1 ]; then bg_run "$@"; else fsrand_run "$@"; fi
}
if [ "$ONLY_ROLE" = 0 ]; then
  plain_run "coordinator node$cn" file "$(root "$cn")"
  plain_run "coordinator node$cn" ns "$(root "$cn")"
  plain_run "participant node$pn" file "$(root "$pn")"
  plain_run "participant node$pn" ns "$(root "$pn")"
  plain_run "across node1, node2, node3" file -m 6 "$(root 1)" "$(root 2)" "$(root 3)"
  plain_run "across node1, node2, node3" ns -m 6 "$(root 1)" "$(root 2)" "$(root 3)"
  bg_wait
fi

# ---- role changes under the tester ------------------------------------------------------
# fsrand drives node2 and node3 only; node1 is moved to (and with KILLS=1 killed), so
# the tester's own mounts never die. Every loop is bounded (deadline and iterations).
role_loop() {
  local stop=$1 deadline=$(( $(date +%s) + ROLE_SECS + 60 )) i=0 moves=0 kills=0 fails=0 c
  local max_changes=$(( ROLE_SECS / 2 + 60 ))   # at least 2 s apart: bounded by the deadline too
  while [ ! -e "$stop" ] && [ "$(date +%s)" -lt "$deadline" ] && [ "$i" -lt "$max_changes" ]; do
    i=$((i + 1))
    sleep 2
    [ -e "$stop" ] && break
    c=$(coordinator 2)
    if [ "$c" = node1 ] && [ "$KILLS" = 1 ]; then
      if "$LAB" kill 1 csvfs >/dev/null 2>&1 && "$LAB" start 1 csvfs >/dev/null 2>&1; then
        kills=$((kills + 1))
      else fails=$((fails + 1)); fi
    elif [ "$c" = node1 ]; then
      # away from node1, to node2 and node3 in turn: the tester's own nodes serve too
      if on 2 "$BIN/csvctl" move "node$(( i % 2 + 2 ))" >/dev/null 2>&1; then moves=$((moves + 1)); else fails=$((fails + 1)); fi
    elif [ -n "$c" ]; then
      if on 2 "$BIN/csvctl" move node1 >/dev/null 2>&1; then moves=$((moves + 1)); else fails=$((fails + 1)); fi
    fi
    # wait (bounded) until node2 names a live coordinator again
    wait_until 30 sh -c "[ -n \"\$(\"$LAB\" exec 2 -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]\\+\\)\".*/\\1/p')\" ]" || fails=$((fails + 1))
  done
  echo "moves=$moves kills=$kills failed=$fails" >"$S/roles.out"
}
# In make check one node (node2) works through the moves; make soak (RANDOPS_ROLE_CROSS=1)
# hands the work between node2 and node3 as well (docs/testing.md, "Known failures":
# what that found, and what it finds no more).
R2=$(root 2); R3=$(root 3); ROLE_ROOTS=("$R2"); [ "${RANDOPS_ROLE_CROSS:-0}" = 1 ] && ROLE_ROOTS=("$R2" "$R3")
# role_phase HOW — one run of the file and the namespace tester side by side
# while role_loop moves the role (HOW=moves) or kills the coordinator's daemon
# (HOW=kills, KILLS=1).
role_phase() {
  local how=$1 stop=$S/roles-$1.stop rl
  [ "$how" = kills ] && KILLS=1 || KILLS=0
  role_loop "$stop" &
  rl=$!
  SECS_SAVE=$SECS; SECS=$ROLE_SECS
  bg_run "${#ROLE_ROOTS[@]} node(s) while the coordinator's role changes ($how)" file -m 6 "${ROLE_ROOTS[@]}"
  # ns -D: every change is fsynced before the next operation, so nothing acknowledged may
  # be lost when node1's daemon dies as coordinator (what was not fsynced may be).
  bg_run "${#ROLE_ROOTS[@]} node(s) while the coordinator's role changes ($how)" ns -D -m 6 "${ROLE_ROOTS[@]}"
  bg_wait
  SECS=$SECS_SAVE
  touch "$stop"
  wait $rl
  roles=$(cat "$S/roles.out" 2>/dev/null)
  diag "role changes during the $how run: $roles"
  check "at least one role change happened under the tester ($how: $roles)" \
    sh -c "echo '$roles' | grep -qvE 'moves=0 kills=0'"
}
# make check: a run under moves (kills: churn.sh); make soak (RANDOPS_KILLS=1):
# kills only, for longer.
case $ONLY_ROLE in
  moves) role_phase moves ;;
  kills) role_phase kills ;;
  *) if [ "$KILLS" = 1 ]; then role_phase kills; else role_phase moves; fi ;;
esac

# ---- the end: lab down, logs, e2fsck ------------------------------------------------------
lab_down_checked "$LUN"
total=$(sed -n 's/^ok fsrand [a-z]* seed=[0-9]* ops=\([0-9]*\).*/\1/p' "$S/all-runs.out" 2>/dev/null | awk '{s+=$1} END {print s+0}')
diag "random_ops: $RUNS runs, $total operations in passing runs, $(( $(date +%s) - t_start )) s"
finish
