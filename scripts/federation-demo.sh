#!/usr/bin/env bash
# The federated half of the demo: five myceld nodes on loopback in a ring, each
# holding only two of Fashion-MNIST's ten classes (as a laptop sees only its
# own user's data), trading encrypted weight deltas with their two neighbours;
# beside them one node alone with two classes. A live table shows each node's
# accuracy on the full 10-class test set, rounds and bytes exchanged.
# Called by scripts/demo.sh after the build; usable alone once built:
#   MYCEL_FED_SECONDS=120 scripts/federation-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=/usr/share/datasets/fashion-mnist
SECONDS_TO_RUN=${MYCEL_FED_SECONDS:-120}
N=5
MYCELD=$ROOT/build/bin/myceld
MYCEL=$ROOT/build/bin/mycel
PY=python3
BASE=$(mktemp -d /tmp/mycel-federation.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Pacing and model come from configs/federation.toml (measured defaults, see
# README), except that the learning rate anneals over the demo's length
# instead of 500 rounds (local_steps / round_interval_s = 80 local steps a
# second): at a still-high learning rate the nodes swing by several points
# from one table to the next, which says little about where they are heading.
DECAY_STEPS=$(( SECONDS_TO_RUN * 80 ))
write_config() {  # name dir port peers_toml
  cat > "$2/mycel.toml" <<TOML
[node]
name = "$1"
state_dir = "$2"
listen = "127.0.0.1:$3"
log_level = "warn"

$(sed -n '/^\[model\]/,$p' "$ROOT/configs/federation.toml" | sed "s/^lr_decay_steps = .*/lr_decay_steps = $DECAY_STEPS/")

$4
TOML
}

echo "== federation: $N nodes in a ring, two classes each; one node alone (state in $BASE) =="
names=(); dirs=(); ports=(); keys=()
for i in $(seq 0 $((N - 1))) alone; do
  name=$([ "$i" = alone ] && echo alone || echo "node$i")
  dir=$BASE/$name
  mkdir -p "$dir"
  port=$(free_port)
  # `mycel id` creates the identity without a daemon; a user shares this key.
  printf '[node]\nstate_dir = "%s"\n' "$dir" > "$dir/id.toml"
  key=$("$MYCEL" --config "$dir/id.toml" id | head -n1)
  names+=("$name"); dirs+=("$dir"); ports+=("$port"); keys+=("$key")
done
for i in $(seq 0 $((N - 1))); do
  peers=""
  for j in $(( (i + N - 1) % N )) $(( (i + 1) % N )); do
    peers+=$(printf '[[peers]]\nname = "%s"\naddress = "127.0.0.1:%s"\npublic_key = "%s"\n\n' \
      "${names[$j]}" "${ports[$j]}" "${keys[$j]}")
    peers+=$'\n\n'
  done
  write_config "${names[$i]}" "${dirs[$i]}" "${ports[$i]}" "$peers"
done
write_config alone "${dirs[$N]}" "${ports[$N]}" ""

for k in $(seq 0 $N); do
  "$MYCELD" --config "${dirs[$k]}/mycel.toml" 2>"${dirs[$k]}/myceld.log" &
  PIDS+=($!)
done
for k in $(seq 0 $N); do
  for _ in $(seq 100); do [ -S "${dirs[$k]}/control.sock" ] && break; sleep 0.1; done
done
for k in $(seq 0 $N); do
  i=$(( k < N ? k : 0 ))
  labels="$((2 * i)),$((2 * i + 1))"
  printf '  %-6s ingests classes %s: ' "${names[$k]}" "$labels"
  "$MYCEL" --config "${dirs[$k]}/mycel.toml" ingest --labels "$labels" \
    "$DATA/train-images-idx3-ubyte.gz" "$DATA/train-labels-idx1-ubyte.gz"
done

table() {
  printf '  %-6s %7s %8s %10s %10s %12s\n' node rounds steps sent received "test acc"
  for k in $(seq 0 $N); do
    cfg="${dirs[$k]}/mycel.toml"
    st=$("$MYCEL" --config "$cfg" status --json)
    ev=$("$MYCEL" --config "$cfg" eval --json "$DATA/t10k-images-idx3-ubyte.gz" "$DATA/t10k-labels-idx1-ubyte.gz")
    $PY -c '
import json, sys
s, e, name = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
mb = lambda b: "%.1f MiB" % (b / 1048576)
print("  %-6s %7d %8d %10s %10s %11.1f%%" % (name, s["rounds"], s["steps"], mb(s["bytes_sent"]),
                                          mb(s["bytes_received"]), e["accuracy"] * 100))' "$st" "$ev" "${names[$k]}"
  done
}

end=$(( $(date +%s) + SECONDS_TO_RUN ))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 15
  echo "-- $(date +%T): accuracy on all ten classes of the test set --"
  table
done
echo "== neighbours of node0 =="
"$MYCEL" --config "${dirs[0]}/mycel.toml" peers
echo "== stopping the federation =="
for pid in "${PIDS[@]}"; do kill -TERM "$pid"; done
rc=0
for pid in "${PIDS[@]}"; do wait "$pid" || rc=$?; done
PIDS=()
echo "all nodes exited (status $rc); state kept in $BASE"
exit $rc
