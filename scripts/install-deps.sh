#!/usr/bin/env bash
# Installs every build, test and demo dependency of mycel from Debian packages.
# Idempotent: when everything is present it only runs dpkg-query and exits.
# Nothing is downloaded from anywhere but the distribution's package archive.
set -euo pipefail

PACKAGES=(
  cmake g++ make ccache pkg-config
  libtorch-dev
  libopenblas0-openmp     # libtorch otherwise falls back to reference BLAS: ~16x slower matmul
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsodium-dev libspdlog-dev libsqlite3-dev libtomlplusplus-dev libcli11-dev
  nlohmann-json3-dev      # the CLI's --json output
  libmicrohttpd-dev       # the loopback Prometheus endpoint ([node] metrics_listen)
  libsystemd-dev          # sd_notify: the user unit is Type=notify
  libavahi-client-dev     # optional LAN discovery ([node] discover): DNS-SD via avahi-daemon
  avahi-daemon avahi-utils dbus  # the discovery test runs a private bus and avahi-daemon on loopback
  help2man                # man pages myceld(1) and mycel(1) from --help
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  python3-torch           # optional consumer: benchmarks compare to PyTorch, tests load exports
  python3-prometheus-client  # tests parse the metrics endpoint with Prometheus' own parser
  python3-matplotlib      # the learning benchmark draws accuracy against rounds and bytes
  sqlite3
  iproute2                # the dial-out test puts a laptop behind NAT in its own network namespace
  chromium chromium-driver python3-selenium  # the dashboard test drives the page in a headless browser
  clang libclang-rt-14-dev   # scripts/fuzz.sh: libFuzzer with ASan/UBSan (tests/fuzz/)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Make sure the OpenMP OpenBLAS is the one libblas.so.3 / liblapack.so.3 resolve to.
for alt in libblas.so.3 liblapack.so.3; do
  arch_alt="${alt}-$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
  cand=$(update-alternatives --list "$arch_alt" 2>/dev/null | grep openblas-openmp | head -n1 || true)
  if [ -n "$cand" ]; then $SUDO update-alternatives --set "$arch_alt" "$cand" >/dev/null; fi
done
