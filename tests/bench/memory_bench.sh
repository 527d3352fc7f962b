#!/usr/bin/env bash
# Memory, measured (tests/bench/memory_bench.py): myceld's RSS against a bare
# libtorch program training the same model on as many examples, side by side,
# with what myceld's RSS is made of.   tests/bench/memory_bench.sh [window_s=60] [models=mlp,cnn]
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake --build build --target myceld mycel bare_torch >/dev/null
exec python3 tests/bench/memory_bench.py "$@"
