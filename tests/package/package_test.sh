#!/usr/bin/env bash
# What `cmake --install` and `cpack -G DEB` deliver: binaries, man pages that
# render, the bash completion (its commands are mycel's), the example config
# and the user unit whose Documentation= page is there.
#   package_test.sh BUILD_DIR
set -euo pipefail
build=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$work/root" >/dev/null
for f in bin/myceld bin/mycel share/man/man1/myceld.1 share/man/man1/mycel.1 share/man/man5/mycel.toml.5 \
         share/bash-completion/completions/mycel share/doc/mycel/mycel.example.toml lib/systemd/user/myceld.service; do
  [ -e "$work/root/$f" ] || fail "cmake --install did not install $f"
done

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
         share/bash-completion/completions/mycel lib/systemd/user/myceld.service mycel.example.toml; do
  grep -q "$f" <<<"$contents" || fail "the .deb lacks $f"
done
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libsodium libgrpc libsystemd; do
  grep -q "$lib" <<<"$depends" || fail "the .deb does not depend on $lib: $depends"
done
echo "package ok: $(basename "$deb"), $(wc -l <<<"$contents") entries"
