#!/usr/bin/env bash
# canary_test.sh CANARY MODE(heap|ub|race): the canary must be stopped by its
# sanitizer and leave a report naming the bug.
set -euo pipefail
canary=$1 mode=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
case $mode in
  heap) want="heap-buffer-overflow" ;;
  ub)   want="signed integer overflow" ;;
  race) want="data race" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
export ASAN_OPTIONS="log_path=$dir/report:halt_on_error=1:detect_leaks=0"
export UBSAN_OPTIONS="log_path=$dir/report:halt_on_error=1"
export TSAN_OPTIONS="log_path=$dir/report:halt_on_error=1"
if "$canary" "$mode" >/dev/null 2>&1; then
  echo "FAIL: the $mode canary ran to completion: this build is not instrumented" >&2
  exit 1
fi
if ! grep -qs "$want" "$dir"/report.*; then
  echo "FAIL: no '$want' report under $dir" >&2
  exit 1
fi
echo "ok: the sanitizer reported '$want'"
