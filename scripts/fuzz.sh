#!/usr/bin/env bash
# libFuzzer over every parser that reads outside bytes (tests/fuzz/): a
# clang build with AddressSanitizer and UndefinedBehaviorSanitizer into
# build-fuzz/, then each target for SECONDS (default 60) from a copy of its
# seed corpus (tests/fuzz/corpus/<target>). Exits non-zero on the first
# crash, leak or sanitizer report, and leaves the input that caused it as
# build-fuzz/crash-* (reproduce: build-fuzz/bin/<target> build-fuzz/crash-...).
#   scripts/fuzz.sh            60 s per target
#   scripts/fuzz.sh 600        the long run the README quotes
#   scripts/fuzz.sh 10 codec   one target (fuzz_codec) for 10 s
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
only=${2:-}
scripts/install-deps.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
CC=clang CXX=clang++ cmake -S tests/fuzz -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"${MYCEL_JOBS:-$(nproc)}" >/dev/null
targets=(codec snapshot payload session h2_screen importers config)
[ -n "$only" ] && targets=("$only")
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/fuzz_$t
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/fuzz_$t/* "$corpus"/ 2>/dev/null || true
  echo "== fuzz_$t for ${seconds}s"
  # -rss_limit_mb: a parser that allocates what its input claims is a finding.
  UBSAN_OPTIONS=print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    build-fuzz/bin/fuzz_$t -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=65536 \
      -artifact_prefix=build-fuzz/ -print_final_stats=1 "$corpus" 2>build-fuzz/fuzz_$t.log || {
      tail -n 40 build-fuzz/fuzz_$t.log
      echo "fuzz_$t: FAILED (log: build-fuzz/fuzz_$t.log)"
      exit 1
    }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' build-fuzz/fuzz_$t.log)
  added=$(sed -n 's/^stat::new_units_added: *//p' build-fuzz/fuzz_$t.log)
  echo "fuzz_$t: $runs inputs, $added new in the corpus, no crash"
done
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"
