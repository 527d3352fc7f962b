#!/usr/bin/env bash
# README command 2: installs what is missing, builds, runs every test.
#   scripts/test.sh              all tests in build/, after a 10 s fuzzing smoke run per parser
#   scripts/test.sh -L unit      fast unit tests only (ctest arguments pass through)
#   scripts/test.sh --sanitize=address,undefined [ctest args]
#   scripts/test.sh --sanitize=thread [ctest args]
#                                the unit and integration suites (thread: the
#                                unit suites only) built with the sanitizers
#                                into build-<list>/; every report
#                                of every process (tests, myceld, mycel) is
#                                logged under build-<list>/sanitizer-reports/
#                                and any report fails the run
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
sanitize=""
if [[ "${1:-}" == --sanitize=* ]]; then
  sanitize=${1#--sanitize=}
  shift
fi
if [ -n "$sanitize" ]; then
  scripts/build.sh --sanitize="$sanitize"
  dir=build-${sanitize//,/-}
  reports=$PWD/$dir/sanitizer-reports
  rm -rf "$reports" && mkdir -p "$reports"
  supp=$PWD/tests/sanitizers
  # Reports go to files, one per process, so a daemon's report counts even
  # when the test that started it passes; halt on the first one.
  export ASAN_OPTIONS="log_path=$reports/asan:halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1"
  export TSAN_OPTIONS="log_path=$reports/tsan:halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp"
  echo "build finished in $(( $(date +%s) - start )) s"
  # ThreadSanitizer runs the unit suites, the gRPC ones (Gossip*,
  # ControlServer*) included: tests/sanitizers/tsan.supp covers what gRPC
  # orders with its own uninstrumented locks. The whole integration suite is
  # too slow under it on two cores, so it runs only when asked
  # (-L integration; README, "Sanitizer builds").
  if [ $# -eq 0 ]; then
    if [ "$sanitize" = thread ]; then
      set -- -L unit
    else
      set -- -L 'unit|integration'
    fi
  fi
  status=0
  (cd "$dir" && ctest --output-on-failure -j"$(nproc)" "$@") || status=$?
  found=$(find "$reports" -type f | sort)
  if [ -n "$found" ]; then
    echo "sanitizer reports ($(echo "$found" | wc -l)):"
    for f in $found; do echo "== $f"; head -60 "$f"; done
    status=1
  else
    echo "sanitizers ($sanitize): no reports"
  fi
  echo "sanitized build + tests finished in $(( $(date +%s) - start )) s"
  exit $status
fi
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
