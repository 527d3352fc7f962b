#!/usr/bin/env bash
# README command 1: the main job on the embedded default (configs/demo.toml).
# Installs what is missing, builds, starts myceld in a temporary state dir,
# feeds it Fashion-MNIST from Debian's package, shows it learning, pauses and
# resumes it, evaluates on the held-out test set, exports the model and shuts
# the daemon down cleanly. A few minutes on 2 cores.
# Then the federated half (scripts/federation-demo.sh): five daemons in a ring,
# two classes each, learning all ten together, beside a node alone.
#   MYCEL_DEMO_SECONDS=40 MYCEL_FED_SECONDS=150 scripts/demo.sh   how long each half trains
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=/usr/share/datasets/fashion-mnist
TRAIN_SECONDS=${MYCEL_DEMO_SECONDS:-40}

echo "== building (first run: a few minutes) =="
scripts/build.sh 2>&1 | grep -E "error|warning: unused|^\[100%\]" || true
MYCELD=$ROOT/build/bin/myceld
MYCEL=$ROOT/build/bin/mycel
[ -x "$MYCELD" ] && [ -x "$MYCEL" ] || { echo "build failed" >&2; exit 1; }

export MYCEL_DEMO_STATE
MYCEL_DEMO_STATE=$(mktemp -d /tmp/mycel-demo.XXXXXX)
CONFIG=$ROOT/configs/demo.toml
LOG=$MYCEL_DEMO_STATE/myceld.log
mycel() { "$MYCEL" --config "$CONFIG" "$@"; }
cleanup() {
  if [ -n "${PID:-}" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
}
trap cleanup EXIT

echo "== starting myceld (state in $MYCEL_DEMO_STATE, log in $LOG) =="
"$MYCELD" --config "$CONFIG" 2>"$LOG" &
PID=$!
for _ in $(seq 100); do [ -S "$MYCEL_DEMO_STATE/control.sock" ] && break; sleep 0.1; done
echo "node id: $(mycel id)"
mycel status | sed 's/^/  /'

echo "== ingesting the Fashion-MNIST training set (60000 images) =="
mycel ingest "$DATA/train-images-idx3-ubyte.gz" "$DATA/train-labels-idx1-ubyte.gz"

show() {
  mycel status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
fmt = lambda v: "-" if v is None else "%.4f" % v
print("  %-17s steps %7d  samples %8d  train loss %s  val loss %s  val acc %s" % (
    s["state"], s["steps"], s["samples_trained"], fmt(s["train_loss"]), fmt(s["val_loss"]), fmt(s["val_accuracy"])))'
}

echo "== training: held-out accuracy climbs (${TRAIN_SECONDS}s) =="
for _ in $(seq $(( TRAIN_SECONDS / 5 ))); do sleep 5; show; done

echo "== pause: steps stop =="
mycel pause
sleep 1; show; sleep 3; show
echo "== resume =="
mycel resume
sleep 3; show

echo "== evaluate on the 10000-image test set (never trained on) =="
mycel eval "$DATA/t10k-images-idx3-ubyte.gz" "$DATA/t10k-labels-idx1-ubyte.gz"

echo "== predict test image 0 (classes: 0 T-shirt 1 trouser 2 pullover 3 dress 4 coat 5 sandal 6 shirt 7 sneaker 8 bag 9 ankle boot) =="
mycel predict "$DATA/t10k-images-idx3-ubyte.gz" "$DATA/t10k-labels-idx1-ubyte.gz" --index 0

echo "== export as TorchScript =="
mycel export --out "$MYCEL_DEMO_STATE/model.pt"
# Debian's python3-torch lives under /usr/bin/python3 (a pyenv python3 on PATH may lack it).
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/python3 - "$MYCEL_DEMO_STATE/model.pt" <<'PY'
import sys, torch
m = torch.jit.load(sys.argv[1])
print("  python torch.jit.load: ok, output shape", tuple(m(torch.zeros(1, 1, 28, 28)).shape))
PY
fi

echo "== SIGTERM: final checkpoint, clean exit =="
kill -TERM "$PID"
rc=0; wait "$PID" || rc=$?
PID=""
echo "myceld exited with status $rc"
grep -E "checkpoint .* written \(shutdown\)" "$LOG" | tail -1 | sed 's/^/  /'
echo "state dir kept at $MYCEL_DEMO_STATE"
[ "$rc" -eq 0 ] || exit "$rc"

echo
MYCEL_FED_SECONDS=${MYCEL_FED_SECONDS:-150} scripts/federation-demo.sh
