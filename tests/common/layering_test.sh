#!/usr/bin/env bash
# The build's layering check (cmake/CheckLayering.cmake) against the rules the
# configure step wrote from the real link edges: the real tree passes, and a
# copy with one upward include (data → daemon) or one unlinked sideways include
# (metrics → crypto) fails, naming the file and the missing edge.
#   layering_test.sh <source dir> <rules.cmake>
set -euo pipefail
src=$1/src
rules=$2
check=$1/cmake/CheckLayering.cmake
cmake -DRULES="$rules" -DSRC="$src" -P "$check"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
expect_refused() {  # <module> <file> <include> <wanted text>
  rm -rf "$tmp/src" && cp -r "$src" "$tmp/src"
  printf '#include "%s"\n' "$3" >> "$tmp/src/$1/$2"
  if out=$(cmake -DRULES="$rules" -DSRC="$tmp/src" -P "$check" 2>&1); then
    echo "FAIL: $1/$2 including $3 passed the check" >&2
    exit 1
  fi
  # CMake wraps messages: compare with the whitespace folded.
  if ! grep -qF "$4" <<<"$(tr -s ' \n' '  ' <<<"$out")"; then
    echo "FAIL: the message lacks '$4':" >&2
    echo "$out" >&2
    exit 1
  fi
}
expect_refused data history.cc daemon/node.h \
  "src/data/history.cc: #include \"daemon/node.h\": module 'data' does not link module 'daemon'"
expect_refused metrics exposition.cc crypto/identity.h \
  "src/metrics/exposition.cc: #include \"crypto/identity.h\": module 'metrics' does not link module 'crypto'"
echo "layering: real tree passes; an upward and a sideways include are refused"
