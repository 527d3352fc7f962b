#!/usr/bin/python3
"""Helper of tests/bench/learning_bench.sh (the federated-learning benchmark).

learning_bench.sh starts and stops the myceld nodes; this file does the rest:

  config   print the [model]/[training]/[federation] sections of
           configs/federation.toml with KEY=VALUE overrides applied
  split    write a seeded Dirichlet(alpha) split of the Fashion-MNIST train
           set over N nodes as per-node idx.gz pairs (numpy)
  watch    evaluate every node on the full test set every few seconds until
           the mean accuracy stops improving (or a round/time cap), then
           write the scenario's result JSON
  report   per-scenario table and summary line, goals, the combined JSON
  plot     one PNG of the federations of several result files (one per codec)

Needs numpy only for `split`; run it with /usr/bin/python3 (Debian's numpy).
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import time

GIB = 1 << 30
MIB = 1 << 20


# ---------------------------------------------------------------------------
# config

def cmd_config(args):
    """Prints [model] onwards of the base config, with section.key=value overrides."""
    with open(args.base) as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "[model]")
    lines = lines[start:]
    overrides = []
    for o in args.set or []:
        key, _, value = o.partition("=")
        section, _, name = key.partition(".")
        if not name or not value:
            sys.exit(f"learning_bench: --set wants section.key=value, got '{o}'")
        overrides.append((section.strip(), name.strip(), value.strip()))
    out, section, done = [], None, set()

    def flush(sec):
        for s, k, v in overrides:
            if s == sec and (s, k) not in done:
                out.append(f"{k} = {v}")
                done.add((s, k))

    for line in lines:
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            flush(section)
            section = s.strip("[]")
        elif section and "=" in s and not s.startswith("#"):
            k = s.split("=", 1)[0].strip()
            hit = [v for sec, kk, v in overrides if sec == section and kk == k]
            if hit:
                line = f"{k} = {hit[-1]}"
                done.add((section, k))
        out.append(line)
    flush(section)
    missing = [f"{s}.{k}" for s, k, _ in overrides if (s, k) not in done]
    if missing:
        sys.exit(f"learning_bench: no section for --set {', '.join(missing)}")
    print("\n".join(out))


# ---------------------------------------------------------------------------
# split

def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return data[4 + 4 * ndim:], dims


def cmd_split(args):
    import numpy as np
    img_raw, img_dims = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    lab_raw, _ = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    images = np.frombuffer(img_raw, dtype=np.uint8).reshape(img_dims)
    labels = np.frombuffer(lab_raw, dtype=np.uint8)
    n, classes = args.nodes, int(labels.max()) + 1
    rng = np.random.default_rng(args.seed)
    # Per class, proportions ~ Dirichlet(alpha) over the nodes; that class's
    # images go to the nodes in those proportions. Redrawn (as NIID-Bench does)
    # until every node holds at least --min-examples images.
    for attempt in range(1000):
        parts = [[] for _ in range(n)]
        for c in range(classes):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            p = rng.dirichlet([args.alpha] * n)
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        parts = [np.concatenate(p) for p in parts]
        if min(len(p) for p in parts) >= args.min_examples:
            break
    counts = []
    for k, idx in enumerate(parts):
        idx = np.sort(idx)
        d = os.path.join(args.out, f"node{k}")
        os.makedirs(d, exist_ok=True)
        with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz"), "wb", compresslevel=1) as f:
            f.write(struct.pack(">IIII", 0x0803, len(idx), img_dims[1], img_dims[2]))
            f.write(images[idx].tobytes())
        with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz"), "wb", compresslevel=1) as f:
            f.write(struct.pack(">II", 0x0801, len(idx)))
            f.write(labels[idx].tobytes())
        counts.append(np.bincount(labels[idx], minlength=classes).tolist())
    with open(os.path.join(args.out, "split.json"), "w") as f:
        json.dump({"alpha": args.alpha, "seed": args.seed, "nodes": n, "redraws": attempt,
                   "class_counts": counts}, f)
    print(f"  Dirichlet({args.alpha}) split, seed {args.seed}: examples per class (rows: nodes)")
    print("  " + " " * 7 + "".join(f"{c:>6d}" for c in range(classes)) + "   total")
    for k, row in enumerate(counts):
        print(f"  node{k:<3d}" + "".join(f"{v:>6d}" for v in row) + f"  {sum(row):6d}")


# ---------------------------------------------------------------------------
# watch

def mycel_json(mycel, config, *cmd, tries=3):
    last = None
    for _ in range(tries):
        p = subprocess.run([mycel, "--config", config, *cmd], capture_output=True, text=True)
        if p.returncode == 0:
            return json.loads(p.stdout)
        last = p.stderr.strip()
        time.sleep(1)
    raise RuntimeError(f"mycel {' '.join(cmd[:2])} on {config}: {last}")


def snapshot(args, nodes, test):
    rows = []
    for name, cfg in nodes:
        st = mycel_json(args.mycel, cfg, "status", "--json")
        ev = mycel_json(args.mycel, cfg, "eval", "--json", *test) if test else None
        rows.append({"node": name, "status": st, "accuracy": ev["accuracy"] if ev else None,
                     "loss": ev["loss"] if ev else None})
    return rows


def converged(means, window, min_gain):
    """No gain > min_gain over the last `window` evaluations vs. the best before them."""
    if len(means) <= window:
        return False
    return max(means[-window:]) - max(means[:-window]) <= min_gain


def decay_steps(settings):
    """[training] lr_decay_steps of the run's config (0 when absent)."""
    if not settings:
        return 0
    import tomllib
    cfg = tomllib.loads(json.loads(settings)["config"])
    return int(cfg.get("training", {}).get("lr_decay_steps", 0))


def cmd_watch(args):
    nodes = [tuple(s.split("=", 1)) for s in args.node]
    # A node still decaying its learning rate has not converged, however flat
    # its accuracy looks: the convergence test waits for every node's decay.
    min_steps = decay_steps(args.settings)
    test = [os.path.join(args.data, "t10k-images-idx3-ubyte.gz"),
            os.path.join(args.data, "t10k-labels-idx1-ubyte.gz")]
    base = {r["node"]: r["status"] for r in snapshot(args, nodes, None)}
    t0 = time.monotonic()
    history, means, reason = [], [], None
    print(f"  {'time':>6s} {'rounds':>7s} {'steps':>8s} {'min':>6s} {'mean':>6s} {'max':>6s}  per node",
          flush=True)
    while True:
        deadline = t0 + (len(history) + 1) * args.interval
        time.sleep(max(0.0, deadline - time.monotonic()))
        rows = snapshot(args, nodes, test)
        elapsed = time.monotonic() - t0
        accs = [r["accuracy"] * 100 for r in rows]
        mean = sum(accs) / len(accs)
        rounds = [r["status"]["rounds"] - base[r["node"]]["rounds"] for r in rows]
        steps = [r["status"]["steps"] - base[r["node"]]["steps"] for r in rows]
        sent = [r["status"]["bytes_sent"] - base[r["node"]]["bytes_sent"] for r in rows]
        received = [r["status"]["bytes_received"] - base[r["node"]]["bytes_received"] for r in rows]
        means.append(mean)
        history.append({"t": round(elapsed, 1), "mean": mean, "accuracy": accs,
                        "rounds": rounds, "steps": steps, "bytes_sent": sent, "bytes_received": received})
        mean_rounds = sum(rounds) / len(rounds)
        print(f"  {elapsed:5.0f}s {mean_rounds:7.0f} {sum(steps) // len(steps):8d} {min(accs):5.1f}% "
              f"{mean:5.1f}% {max(accs):5.1f}%  " + " ".join(f"{a:.1f}" for a in accs), flush=True)
        decayed = all(r["status"]["steps"] >= min_steps for r in rows)
        if decayed and converged(means, args.window, args.min_gain):
            reason = (f"converged: mean accuracy gained <= {args.min_gain} points over the last "
                      f"{args.window} evaluations")
        elif args.max_rounds and len(nodes) > 1 and mean_rounds >= args.max_rounds:
            reason = f"capped at {args.max_rounds} rounds"
        elif args.max_seconds and elapsed + args.interval > args.max_seconds + 1:
            reason = f"capped at {args.max_seconds:.0f} s"
        if reason:
            break
    print(f"  stopped: {reason}", flush=True)
    result = {"scenario": args.scenario, "nodes": [], "wall_s": round(elapsed, 1),
              "stop_reason": reason, "converged": reason.startswith("converged"),
              "evaluations": history, "eval_interval_s": args.interval,
              "settings": args.settings and json.loads(args.settings)}
    for k, r in enumerate(rows):
        b, s = base[r["node"]], r["status"]
        recent = [h["accuracy"][k] for h in history[-args.window:]]
        result["nodes"].append({
            "node": r["node"], "accuracy": r["accuracy"], "loss": r["loss"],
            "recent_accuracy": sum(recent) / len(recent) / 100,
            "best_accuracy": max(h["accuracy"][k] for h in history) / 100,
            "rounds": s["rounds"] - b["rounds"], "steps": s["steps"] - b["steps"],
            "samples_trained": s["samples_trained"] - b["samples_trained"],
            "bytes_sent": s["bytes_sent"] - b["bytes_sent"],
            "bytes_received": s["bytes_received"] - b["bytes_received"],
            "examples_train": s["examples_train"], "examples_val": s["examples_val"]})
    if args.prior:
        # A final stretch: totals cover both phases; the accuracies are this phase's.
        with open(args.prior) as f:
            prior = json.load(f)
        for n, p in zip(result["nodes"], prior["nodes"]):
            for key in ("rounds", "steps", "samples_trained", "bytes_sent", "bytes_received"):
                n[key] += p[key]
            n["best_accuracy"] = max(n["best_accuracy"], p["best_accuracy"])
        last = prior["evaluations"][-1]
        for h in history:
            h["t"] = round(h["t"] + prior["wall_s"], 1)
            h["phase"] = "stretch"
            for key in ("rounds", "steps", "bytes_sent", "bytes_received"):
                if key in last:
                    h[key] = [a + b for a, b in zip(h[key], last[key])]
        result["evaluations"] = prior["evaluations"] + history
        result["wall_s"] = round(prior["wall_s"] + elapsed, 1)
        result["phases"] = [{"settings": prior["settings"], "wall_s": prior["wall_s"],
                             "stop_reason": prior["stop_reason"],
                             "accuracy": [n["accuracy"] for n in prior["nodes"]],
                             "recent_accuracy": [n.get("recent_accuracy") for n in prior["nodes"]]},
                            {"settings": result["settings"], "wall_s": round(elapsed, 1),
                             "stop_reason": reason}]
        result["converged"] = result["converged"] and prior["converged"]
        if not prior["converged"]:
            result["stop_reason"] = f"first phase {prior['stop_reason']}; stretch {reason}"
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------------------
# report

def fmt_bytes(b):
    return f"{b / GIB:.2f} GiB" if b >= GIB else f"{b / MIB:.1f} MiB"


def recent_accuracies(res, window=3):
    """Per node, the mean test accuracy of the last `window` evaluations (%)."""
    ev = res["evaluations"][-window:]
    return [sum(h["accuracy"][k] for h in ev) / len(ev) for k in range(len(res["nodes"]))]


def table(res):
    print(f"  {'node':<7s} {'examples':>8s} {'test acc':>8s} {'last 3':>6s} {'best':>6s} {'rounds':>7s} "
          f"{'steps':>7s} {'sent':>10s} {'received':>10s}")
    for n, recent in zip(res["nodes"], recent_accuracies(res)):
        recent = f"{recent:5.1f}%"
        print(f"  {n['node']:<7s} {n['examples_train'] + n['examples_val']:8d} {n['accuracy'] * 100:7.1f}% "
              f"{recent} {n['best_accuracy'] * 100:5.1f}% {n['rounds']:7d} {n['steps']:7d} "
              f"{fmt_bytes(n['bytes_sent']):>10s} {fmt_bytes(n['bytes_received']):>10s}")


# Goals (issue "learn at laptop pace"): ring2 every node >= 85% and Dirichlet
# every node within 2 points of central, each within 500 rounds, with at most
# 1% (stretch 0.1%) of the bytes the dense one-step-per-round run exchanged to
# get its result (README: ring2 11.30 GiB, Dirichlet 13.14 GiB).
ROUNDS_GOAL = 500
DENSE_BYTES = {"ring2": 11.30 * GIB, "dirichlet": 13.14 * GIB}


def federation_settings(res):
    """The [federation] table the run used ({} when unknown)."""
    settings = res.get("settings")
    if not settings or "config" not in settings:
        return {}
    import tomllib
    return tomllib.loads(settings["config"]).get("federation", {})


def target(res, central):
    """(description, accuracy every node must reach in %) or None without a baseline."""
    if res["scenario"] == "ring2":
        return "every node >= 85%", 85.0
    c = central["nodes"][0]["accuracy"] * 100 if central else None
    return (f"every node within 2 points of central ({c:.1f}%)", c - 2.0) if c is not None else None


def to_target(res, level):
    """The first evaluation at which every node reached `level`: (rounds, total bytes sent, evaluation)."""
    for h in res["evaluations"]:
        if min(h["accuracy"]) >= level and "bytes_sent" in h:
            return sum(h["rounds"]) / len(h["rounds"]), sum(h["bytes_sent"]), h
    return None


def summary(res, central):
    accs = [n["accuracy"] * 100 for n in res["nodes"]]
    lo, hi, mean = min(accs), max(accs), sum(accs) / len(accs)
    capped = "" if res["converged"] else f" [{res['stop_reason']}, not converged]"
    if res["scenario"] == "central":
        n = res["nodes"][0]
        return (f"central: {accs[0]:.1f}% on the 10k test set after {n['steps']} steps "
                f"({n['samples_trained'] / n['examples_train']:.1f} epochs), {res['wall_s']:.0f} s{capped}"), None
    nodes = len(accs)
    rounds = round(sum(n["rounds"] for n in res["nodes"]) / nodes)
    sent = sum(n["bytes_sent"] for n in res["nodes"])
    c = central["nodes"][0]["accuracy"] * 100 if central else None
    head = (f"{res['scenario']}: min {lo:.1f}% max {hi:.1f}% mean {mean:.1f}% "
            f"(central {c:.1f}%)" if c is not None else
            f"{res['scenario']}: min {lo:.1f}% max {hi:.1f}% mean {mean:.1f}% (no central baseline)")
    fed = federation_settings(res)
    head += (f" [codec {fed.get('codec', '?')}, {fed.get('local_steps', '?')} local steps, "
             f"{fed.get('round_interval_s', '?')} s rounds]")
    head += (f" after {rounds} rounds, {res['wall_s']:.0f} s, {fmt_bytes(sent)} exchanged, "
             f"{sent / nodes / max(rounds, 1) / 1024:.1f} KiB per node per round{capped}")
    rec = recent_accuracies(res)
    head += f" (last-3-evaluation average: min {min(rec):.1f}% mean {sum(rec) / len(rec):.1f}%)"
    t = target(res, central)
    if t is None:
        return head + "; target: UNKNOWN (no central run)", {"goal": "within 2 points of central", "met": None}
    what, level = t
    hit = to_target(res, level)
    dense = DENSE_BYTES[res["scenario"]]
    goal = {"goal": f"{what} within {ROUNDS_GOAL} rounds, <= 1% of the dense run's bytes",
            "target_accuracy": round(level, 2), "min_accuracy": lo}
    if hit is None:
        goal.update(met=False, rounds_to_target=None, bytes_to_target=None)
        return head + f"; target {what}: NOT REACHED", goal
    r, b, _ = hit
    met = r <= ROUNDS_GOAL and b <= 0.01 * dense
    goal.update(met=met, rounds_to_target=round(r), bytes_to_target=b,
                bytes_per_node_to_target=b / nodes, bytes_fraction_of_dense=b / dense)
    return head + (f"; target {what}: reached after {r:.0f} rounds, {fmt_bytes(b)} exchanged "
                   f"({fmt_bytes(b / nodes)} per node, {100 * b / dense:.2f}% of the dense run's "
                   f"{fmt_bytes(dense)}); goal <= {ROUNDS_GOAL} rounds and <= 1%: "
                   f"{'MET' if met else 'NOT MET'}"), goal


def plot(results, central, path):
    """Accuracy (worst and mean node) against rounds and against bytes per node, as PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (no plot: python3-matplotlib is not installed)")
        return None
    feds = [r for r in results.values() if r["scenario"] != "central"]
    if not feds:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in feds:
        ev = [h for h in r["evaluations"] if "bytes_sent" in h]
        if not ev:
            continue
        rounds = [sum(h["rounds"]) / len(h["rounds"]) for h in ev]
        per_node = [sum(h["bytes_sent"]) / len(h["bytes_sent"]) / MIB for h in ev]
        worst = [min(h["accuracy"]) for h in ev]
        mean = [h["mean"] for h in ev]
        fed = federation_settings(r)
        label = f"{r['scenario']} {fed.get('codec', '')} K={fed.get('local_steps', '?')}"
        for ax, x in ((ax1, rounds), (ax2, per_node)):
            line, = ax.plot(x, worst, label=f"{label}: worst node")
            ax.plot(x, mean, linestyle="--", color=line.get_color(), label=f"{label}: mean")
    if central is not None:
        c = central["nodes"][0]["accuracy"] * 100
        for ax in (ax1, ax2):
            ax.axhline(c, color="gray", linewidth=0.8, label=f"central {c:.1f}%")
    ax1.axvline(ROUNDS_GOAL, color="black", linewidth=0.6, linestyle=":")
    ax1.set_xlabel("rounds")
    ax2.set_xlabel("MiB sent per node (log scale)")
    ax2.set_xscale("log")
    for ax in (ax1, ax2):
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(50, 92)
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=6, loc="lower right")
    fig.suptitle("mycel federation on Fashion-MNIST (real myceld on loopback)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cmd_report(args):
    results = {}
    for path in args.results:
        with open(path) as f:
            r = json.load(f)
        results[r["scenario"]] = r
    central = results.get("central")
    if central is None and args.baseline:
        with open(args.baseline) as f:
            b = json.load(f)
        central = b.get("scenarios", {}).get("central", b if b.get("scenario") == "central" else None)
    out = {"benchmark": "mycel federated learning (tests/bench/learning_bench.sh)",
           "dataset": "Fashion-MNIST, accuracy on the full 10k test set",
           "reference": "NIID-Bench: FedAvg with a server, Fashion-MNIST, two classes per client: 78.1%",
           "command": args.command, "scenarios": {}, "summary": {}, "goals": {}}
    if central is not None and "central" not in results:
        out["central_from"] = args.baseline
    for name in ("central", "ring2", "dirichlet"):
        r = results.get(name) or (central if name == "central" else None)
        if r is None:
            continue
        print(f"== {name} ==")
        table(r)
        line, goal = summary(r, central)
        out["scenarios"][name] = r
        out["summary"][name] = line
        if goal:
            out["goals"][name] = goal
    print("== summary ==")
    for line in out["summary"].values():
        print(line)
    png = plot(results, central, os.path.splitext(args.out)[0] + ".png")
    if png:
        out["plot"] = png
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"results: {args.out}" + (f", plot: {png}" if png else ""))


def cmd_plot(args):
    """One PNG of every federation in several report files (e.g. one run per codec)."""
    runs, central = {}, None
    for path in args.reports:
        with open(path) as f:
            report = json.load(f)
        for name, r in report.get("scenarios", {}).items():
            if name == "central":
                central = central or r
            else:
                runs[f"{path}:{name}"] = r
    print(f"plot: {plot(runs, central, args.out)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config")
    c.add_argument("--base", required=True)
    c.add_argument("--set", action="append")
    s = sub.add_parser("split")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--nodes", type=int, default=6)
    s.add_argument("--alpha", type=float, default=0.3)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--min-examples", type=int, default=100)
    w = sub.add_parser("watch")
    w.add_argument("--scenario", required=True)
    w.add_argument("--mycel", required=True)
    w.add_argument("--data", required=True)
    w.add_argument("--node", action="append", required=True, help="NAME=CONFIG")
    w.add_argument("--interval", type=float, default=20)
    w.add_argument("--window", type=int, default=3)
    w.add_argument("--min-gain", type=float, default=0.3)
    w.add_argument("--max-rounds", type=int, default=0)
    w.add_argument("--max-seconds", type=float, default=0)
    w.add_argument("--settings")
    w.add_argument("--prior", help="result of the phase before a final stretch")
    w.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("results", nargs="+")
    r.add_argument("--baseline")
    r.add_argument("--command", default="")
    r.add_argument("--out", required=True)
    pl = sub.add_parser("plot")
    pl.add_argument("reports", nargs="+", help="result files written by learning_bench.sh --out")
    pl.add_argument("--out", required=True)
    args = ap.parse_args()
    {"config": cmd_config, "split": cmd_split, "watch": cmd_watch, "report": cmd_report,
     "plot": cmd_plot}[args.cmd](args)


if __name__ == "__main__":
    main()
