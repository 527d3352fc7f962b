#!/usr/bin/env bash
# README command 2: installs what is missing, builds into build/, runs every test.
#   scripts/test.sh              all tests, after a 10 s fuzzing smoke run per parser
#   scripts/test.sh -L unit      fast unit tests only (ctest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/build.sh
echo "build finished in $(( $(date +%s) - start )) s"
# A fuzzing smoke run of every parser (tests/fuzz/, clang + ASan/UBSan) on a
# full run; MYCEL_FUZZ_SECONDS=0 skips it, scripts/fuzz.sh runs it longer.
fuzz_seconds=${MYCEL_FUZZ_SECONDS:-10}
if [ $# -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then
  scripts/fuzz.sh "$fuzz_seconds"
  echo "build + fuzzing finished in $(( $(date +%s) - start )) s"
fi
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
echo "build + tests finished in $(( $(date +%s) - start )) s"
