#!/usr/bin/env bash
# make soak: the random_ops runs (tests/integration/random_ops.sh, docs/testing.md) for as
# long as asked. SOAK_OPS (default 100000) caps each run's operations, i.e. the operations
# per role; SOAK_SECONDS (default 600) caps each plain run's time: the two standalone runs,
# then the six lab runs (coordinator, participant, across three nodes; file and
# namespace), one after the other — or side by side with SOAK_PARALLEL=1 (more
# interleavings between nodes, far fewer operations: docs/testing.md, "make soak").
# SOAK_ROLE_SECONDS (default SOAK_SECONDS / 2)
# is the length of the role-change pair (node2 and node3 working while node1's daemon is
# killed -9 whenever it is the coordinator; SOAK_KILLS=0: moved instead). So the whole
# soak takes at most about 8 x SOAK_SECONDS + SOAK_ROLE_SECONDS (3 x with SOAK_PARALLEL=1).
# SOAK_STANDALONE=0 leaves the standalone runs out. SOAK_SEED fixes the seed. SOAK_MODES ("file ns", the default; "ns" or "file") picks the
# testers of the plain runs; SOAK_NS_COMPARE (default 500) is the namespace tester's
# full-tree compare interval: every operation is checked and what it touched compared
# after it (fsrand -T), the whole tree every SOAK_NS_COMPARE operations and at the end
# (make check's bounded run: every 25; a full compare costs a lookup per object of the
# tree, which on a participant is a round trip to the coordinator).
# Not part of make check. Ends with a summary: operations done per run, role changes,
# failures.
set -u
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
secs=${SOAK_SECONDS:-600}
ops=${SOAK_OPS:-100000}
per=$secs; [ "$per" -ge 5 ] || per=5
role=${SOAK_ROLE_SECONDS:-$(( secs / 2 ))}; [ "$role" -ge 10 ] || role=10
log_dir="$BUILD/test-logs"; mkdir -p "$log_dir"
out="$log_dir/soak.log"
echo "soak: up to $ops operations per run, $per s per run, $role s under role changes (log: $out)"
start=$(date +%s)
# A lab of its own (random_ops in make check uses "randops"): a soak beside a make check
# must not take the other's lab down.
CSVFS_TEST_LAB=${CSVFS_TEST_LAB:-soak} RANDOPS_KILLS=${SOAK_KILLS:-1} RANDOPS_ROLE_CROSS=1 RANDOPS_PARALLEL=${SOAK_PARALLEL:-0} RANDOPS_OPS=$ops RANDOPS_SECONDS=$per RANDOPS_ROLE_SECONDS=$role RANDOPS_SHRINK=${SOAK_SHRINK:-60} \
  RANDOPS_SEED=${SOAK_SEED:-} RANDOPS_STANDALONE=${SOAK_STANDALONE:-1} \
  RANDOPS_MODES=${SOAK_MODES:-file ns} RANDOPS_NS_COMPARE=${SOAK_NS_COMPARE:-500} RANDOPS_TOUCHED=1 BUILD="$BUILD" timeout $(( per * 8 + role + 1800 )) bash tests/integration/random_ops.sh >"$out" 2>&1
rc=$?
grep -E '^(ok|not ok)' "$out"
echo "---- soak summary ($(( $(date +%s) - start )) s)"
sed -n 's/^# \(ok fsrand .*\)/\1/p; s/^# \(FAIL fsrand .*\)/\1/p' "$out" | cut -c1-160
awk '/^# ok fsrand/ { for (i = 1; i <= NF; i++) if ($i ~ /^ops=/) { sub("ops=", "", $i); s += $i } }
     END { print "operations in passing runs: " s + 0 }' "$out"
grep -E '^# role changes' "$out" | sed 's/^# //'
p=$(grep -c '^ok ' "$out"); f=$(grep -c '^not ok ' "$out")
echo "$p passed, $f failed"
[ "$rc" -eq 0 ] && [ "$f" -eq 0 ]
