#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 20 s each) from the committed corpora.
# cargo fuzz needs nightly-only compiler flags (sanitizers); RUSTC_BOOTSTRAP lets this stable
# toolchain accept them. A crash fails the run and leaves the input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
# The API targets hold a librdkafka client for the whole run, and librdkafka keeps a few small
# allocations LeakSanitizer reports at exit. Leaks are not what the fuzzing is for; every memory
# error AddressSanitizer finds still fails the run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
targets=$(cargo fuzz list)
count=0
for target in $targets; do
  echo "fuzz: $target for ${seconds}s"
  log=$(mktemp)
  if ! cargo fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    # The panic message, the sanitizer's report and the crashing input, not only the stack's tail.
    grep -m 1 -A 3 -E "^thread .* panicked" "$log" || true
    grep -m 2 -E "ERROR: (AddressSanitizer|libFuzzer)|SUMMARY:" "$log" || true
    grep -E "Test unit written|^Base64:" "$log" || true
    tail -n 40 "$log"
    echo "fuzz: $target failed after $count passed"
    exit 1
  fi
  tail -n 4 "$log"
  rm -f "$log"
  count=$((count + 1))
done
echo "fuzz: $count passed, 0 failed"
