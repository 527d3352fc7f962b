#!/usr/bin/env bash
# Installs what is missing and builds mycel (ccache when present).
#   scripts/build.sh [cmake --build args]                     into build/
#   scripts/build.sh --sanitize=address,undefined [args]      into build-address-undefined/
#   scripts/build.sh --sanitize=thread [args]                 into build-thread/
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=""
if [[ "${1:-}" == --sanitize=* ]]; then
  sanitize=${1#--sanitize=}
  shift
  case $sanitize in
    address,undefined|thread) ;;
    *) echo "build.sh: --sanitize takes address,undefined or thread, got '$sanitize'" >&2; exit 2 ;;
  esac
fi
dir=build${sanitize:+-${sanitize//,/-}}
scripts/install-deps.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Paths relative to the checkout and no working directory in the hash: a
# second clone (a CI run, a worktree) reuses the first one's objects.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
# gtest discovery and torch compile units are memory-heavy; 2 jobs fit these machines.
jobs="${MYCEL_JOBS:-$(nproc)}"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMYCEL_SANITIZE="$sanitize" >/dev/null
cmake --build "$dir" -j"$jobs" "$@"
