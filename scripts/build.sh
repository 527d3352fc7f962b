#!/usr/bin/env bash
# Installs what is missing and builds mycel into build/ (ccache when present).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# gtest discovery and torch compile units are memory-heavy; 2 jobs fit these machines.
jobs="${MYCEL_JOBS:-$(nproc)}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs" "$@"
