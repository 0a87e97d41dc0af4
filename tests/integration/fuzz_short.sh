#!/usr/bin/env bash
# fuzz_short.sh — a short run of every libFuzzer harness (tests/fuzz/fuzz_*.c:
# the protocol decoders, the redirect-io frame decoder, the engine on damaged
# images) from their committed seeds, FUZZ_SHORT_SECONDS (default 20) each:
# no crash, no sanitizer report, no leak, no hang. The long runs are
# `make fuzz FUZZ_SECONDS=...` (docs/hostile-input.md, docs/testing.md).
# A skip (not a failure) when clang or its libFuzzer runtime is missing:
# `make deps` installs both (clang, libclang-rt-14-dev).
source "$(dirname "$0")/../lib.sh"

SECONDS_EACH=${FUZZ_SHORT_SECONDS:-20}
skip() { ok "fuzz_short skipped: $* # SKIP"; exit 0; }
command -v clang >/dev/null 2>&1 || skip "clang not installed (make deps)"
S=$(scratch_dir)
on_exit "rm -rf '$S'"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return d && n == 1 && d[0] == 0; }\n' >"$S/probe.c"
clang -fsanitize=fuzzer,address,undefined "$S/probe.c" -o "$S/probe" >"$S/probe.log" 2>&1 ||
  skip "no libFuzzer runtime for clang (libclang-rt-14-dev; make deps): $(head -1 "$S/probe.log")"

cd "$TOP" || exit 1
# run.sh prints "ok - fuzz NAME: N inputs in Ts, no crash" or "not ok - ..."
# for each harness, then a summary this test does not need.
BUILD=$BUILD FUZZ_SECONDS=$SECONDS_EACH tests/fuzz/run.sh tests/fuzz/fuzz_*.c | grep -E '^(ok|not ok) |^    |ERROR|SUMMARY|runtime error'
[ "${PIPESTATUS[0]}" -eq 0 ] || TEST_FAILS=$((TEST_FAILS + 1))
for f in tests/fuzz/fuzz_*.c; do
  name=$(basename "$f" .c)
  seeds=$(find "tests/fuzz/corpus/$name" -type f 2>/dev/null | wc -l)
  check "fuzz $name starts from committed seeds ($seeds in tests/fuzz/corpus/$name)" test "$seeds" -gt 0
done
finish
