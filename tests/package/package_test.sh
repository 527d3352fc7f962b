#!/usr/bin/env bash
# What `cmake --install` and `cpack -G DEB` deliver: binaries, man pages that
# render, the bash completion (its commands are mycel's), the example config,
# the user unit whose Documentation= page is there, and the public API: the
# apps under examples/ build out of tree against the installed package
# (find_package and pkg-config) and talk to an installed myceld.
#   package_test.sh BUILD_DIR
set -euo pipefail
build=$1
work=$(mktemp -d)
daemon=""
trap '[ -z "$daemon" ] || kill -9 "$daemon" 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$work/root" >/dev/null
for f in bin/myceld bin/mycel share/man/man1/myceld.1 share/man/man1/mycel.1 share/man/man5/mycel.toml.5 \
         share/bash-completion/completions/mycel share/doc/mycel/mycel.example.toml lib/systemd/user/myceld.service; do
  [ -e "$work/root/$f" ] || fail "cmake --install did not install $f"
done

# The public API: headers, the library (exporting the API and nothing else), and its package files.
for f in include/mycel/client.h include/mycel/mycel.h lib/libmycel.so lib/cmake/mycel/mycelConfig.cmake \
         lib/cmake/mycel/mycelConfigVersion.cmake lib/pkgconfig/mycel.pc; do
  [ -e "$work/root/$f" ] || fail "cmake --install did not install $f"
done
leaked=$(nm -D --defined-only "$work/root/lib/libmycel.so" | awk '{print $3}' | c++filt \
         | grep -E '^(google::|grpc|absl::|mycel::(control|config|data)::)' | head -3 || true)
[ -z "$leaked" ] || fail "libmycel.so exports more than the public API: $leaked"

src=$(cd "$(dirname "$0")/../.." && pwd)
cmake -S "$src/examples" -B "$work/examples" -DCMAKE_PREFIX_PATH="$work/root" >/dev/null \
  || fail "examples/ does not configure against the installed package"
cmake --build "$work/examples" >/dev/null || fail "examples/ does not build against the installed package"
export PKG_CONFIG_PATH="$work/root/lib/pkgconfig"
cc -o "$work/app-c-pc" "$src/examples/app_c.c" $(pkg-config --cflags --libs mycel) -Wl,-rpath,"$work/root/lib" \
  || fail "the C example does not build with pkg-config"

# ... and the apps work against an installed daemon: rows in, predictions and state out.
cat > "$work/node.toml" <<TOML
[node]
name = "packaged"
state_dir = "$work/state"
TOML
export MYCEL_CONFIG="$work/node.toml"
"$work/root/bin/myceld" --config "$work/node.toml" 2>"$work/myceld.log" &
daemon=$!
for _ in $(seq 100); do "$work/root/bin/mycel" status >/dev/null 2>&1 && break; sleep 0.2; done
# 30 rows of a 784-value input, one pixel lit per row; row 7's label is out of range.
awk 'BEGIN { for (r = 0; r < 30; r++) { line = (r == 6 ? 42 : r % 10);
       for (i = 0; i < 784; i++) line = line "," (i == r ? 1 : 0); print line } }' > "$work/rows.csv"
out=$("$work/examples/mycel-app" learn < "$work/rows.csv" 2>"$work/learn.err") || fail "mycel-app learn: $(cat "$work/learn.err")"
[ "$out" = "stored 29, already stored 0, refused 1" ] || fail "mycel-app learn said '$out'"
grep -q "^row 7 refused: label 42 is outside \[0, 10)" "$work/learn.err" || fail "mycel-app learn: $(cat "$work/learn.err")"
out=$(head -n 2 "$work/rows.csv" | cut -d, -f2- | "$work/examples/mycel-app" predict 2>"$work/predict.err") \
  || fail "mycel-app predict: $(cat "$work/predict.err")"
[ "$(wc -l <<<"$out")" = 2 ] && grep -qE '^[0-9] 0\.[0-9]{3} ' <<<"$out" || fail "mycel-app predict said '$out'"
out=$("$work/examples/mycel-app" status) || fail "mycel-app status"
grep -q "^packaged: .*, 29 examples, library " <<<"$out" || fail "mycel-app status said '$out'"
for app in "$work/examples/mycel-app-c" "$work/app-c-pc"; do
  out=$("$app") || fail "$app failed"
  grep -q "^state .*, 29 examples$" <<<"$out" && [ "$(wc -l <<<"$out")" = 4 ] || fail "$app said '$out'"
done
kill "$daemon"; wait "$daemon" || fail "myceld did not stop cleanly: $(tail -5 "$work/myceld.log")"
daemon=""
out=$("$work/examples/mycel-app" status 2>&1) && fail "mycel-app status without a daemon succeeded"
grep -q "UNAVAILABLE: myceld is not running (no socket at $work/state/control.sock)" <<<"$out" \
  || fail "mycel-app without a daemon said '$out'"

# The pages render without a warning, and say what they are about.
for page in man1/myceld.1 man1/mycel.1 man5/mycel.toml.5; do
  warnings=$(groff -man -Tutf8 -ww -z "$work/root/share/man/$page" 2>&1) || fail "$page does not render"
  [ -z "$warnings" ] || fail "$page: $warnings"
done
grep -qF -- '\-\-config' "$work/root/share/man/man1/myceld.1" || fail "myceld(1) lacks --config"
grep -q "peers" "$work/root/share/man/man1/mycel.1" || fail "mycel(1) lacks the peers command"
grep -q "round_interval_s" "$work/root/share/man/man5/mycel.toml.5" || fail "mycel.toml(5) lacks [federation] keys"
grep -q "^Documentation=man:myceld(1)" "$work/root/lib/systemd/user/myceld.service" || fail "unit documentation"

# The completion offers exactly mycel's commands (as --help lists them), and completes them.
said=$("$work/root/bin/mycel" --help | awk '/^Subcommands:/{on=1; next} on && /^  [a-z]/{print $1}' | sort)
[ -n "$said" ] || fail "mycel --help lists no commands"
completion="$work/root/share/bash-completion/completions/mycel"
offered=$(sed -n 's/^  local commands="\(.*\)"$/\1/p' "$completion" | tr ' ' '\n' | grep -v '^help$' | sort)
[ "$said" = "$offered" ] || fail "completion commands differ from mycel --help: $(diff <(echo "$said") <(echo "$offered") | tr '\n' ' ')"
got=$(bash -c 'source "$1"; COMP_WORDS=(mycel pe); COMP_CWORD=1; _mycel; echo "${COMPREPLY[*]}"' _ "$completion")
[ "$got" = "peers" ] || fail "completing 'mycel pe' gave '$got'"
got=$(bash -c 'source "$1"; COMP_WORDS=(mycel peers ac); COMP_CWORD=2; _mycel; echo "${COMPREPLY[*]}"' _ "$completion")
[ "$got" = "accept" ] || fail "completing 'mycel peers ac' gave '$got'"

# The Debian package holds the same, and depends on the libraries the binaries link.
(cd "$build" && cpack -G DEB -B "$work/pkg" >/dev/null) || fail "cpack -G DEB failed"
deb=$(ls "$work"/pkg/*.deb)
contents=$(dpkg-deb -c "$deb")
for f in bin/myceld bin/mycel share/man/man1/mycel.1 share/man/man5/mycel.toml.5 \
         share/bash-completion/completions/mycel lib/systemd/user/myceld.service mycel.example.toml \
         include/mycel/client.h lib/libmycel.so; do
  grep -q "$f" <<<"$contents" || fail "the .deb lacks $f"
done
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libsodium libgrpc libsystemd; do
  grep -q "$lib" <<<"$depends" || fail "the .deb does not depend on $lib: $depends"
done
echo "package ok: $(basename "$deb"), $(wc -l <<<"$contents") entries"
