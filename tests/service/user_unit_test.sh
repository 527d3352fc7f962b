#!/usr/bin/env bash
# The user unit, live: boots systemd (system manager, then user@UID.service,
# the user's own manager) in private PID, mount, network, UTS, IPC and cgroup
# namespaces, starts configs/systemd/myceld.service in that user manager with
# the real myceld, and checks that its hardening took effect: READY=1 arrived,
# no new privileges, its own user and mount namespaces, home, config and the
# rest of the file system read-only, the state directory writable, a private
# /tmp, the scheduling and limits of the unit. `mycel status` then talks to it,
# a reload keeps it, and a stop is clean.
#   user_unit_test.sh UNIT BIN_DIR
# UNIT is the unit as shipped (ExecStart=@CMAKE_INSTALL_FULL_BINDIR@/myceld);
# BIN_DIR holds the myceld and mycel to test, bound read-only at the unit's
# ExecStart directory inside. Needs root (to boot systemd as PID 1 of the
# namespace) and a cgroup2 hierarchy; exits 77 (skipped) where systemd cannot
# be booted at all. Nothing leaves the namespaces: loopback only, a tmpfs
# over /home, /run, /var/lib/systemd and /var/log/journal, a test user that
# exists only in the namespace's /etc/passwd.
set -euo pipefail

# Inside: PID 1 of the new namespaces. Set up a container-like file system,
# then become systemd.
if [ "${1:-}" = --boot ]; then
  stage=$2 bin=$3
  mount --make-rprivate /
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
  mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
  # A /dev of our own, so the journal's /dev/log and systemd's mounts stay here.
  dev=$stage/dev
  mkdir -p "$dev" && mount -t tmpfs -o mode=0755,nosuid tmpfs "$dev"
  for n in null zero full random urandom tty; do touch "$dev/$n" && mount --bind "/dev/$n" "$dev/$n"; done
  mkdir -p "$dev/pts" "$dev/shm"
  ln -s /proc/self/fd "$dev/fd"
  for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "$dev/${i#*:}"; done
  mount --move "$dev" /dev
  for f in passwd group shadow; do mount --bind "$stage/etc/$f" "/etc/$f"; done
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
  # The binaries under test at a path the test user can reach, whoever owns
  # the build tree and even when it is under /home.
  mkdir -p /run/mycel-test/bin && mount --bind -o ro "$bin" /run/mycel-test/bin
  for d in /home /var/lib/systemd /var/log/journal; do
    [ -d "$d" ] && mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$d"
  done
  install -d -m 0700 -o "$TEST_UID" -g "$TEST_UID" "/home/$TEST_USER"
  # A unit's mount namespace is built under /run/systemd/unit-root, which a
  # user manager cannot create (/run/systemd is root's); on a real machine
  # logind's own sandbox made it long before anyone logged in.
  mkdir -p -m 0700 /run/systemd/unit-root
  exec env -i container=mycel-test SYSTEMD_UNIT_PATH="$stage/system" \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --system --log-target=journal --log-level=info
fi

unit_in=$1 bin=$(cd "$2" && pwd)
skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; dump; exit 1; }
ns_init=""
[ "$(id -u)" = 0 ] || skip "needs root: it boots systemd as PID 1 of a private PID namespace"
systemd=/lib/systemd/systemd
[ -x $systemd ] || skip "no $systemd"
for tool in unshare nsenter setpriv findmnt systemctl journalctl chrt ionice; do
  command -v $tool >/dev/null || skip "no $tool"
done
cgroot=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
[ -n "$cgroot" ] || skip "no cgroup2 hierarchy mounted (systemd's unified mode needs one)"

user=myceltest uid=4242
while getent passwd $uid >/dev/null || getent group $uid >/dev/null; do uid=$((uid + 1)); done
home=/home/$user state=/home/$user/.local/state/mycel

stage=$(mktemp -d /var/tmp/mycel-user-unit.XXXXXX)
chmod 0755 "$stage"
cg=$cgroot/mycel-user-unit-$$
outer=""
cleanup() {
  set +e
  if [ -n "$ns_init" ] && kill -0 "$ns_init" 2>/dev/null; then
    # A clean stop removes the unit's PrivateTmp directories (in the real /tmp).
    as_user systemctl --user stop myceld.service >/dev/null 2>&1
    kill -KILL "$ns_init"
  fi
  [ -z "$outer" ] || wait "$outer" 2>/dev/null
  [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  rm -rf "$stage"
}
trap cleanup EXIT
in_ns() { nsenter -t "$ns_init" -a -r -w "$@"; }
as_user() {
  in_ns setpriv --reuid=$uid --regid=$uid --clear-groups \
    env -i HOME=$home USER=$user LOGNAME=$user PATH=/usr/bin:/bin XDG_RUNTIME_DIR=/run/user/$uid "$@"
}
# Inside the unit's own user and mount namespaces, as the user.
in_unit() { in_ns nsenter -t "$pid" -U -m -S $uid -G $uid "$@"; }
dump() {
  [ -n "$ns_init" ] || return 0
  echo "--- systemctl --user status myceld" >&2
  as_user systemctl --user status --no-pager myceld.service >&2 2>&1 || true
  echo "--- journal" >&2
  in_ns journalctl -b --no-pager -q -n 60 >&2 2>&1 || true
}

# The namespace's accounts: the host's plus the test user.
mkdir -p "$stage/etc" "$stage/system"
cp /etc/passwd /etc/group "$stage/etc/"
echo "$user:x:$uid:$uid:mycel unit test:$home:/bin/sh" >> "$stage/etc/passwd"
echo "$user:x:$uid:" >> "$stage/etc/group"
install -m 0640 /etc/shadow "$stage/etc/shadow"
echo "$user:*:20000:0:99999:7:::" >> "$stage/etc/shadow"

# The system manager's units: only the journal and the user's manager.
for t in sysinit basic shutdown; do printf '[Unit]\nDescription=%s\n' $t > "$stage/system/$t.target"; done
printf '[Unit]\nDescription=mycel user unit test\nWants=systemd-journald.service user@%s.service\n' $uid \
  > "$stage/system/mycel-test.target"
ln -s mycel-test.target "$stage/system/default.target"
for u in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket user@.service \
         user-runtime-dir@.service; do
  cp /lib/systemd/system/$u "$stage/system/"
done
# What logind does for a login, done without it (there is no system bus here):
# /run/user/UID, and XDG_RUNTIME_DIR for the user's manager (pam_systemd).
mkdir -p "$stage/system/user-runtime-dir@.service.d" "$stage/system/user@.service.d"
cat > "$stage/system/user-runtime-dir@.service.d/no-logind.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/usr/bin/install -d -m 0700 -o %i -g %i /run/user/%i
ExecStop=
ExecStop=/bin/rm -rf /run/user/%i
EOF
printf '[Service]\nEnvironment=XDG_RUNTIME_DIR=/run/user/%%i\n' > "$stage/system/user@.service.d/no-logind.conf"

# The unit under test, and a config that also opens the peer and metrics ports
# and writes a log file into the state directory.
sed "s|@CMAKE_INSTALL_FULL_BINDIR@|/run/mycel-test/bin|g" "$unit_in" > "$stage/myceld.service"
cat > "$stage/mycel.toml" <<'EOF'
[node]
name = "unit-test"
listen = "127.0.0.1:7070"
metrics_listen = "127.0.0.1:9464"
log_file = "~/.local/state/mycel/myceld.log"
EOF
chmod 0644 "$stage"/myceld.service "$stage"/mycel.toml

[ -x "$bin/myceld" ] && [ -x "$bin/mycel" ] || fail "no myceld and mycel in $bin"
mkdir "$cg" || skip "cannot create a cgroup under $cgroot"
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
( echo $BASHPID > "$cg/cgroup.procs"
  exec env TEST_USER=$user TEST_UID=$uid unshare --pid --fork --mount --uts --ipc --net --cgroup --mount-proc \
    "$self" --boot "$stage" "$bin" ) </dev/null >"$stage/boot.log" 2>&1 &
outer=$!
for _ in $(seq 100); do
  ns_init=$(cat /proc/$outer/task/$outer/children 2>/dev/null | awk '{print $1}') || true
  [ -n "$ns_init" ] && in_ns systemctl show -p Version --value >/dev/null 2>&1 && break
  kill -0 $outer 2>/dev/null || break
  ns_init=""; sleep 0.2
done
if [ -z "$ns_init" ]; then
  cat "$stage/boot.log" >&2
  skip "systemd did not boot in the namespaces"
fi
for _ in $(seq 150); do
  in_ns systemctl is-active -q user@$uid.service && break
  in_ns systemctl is-failed -q user@$uid.service && break
  sleep 0.2
done
in_ns systemctl is-active -q user@$uid.service || fail "the user's manager (user@$uid.service) did not start"
echo "systemd $($systemd --version | head -n 1 | cut -d' ' -f2): system manager and user@$uid.service up"

as_user mkdir -p $home/.config/systemd/user $home/.config/mycel
as_user cp "$stage/myceld.service" $home/.config/systemd/user/
as_user cp "$stage/mycel.toml" $home/.config/mycel/
as_user systemctl --user daemon-reload

# Type=notify: start returns once READY=1 came, or fails.
as_user timeout 120 systemctl --user start myceld.service || fail "systemctl --user start myceld failed"
show() { as_user systemctl --user show -p "$1" --value myceld.service; }
[ "$(show ActiveState)/$(show SubState)" = active/running ] || fail "myceld is $(show ActiveState)/$(show SubState)"
[ "$(show StatusText)" = "serving on $state/control.sock" ] || fail "STATUS= was '$(show StatusText)'"
pid=$(show MainPID)
echo "myceld.service active (READY=1, '$(show StatusText)'), main PID $pid in the namespace"

status=$(in_ns cat /proc/$pid/status)
field() { awk -v k="$1:" '$1 == k {print $2}' <<<"$status"; }
[ "$(field NoNewPrivs)" = 1 ] || fail "NoNewPrivs is $(field NoNewPrivs)"
[ "$(field Seccomp)" = 2 ] || fail "no seccomp filter (SystemCallArchitectures=, RestrictAddressFamilies=...): Seccomp $(field Seccomp)"
[ "$(field Umask)" = 0077 ] || fail "umask is $(field Umask)"
manager=$(in_ns systemctl show -p MainPID --value user@$uid.service)
for ns in user mnt; do
  [ "$(in_ns readlink /proc/$pid/ns/$ns)" != "$(in_ns readlink /proc/$manager/ns/$ns)" ] \
    || fail "myceld shares the user manager's $ns namespace: the unit's sandbox was not applied"
done
nice=$(in_ns cat /proc/$pid/stat | sed 's/.*) //' | awk '{print $17}')  # field 19, after "pid (comm)"
[ "$nice" = 19 ] || fail "nice is $nice, not 19"
in_ns chrt -p $pid | grep -q SCHED_IDLE || fail "CPU policy: $(in_ns chrt -p $pid)"
in_ns ionice -p $pid | grep -q '^idle' || fail "I/O class: $(in_ns ionice -p $pid)"
in_ns grep -q '^Max open files *8192 *8192 ' /proc/$pid/limits || fail "$(in_ns grep 'open files' /proc/$pid/limits)"

# The file system as myceld sees it, probed as the user in the unit's namespaces.
probe() { in_unit sh -c "echo probe > '$1/.mycel-probe' && rm '$1/.mycel-probe'" 2>&1; }
for d in $home $home/.config/mycel $home/.config/systemd/user /run/user/$uid; do
  out=$(probe "$d") && fail "$d is writable for myceld (ProtectHome=read-only / ProtectSystem=strict)"
  grep -q "Read-only file system" <<<"$out" || fail "probing $d as myceld: $out"
  as_user sh -c "echo probe > '$d/.mycel-probe' && rm '$d/.mycel-probe'" || fail "$d is not writable for the user itself"
done
out=$(probe "$state") || fail "the state directory $state is not writable for myceld: $out"
in_unit sh -c 'echo private > /tmp/mycel-private-probe' || fail "/tmp is not writable for myceld"
! in_ns test -e /tmp/mycel-private-probe || fail "myceld's /tmp is the real /tmp (PrivateTmp=)"
mounts=$(in_ns cat /proc/$pid/mountinfo)
opts() { awk -v m="$1" '$5 == m {o = $6} END {print o}' <<<"$mounts"; }
for m in / /proc/sys /sys/fs/cgroup; do
  [[ ",$(opts $m)," == *,ro,* ]] || fail "$m is mounted '$(opts $m)' for myceld, not read-only"
done
in_ns test -S $state/control.sock || fail "no control socket in $state"
in_ns test -s $state/myceld.log || fail "myceld wrote no log file into the state directory"
echo "sandbox: NoNewPrivs, seccomp, umask 0077, own user+mount namespaces, nice 19 SCHED_IDLE idle I/O, 8192 files;"
echo "  $home, ~/.config, /run/user/$uid, / read-only; $state writable; /tmp private"

# The client, as the user in a shell of their own (outside the sandbox).
out=$(as_user /run/mycel-test/bin/mycel status 2>&1) || fail "mycel status: $out"
grep -q "unit-test" <<<"$out" || fail "mycel status said: $out"
echo "mycel status: $(head -n 1 <<<"$out")"

# Reload (SIGHUP) with a changed peer port: the same process goes on serving
# and warns that the port waits for a restart. journald reads each line's
# priority off its start, so `journalctl -p warning` shows that line alone.
as_user sed -i 's/^listen = .*/listen = "127.0.0.1:7071"/' $home/.config/mycel/mycel.toml
as_user timeout 60 systemctl --user reload myceld.service || fail "systemctl --user reload failed"
for _ in $(seq 50); do
  warn=$(in_ns journalctl -b --no-pager -q -o cat -p warning _SYSTEMD_USER_UNIT=myceld.service)
  grep -q 'reload: applied.*\[node\] listen' <<<"$warn" && break
  sleep 0.2
done
grep -q 'reload: applied.*\[node\] listen' <<<"$warn" || fail "no reload warning at priority warning: '$warn'"
! grep -qv '^W ' <<<"$warn" || fail "lines below warning under journalctl -p warning: $warn"
[ "$(show MainPID)" = "$pid" ] && [ "$(show ActiveState)" = active ] || fail "after reload: $(show ActiveState), PID $(show MainPID)"
out=$(as_user /run/mycel-test/bin/mycel status 2>&1) || fail "mycel status after the reload: $out"

as_user timeout 90 systemctl --user stop myceld.service || fail "systemctl --user stop failed"
[ "$(show Result)" = success ] && [ "$(show ExecMainStatus)" = 0 ] \
  || fail "stop: Result=$(show Result), exit status $(show ExecMainStatus)"

# A state directory the unit does not make writable (a state_dir elsewhere
# without a drop-in): myceld says so and exits 2, which the unit does not
# restart (RestartPreventExitStatus=2): no restart every RestartSec=5.
as_user sed -i 's|^log_file = .*|state_dir = "~/elsewhere/mycel"|' $home/.config/mycel/mycel.toml
! as_user timeout 60 systemctl --user start myceld.service 2>/dev/null || fail "myceld started with a read-only state_dir"
sleep 6
[ "$(show ExecMainStatus)" = 2 ] && [ "$(show ActiveState)" = failed ] && [ "$(show NRestarts)" = 0 ] \
  || fail "read-only state_dir: exit status $(show ExecMainStatus), $(show ActiveState), $(show NRestarts) restarts"
in_ns journalctl -b --no-pager -q -o cat _SYSTEMD_USER_UNIT=myceld.service | grep -q "elsewhere.*Read-only file system" \
  || fail "myceld did not say why it cannot use ~/elsewhere/mycel"
echo "reload kept PID $pid and logged '$(head -n 1 <<<"$warn")' at priority warning; stop exited 0;"
echo "  a state_dir outside ~/.local/state/mycel: exit 2, not restarted"
echo "PASS"
