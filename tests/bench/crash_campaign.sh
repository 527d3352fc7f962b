#!/usr/bin/env bash
# kill -9 myceld N times at random moments of ingest, training, checkpointing
# and gossip, checking after every restart that it comes up, that every
# acknowledged example is stored exactly once, that its checkpoint loads and
# that it exchanges with its neighbour again. Prints one summary line.
#   tests/bench/crash_campaign.sh [N=1000]      (about 3 s per kill)
# MYCEL_IT_SEED=S replays a run's kill moments.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-1000}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N>0]" >&2; exit 2; }
cmake --build build --target crash_campaign >/dev/null
MYCEL_CRASH_KILLS="$N" build/bin/crash_campaign --gtest_brief=1
