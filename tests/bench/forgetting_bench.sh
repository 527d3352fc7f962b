#!/usr/bin/env bash
# Forgetting, measured (tests/bench/forgetting_bench.py): five phases of two
# Fashion-MNIST classes through real daemons, with each replay pool, without
# replay, with no memory at all, trained jointly on every class seen so far,
# and an i.i.d. run of the same length.
#   tests/bench/forgetting_bench.sh [phase_steps=1500] [arms=POOL:F,...] [references=sequential,joint,iid]
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake --build build --target myceld mycel >/dev/null
exec python3 tests/bench/forgetting_bench.py "$@"
