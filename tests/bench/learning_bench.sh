#!/usr/bin/env bash
# Federated-learning benchmark: real myceld processes on loopback, trained to
# convergence, every node evaluated on the full 10k Fashion-MNIST test set.
#
#   central    one myceld, no peers (unpaced), all 60k training images: the
#              same MLP and training settings trained centrally
#   ring2      five nodes on a ring, node i holding classes 2i and 2i+1
#              goal: every node >= 85% within 500 rounds (NIID-Bench: FedAvg
#              with a server, two classes per client, 78.1%)
#   dirichlet  six nodes on a ring, classes split by Dirichlet(0.3) (seeded)
#              goal: every node within 2 points of central within 500 rounds
#
# Model/training/federation settings are configs/federation.toml's (override
# with --set, --codec, --local-steps). A scenario stops when every node has
# finished its learning-rate decay
# ([training] lr_decay_steps) and the nodes' mean test accuracy has not gained
# more than 0.3 points over the last 3 evaluations (one every --eval-interval s), or at
# --max-rounds / --max-seconds (reported as capped). Rounds, steps and bytes
# are counted from the moment every node holds its data. For each federation
# it prints the rounds and bytes it took every node to reach the target
# (ring2: 85%; Dirichlet: 2 points below central), bytes per node per round,
# and draws accuracy against rounds and against bytes per node as a PNG beside
# the result JSON.
#
# Usage: tests/bench/learning_bench.sh [--scenario ring2|dirichlet|central|all]
#          [--max-rounds N] [--max-seconds S] [--central-max-seconds S]
#          [--eval-interval S] [--codec C] [--local-steps K]
#          [--set section.key=value]... [--seed N]
#          [--baseline RESULT.json] [--out RESULT.json] [--keep]
#   --codec      [federation] codec of every node (dense_f32, fp16, int8, sign,
#                topk:F, topk:F+int8, ...)
#   --local-steps  [federation] local_steps of every node (the learning-rate
#                decay keeps its length in rounds: lr_decay_steps is scaled by
#                K / the config's local_steps)
#   --set        override a setting of configs/federation.toml for every node
#                (e.g. --set training.lr=0.02 --set 'model.hidden=[64]')
#   --stretch-set  after a federation converges, restart its nodes from their
#                checkpoints with this override too (e.g. --stretch-set
#                training.lr=0.002: a lower learning rate for the final
#                stretch) and train until it converges again or
#                --stretch-seconds (default 180); totals cover both phases
#   --baseline   take the central accuracy from an earlier result file instead
#                of training it again (only when --scenario is not all/central)
# Binaries: $MYCEL_BIN_DIR (default build/bin). Needs /usr/bin/python3 with numpy.
# `all` (central, ring2, dirichlet) takes about 25 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DATA=${MYCEL_DATA_DIR:-/usr/share/datasets/fashion-mnist}
BIN=${MYCEL_BIN_DIR:-$ROOT/build/bin}
MYCELD=$BIN/myceld
MYCEL=$BIN/mycel
PY=${MYCEL_PYTHON:-/usr/bin/python3}
HELPER=$ROOT/tests/bench/learning_bench.py

SCENARIO=all MAX_ROUNDS=0 MAX_SECONDS=540 CENTRAL_MAX_SECONDS=300 INTERVAL=10 KEEP=0 SEED=1
OUT="" BASELINE="" SETS=() STRETCH_SETS=() STRETCH_SECONDS=180 LOCAL_STEPS=
COMMAND="tests/bench/learning_bench.sh $*"
while [ $# -gt 0 ]; do
  case $1 in
    --scenario) SCENARIO=$2; shift 2 ;;
    --max-rounds) MAX_ROUNDS=$2; shift 2 ;;
    --max-seconds) MAX_SECONDS=$2; shift 2 ;;
    --central-max-seconds) CENTRAL_MAX_SECONDS=$2; shift 2 ;;
    --eval-interval) INTERVAL=$2; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    --codec) SETS+=(--set "federation.codec=\"$2\""); shift 2 ;;
    --local-steps) LOCAL_STEPS=$2; shift 2 ;;
    --stretch-set) STRETCH_SETS+=(--set "$2"); shift 2 ;;
    --stretch-seconds) STRETCH_SECONDS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "learning_bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $SCENARIO in
  all) SCENARIOS=(central ring2 dirichlet) ;;
  central|ring2|dirichlet) SCENARIOS=("$SCENARIO") ;;
  *) echo "learning_bench: --scenario is ring2, dirichlet, central or all" >&2; exit 2 ;;
esac
for f in "$MYCELD" "$MYCEL"; do
  [ -x "$f" ] || { echo "learning_bench: $f not built (set MYCEL_BIN_DIR)" >&2; exit 2; }
done
"$PY" -c 'import numpy' 2>/dev/null || { echo "learning_bench: $PY lacks numpy (set MYCEL_PYTHON)" >&2; exit 2; }

if [ -n "$LOCAL_STEPS" ]; then
  # Same schedule in rounds: the decay spans as many rounds as the config's does.
  read -r base_k base_decay < <("$PY" -c 'import sys,tomllib; c=tomllib.load(open(sys.argv[1],"rb"))
print(c["federation"]["local_steps"], c["training"]["lr_decay_steps"])' "$ROOT/configs/federation.toml")
  SETS=(--set "federation.local_steps=$LOCAL_STEPS"
        --set "training.lr_decay_steps=$(( base_decay * LOCAL_STEPS / (base_k > 0 ? base_k : 1) ))" "${SETS[@]}")
fi

BASE=$(mktemp -d /tmp/mycel-learning.XXXXXX)
OUT=${OUT:-$ROOT/build/learning_bench-$(date +%Y%m%d-%H%M%S).json}
mkdir -p "$(dirname "$OUT")"
PIDS=()
stop_nodes() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
WATCH_PID=""
cleanup() {
  [ -n "$WATCH_PID" ] && kill -TERM "$WATCH_PID" 2>/dev/null
  stop_nodes
  if [ "$KEEP" = 1 ]; then echo "state kept in $BASE"; else rm -rf "$BASE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SECTIONS=$("$PY" "$HELPER" config --base "$ROOT/configs/federation.toml" "${SETS[@]}")
SETTINGS=$("$PY" -c 'import json,sys; print(json.dumps({"overrides": sys.argv[1:], "config": sys.stdin.read()}))' \
  "${SETS[@]}" <<<"$SECTIONS")

# start_nodes SCENARIO N: N nodes on a ring (N = 1: one node, no peers).
names=(); dirs=(); ports=(); keys=()
start_nodes() {
  local scen=$1 n=$2 i
  names=(); dirs=(); ports=(); keys=()
  for i in $(seq 0 $((n - 1))); do
    names+=("node$i"); dirs+=("$BASE/$scen/node$i")
    mkdir -p "${dirs[$i]}"
    ports+=("$(free_port)")
    printf '[node]\nstate_dir = "%s"\n' "${dirs[$i]}" > "${dirs[$i]}/id.toml"
    keys+=("$("$MYCEL" --config "${dirs[$i]}/id.toml" id | head -n1)")
  done
  write_configs "$SECTIONS"
  launch_nodes
}

write_configs() {  # sections
  local n=${#names[@]} i j peers
  for i in $(seq 0 $((n - 1))); do
    peers=""
    if [ "$n" -gt 1 ]; then
      for j in $(printf '%s\n' $(( (i + n - 1) % n )) $(( (i + 1) % n )) | sort -un); do
        [ "$j" = "$i" ] && continue
        peers+=$(printf '[[peers]]\nname = "%s"\naddress = "127.0.0.1:%s"\npublic_key = "%s"\n' \
          "${names[$j]}" "${ports[$j]}" "${keys[$j]}")
        peers+=$'\n\n'
      done
    fi
    cat > "${dirs[$i]}/mycel.toml" <<TOML
[node]
name = "${names[$i]}"
state_dir = "${dirs[$i]}"
listen = "$([ "$n" -gt 1 ] && echo "127.0.0.1:${ports[$i]}")"
log_level = "warn"

$1

$peers
TOML
  done
}

launch_nodes() {  # (re)starts every node of the current scenario from its state dir
  local n=${#names[@]} i
  for i in $(seq 0 $((n - 1))); do
    rm -f "${dirs[$i]}/control.sock"
    "$MYCELD" --config "${dirs[$i]}/mycel.toml" 2>>"${dirs[$i]}/myceld.log" &
    PIDS+=($!)
  done
  for i in $(seq 0 $((n - 1))); do
    for _ in $(seq 200); do [ -S "${dirs[$i]}/control.sock" ] && break; sleep 0.1; done
    [ -S "${dirs[$i]}/control.sock" ] || { echo "node$i did not start:" >&2; cat "${dirs[$i]}/myceld.log" >&2; exit 1; }
  done
}

ingest() {  # node_index [mycel ingest args...]
  local i=$1; shift
  printf '  %-6s ' "${names[$i]}"
  "$MYCEL" --config "${dirs[$i]}/mycel.toml" ingest "$@"
}

watch() {  # scenario max_seconds out [extra watch args...]
  local args=() i scen=$1 max=$2 out=$3
  shift 3
  for i in "${!names[@]}"; do args+=(--node "${names[$i]}=${dirs[$i]}/mycel.toml"); done
  # In the background, so a signal reaches our trap without waiting for it.
  "$PY" "$HELPER" watch --scenario "$scen" --mycel "$MYCEL" --data "$DATA" "${args[@]}" \
    --interval "$INTERVAL" --max-rounds "$MAX_ROUNDS" --max-seconds "$max" "$@" --out "$out" &
  WATCH_PID=$!
  wait "$WATCH_PID"
  WATCH_PID=""
}

# watch_federation scenario: to convergence; then the optional final stretch.
watch_federation() {
  local scen=$1
  if [ ${#STRETCH_SETS[@]} -eq 0 ]; then
    watch "$scen" "$MAX_SECONDS" "$BASE/$scen.json" --settings "$SETTINGS"
    return
  fi
  watch "$scen" "$MAX_SECONDS" "$BASE/$scen-phase1.json" --settings "$SETTINGS"
  local sections settings
  sections=$("$PY" "$HELPER" config --base "$ROOT/configs/federation.toml" "${SETS[@]}" "${STRETCH_SETS[@]}")
  settings=$("$PY" -c 'import json,sys; print(json.dumps({"overrides": sys.argv[1:], "config": sys.stdin.read()}))' \
    "${SETS[@]}" "${STRETCH_SETS[@]}" <<<"$sections")
  echo "  -- final stretch: restarting the nodes from their checkpoints with ${STRETCH_SETS[*]} (cap ${STRETCH_SECONDS} s) --"
  stop_nodes
  write_configs "$sections"
  launch_nodes
  watch "$scen" "$STRETCH_SECONDS" "$BASE/$scen.json" --settings "$settings" --prior "$BASE/$scen-phase1.json"
}

RESULTS=()
for scen in "${SCENARIOS[@]}"; do
  case $scen in
    central)
      echo "== central: one node, no peers, all 60000 training images (cap ${CENTRAL_MAX_SECONDS} s) =="
      start_nodes central 1
      ingest 0 "$DATA/train-images-idx3-ubyte.gz" "$DATA/train-labels-idx1-ubyte.gz"
      watch central "$CENTRAL_MAX_SECONDS" "$BASE/central.json" --settings "$SETTINGS"
      ;;
    ring2)
      echo "== ring2: five nodes on a ring, two classes each (cap ${MAX_SECONDS} s) =="
      start_nodes ring2 5
      for i in $(seq 0 4); do
        ingest "$i" --labels "$((2 * i)),$((2 * i + 1))" \
          "$DATA/train-images-idx3-ubyte.gz" "$DATA/train-labels-idx1-ubyte.gz"
      done
      watch_federation ring2
      ;;
    dirichlet)
      echo "== dirichlet: six nodes on a ring, Dirichlet(0.3) split of the classes (cap ${MAX_SECONDS} s) =="
      "$PY" "$HELPER" split --data "$DATA" --out "$BASE/split" --nodes 6 --alpha 0.3 --seed "$SEED"
      start_nodes dirichlet 6
      for i in $(seq 0 5); do
        ingest "$i" --format idx "$BASE/split/node$i/train-images-idx3-ubyte.gz" \
          "$BASE/split/node$i/train-labels-idx1-ubyte.gz"
      done
      watch_federation dirichlet
      ;;
  esac
  stop_nodes
  RESULTS+=("$BASE/$scen.json")
done

"$PY" "$HELPER" report "${RESULTS[@]}" ${BASELINE:+--baseline "$BASELINE"} \
  --command "$COMMAND" --out "$OUT"
