#!/usr/bin/env bash
# Forgetting, measured (tests/bench/forgetting_bench.py): five phases of two
# Fashion-MNIST classes through real daemons, with replay, without, with no
# memory at all, and an i.i.d. run of the same length.
#   tests/bench/forgetting_bench.sh [phase_steps=1500] [replay arms=0.5,0]
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake --build build --target myceld mycel >/dev/null
exec python3 tests/bench/forgetting_bench.py "$@"
