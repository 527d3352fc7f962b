#!/usr/bin/env bash
# Resting, measured (tests/bench/rest_bench.py): CPU of a converged daemon
# against one with rest = false, over the same window, and the wake-up after
# an ingest.   tests/bench/rest_bench.sh [window_s=60]
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake --build build --target myceld mycel >/dev/null
exec python3 tests/bench/rest_bench.py "$@"
