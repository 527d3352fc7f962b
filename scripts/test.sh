#!/usr/bin/env bash
# README command 2: installs what is missing, builds into build/, runs every test.
#   scripts/test.sh              all tests
#   scripts/test.sh -L unit      fast unit tests only (ctest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/build.sh
echo "build finished in $(( $(date +%s) - start )) s"
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
echo "build + tests finished in $(( $(date +%s) - start )) s"
