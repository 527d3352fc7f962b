#!/usr/bin/env bash
# mycel-sim against the trust issue's goals (tests/bench/sim_bench.py):
# scale (N = 16, 64, 256 on a ring and a random 4-regular graph, against
# central), churn (20% offline) and a backdoor with trust off and on.
#   tests/bench/sim_bench.sh scale|churn|backdoor|robust|personal|all [--rounds R] [--sizes 16,64,256]
#   tests/bench/sim_bench.sh plot RESULT.json [PNG]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "${1:-}" = plot ] || cmake --build build --target mycel-sim >/dev/null
# Debian's python3-matplotlib lives under /usr/bin/python3 (a pyenv python3 on
# PATH may lack it).
exec "${MYCEL_PYTHON:-/usr/bin/python3}" tests/bench/sim_bench.py "$@"
