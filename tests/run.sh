#!/usr/bin/env bash
# Runs every test: cmocka unit binaries, then integration scripts against real
# FUSE mounts. Unit binaries print cmocka's own results; integration scripts print
# "ok - ..." / "not ok - ..." lines (tests/lib.sh). Ends with "N passed, N failed".
# ONLY=pattern runs just the matching tests; UNIT_ONLY=1 only the unit binaries.
set -u
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
passed=0; failed=0; failed_names=()
only=${ONLY:-}
log_dir="$BUILD/test-logs"; mkdir -p "$log_dir"

count_cmocka() {   # $1 = output file
  local p f
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
  echo "$p $f"
}

for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  [ -n "$only" ] && [[ "$name" != *$only* ]] && continue
  out="$log_dir/$name.log"
  timeout 600 "$t" >"$out" 2>&1; rc=$?
  cat "$out"
  read -r p f < <(count_cmocka "$out")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "FAIL: $name exited $rc"; fi
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -gt 0 ] && failed_names+=("$name")
done

# UNIT_ONLY=1 (make unit): the unit binaries alone, which need no root.
for t in tests/integration/*.sh; do
  [ -f "$t" ] && [ -z "${UNIT_ONLY:-}" ] || continue
  name=$(basename "$t" .sh)
  [ -n "$only" ] && [[ "$name" != *$only* ]] && continue
  out="$log_dir/$name.log"
  echo "=== $name"
  start=$(date +%s)
  BUILD="$BUILD" timeout 1500 bash "$t" >"$out" 2>&1; rc=$?
  grep -E '^(ok|not ok|# )' "$out"
  p=$(grep -c '^ok ' "$out"); f=$(grep -c '^not ok ' "$out")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1; echo "not ok - $name exited $rc (log: $out)"; tail -20 "$out"
  fi
  echo "# $name: $p passed, $f failed in $(( $(date +%s) - start ))s"
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -gt 0 ] && failed_names+=("$name")
done

[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]} (logs in $log_dir)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
