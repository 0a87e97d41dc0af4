#!/usr/bin/env bash
# Builds and runs libFuzzer harnesses: tests/fuzz/run.sh tests/fuzz/fuzz_*.c
# (make fuzz). Each harness is one .c file with LLVMFuzzerTestOneInput that
# names what it links in comment lines at its top:
#   // fuzz-sources: module/a.c module/b.c     library sources to compile in
#   // fuzz-cflags: ...                         optional extra compiler flags
#   // fuzz-libs: -lfoo                         optional extra link flags
#   // fuzz-args: -max_len=512                  optional extra libFuzzer options
# Built with clang -fsanitize=fuzzer,address,undefined into $BUILD/fuzz/ (again
# only when the harness or a source it names is newer than the binary) and
# run for FUZZ_SECONDS (default 60; FUZZ_RUNS=N stops it after N inputs if that comes
# first, for a run to a depth) from its committed seeds in
# tests/fuzz/corpus/<name>/ (read only) plus a working corpus in
# $BUILD/fuzz/corpus/<name>/. A crash leaves its input in $BUILD/fuzz/artifacts/.
# Needs clang and the libFuzzer runtime (Debian: libclang-rt-14-dev).
# Exits non-zero if any harness fails to build or crashes.
set -u
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_RUNS=${FUZZ_RUNS:-}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
out="$BUILD/fuzz"
mkdir -p "$out/artifacts"

if ! command -v clang >/dev/null; then
  echo "fuzz: clang not found (make deps)" >&2
  exit 1
fi
[ $# -gt 0 ] || set -- tests/fuzz/fuzz_*.c
passed=0; failed=0

header_field() { sed -n "s|^// $1:[[:space:]]*||p" "$2" | head -1; }

# The binary is older than the harness, a source it links, or a header.
needs_build() {   # $1 = harness, $2 = binary
  [ -x "$2" ] || return 0
  local f
  # shellcheck disable=SC2046 # the header's globs are meant to expand
  for f in "$1" $(header_field fuzz-sources "$1") fs/*.h journal/*.h redirect-io/*.h dlm-glue/*.h; do
    [ "$f" -nt "$2" ] && return 0
  done
  return 1
}

for src in "$@"; do
  [ -f "$src" ] || continue
  name=$(basename "$src" .c)
  bin="$out/$name"
  # shellcheck disable=SC2046 # word splitting of the header lists is intended
  if needs_build "$src" "$bin" && ! clang -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -g -O1 -I. \
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
       $(header_field fuzz-cflags "$src") "$src" $(header_field fuzz-sources "$src") \
       -o "$bin" $(header_field fuzz-libs "$src") -pthread >"$out/$name.build.log" 2>&1; then
    echo "not ok - fuzz $name: build failed"
    tail -20 "$out/$name.build.log"
    failed=$((failed + 1))
    continue
  fi
  work="$out/corpus/$name"; seeds="tests/fuzz/corpus/$name"
  mkdir -p "$work"
  corpora=("$work")
  [ -d "$seeds" ] && corpora+=("$seeds")
  # libFuzzer's own limits bound the run; timeout is a backstop.
  # shellcheck disable=SC2046 # the header's options are words
  timeout $((FUZZ_SECONDS + 120)) "$bin" -max_total_time="$FUZZ_SECONDS" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" \
    $(header_field fuzz-args "$src") "${corpora[@]}" >"$out/$name.log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$out/$name.log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$out/$name.log" | tail -1)
    echo "ok - fuzz $name: ${runs:-?} inputs in ${secs:-$FUZZ_SECONDS}s, no crash"
    passed=$((passed + 1))
  else
    echo "not ok - fuzz $name: exit $rc (log $out/$name.log, inputs $out/artifacts/$name-*)"
    grep -E 'ERROR|SUMMARY|runtime error' "$out/$name.log" | head -10
    failed=$((failed + 1))
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
