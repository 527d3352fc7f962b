#!/usr/bin/env python3
"""What the trust issue's goals ask of mycel-sim, run side by side and
summarised (every figure is the worst honest node on all 10 000 test images
unless a line says otherwise):

  scale     Dirichlet(0.3) federations of N nodes (16, 64, 256) on a ring and
            on a random 4-regular graph, against central (one node, all the
            data, the same steps): the rounds it took every node to reach the
            target on the curve (1000 test images), the final worst and mean,
            seconds a round and bytes per node per round.
  churn     16 nodes, random 4-regular, Dirichlet(0.3), with 20% of the nodes
            offline at any time (leaving and rejoining; away nodes do not
            train) against no churn, at equal steps per node (rounds / 0.8)
            and at equal rounds.
  backdoor  the same federation with 20% of nodes training a corner trigger
            labelled 0: the trigger's success on honest nodes with trust off
            and on (goal: at most 5% with trust on).
  robust    the merge rules (none, reject, trimmed_mean, median, trust) against
            each attack (scale:100, signflip, alie, labelflip, backdoor) by 20%
            of 16 nodes on a random 4-regular graph, Dirichlet(0.3).
  personal  on skewed data (Dirichlet(0.1), two classes a node), each node
            on its own distribution: alone, federated, federated with the
            node's class prior added to the logits, and federated with its
            classifier head kept local (local_layers = ["out"]).
  plot      RESULT.json [PNG]: each node's accuracy against rounds (honest
            nodes in blue, attackers in red).

   tests/bench/sim_bench.sh scale|churn|backdoor|robust|personal|all [--rounds R] [--sizes 16,64,256]
                              [--target 0.80] [--seed S] [--out DIR]
   tests/bench/sim_bench.sh plot RESULT.json [PNG]

Every run's JSON and PNG land in --out (default /tmp/mycel-sim-bench); the
last line printed is the summary.
"""
import argparse, json, os, subprocess, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIM = os.path.join(ROOT, "build", "bin", "mycel-sim")


def plot(result_path, png_path=None):
    """Each node's curve against rounds as a PNG; returns its path, or None
    without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("python3-matplotlib is not installed: no plot", file=sys.stderr)
        return None
    with open(result_path) as f:
        r = json.load(f)
    png_path = png_path or os.path.splitext(result_path)[0] + ".png"
    fig, ax = plt.subplots(figsize=(7, 4))
    for n in r["per_node"]:
        ax.plot(r["curve_rounds"], [a * 100 for a in n["curve"]],
                color="tab:red" if n["attacker"] else "tab:blue",
                alpha=0.8 if n["attacker"] else max(0.15, min(0.8, 8 / len(r["per_node"]))),
                linewidth=1)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy on 1000 test images (%)")
    title = f'{r["nodes"]} nodes, {r["topology"]}, {r["split"]}'
    if r["attackers"]:
        title += f', {r["attackers"]} attacking ({r["attack"]})'
    if r.get("churn"):
        title += f', churn {r["churn"]}'
    ax.set_title(title + f' — worst honest {r["honest_accuracy_min"] * 100:.1f}%', fontsize=9)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def run(a, name, args):
    """One mycel-sim run; returns its result with the JSON's path."""
    path = os.path.join(a.out, name + ".json")
    cmd = [a.sim, *args, "--json", path]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    with open(path) as f:
        res = json.load(f)
    res["path"] = path
    plot(path)
    print(f"  {name}: worst honest {res['honest_accuracy_min'] * 100:.1f}% "
          f"({time.time() - t0:.0f} s)", flush=True)
    return res


def rounds_to(res, target):
    """The first curve round where every honest node is at target or above
    (on the curve's test images), or None."""
    honest = [n["curve"] for n in res["per_node"] if not n["attacker"]]
    for i, rnd in enumerate(res["curve_rounds"]):
        if all(c[i] >= target for c in honest):
            return rnd
    return None


def common(a, n, topology, split="dirichlet:0.3"):
    return ["--nodes", str(n), "--topology", topology, "--split", split,
            "--rounds", str(a.rounds), "--seed", str(a.seed),
            "--eval-every", str(max(1, a.rounds // 50))]


def central(a):
    return run(a, "central", ["--nodes", "1", "--topology", "regular:4", "--split", "iid",
                                  "--rounds", str(a.rounds), "--seed", str(a.seed),
                                  "--eval-every", str(max(1, a.rounds // 50))])


def scale(a):
    c = central(a)["honest_accuracy_min"]
    rows = []
    for n in a.sizes:
        for topo in ("ring", "regular:4"):
            res = run(a, f"scale-{n}-{topo.replace(':', '')}", common(a, n, topo))
            rows.append((n, topo, res))
    print(f"\ncentral {c * 100:.1f}%; target: every node at {a.target * 100:.0f}% on the curve")
    print("| nodes | graph | rounds to target | worst | mean | worst − central | s a round | KiB/node/round |")
    print("|---|---|---|---|---|---|---|---|")
    for n, topo, res in rows:
        r = rounds_to(res, a.target)
        r = r if r is not None else f"> {res['rounds']}"
        print(f"| {n} | {topo} | {r} | "
              f"{res['honest_accuracy_min'] * 100:.1f}% | {res['honest_accuracy_mean'] * 100:.1f}% | "
              f"{(res['honest_accuracy_min'] - c) * 100:+.1f} | {res['seconds_per_round']:.2f} | "
              f"{res['bytes_per_node_per_round'] / 1024:.0f} |")
    biggest = [res for n, t, res in rows if n == max(a.sizes) and t == "regular:4"][0]
    gap = (c - biggest["honest_accuracy_min"]) * 100
    return (f"scale: {max(a.sizes)} nodes on a random 4-regular graph, Dirichlet(0.3): worst "
            f"{biggest['honest_accuracy_min'] * 100:.1f}%, {gap:.1f} points below central "
            f"(goal: within 2) — {'met' if gap <= 2 else 'NOT met'}")


def churn(a):
    """Away nodes do not train (a closed laptop), so at equal rounds a churned
    federation has taken 1/(1 − churn) fewer steps and its learning rate has
    not finished decaying; the goal is judged at equal steps per node."""
    base = run(a, "churn-0", common(a, 16, "regular:4"))
    same_rounds = run(a, "churn-0.2-same-rounds", common(a, 16, "regular:4") + ["--churn", "0.2"])
    longer = argparse.Namespace(**{**vars(a), "rounds": round(a.rounds / 0.8)})
    ch = run(a, "churn-0.2", common(longer, 16, "regular:4") + ["--churn", "0.2"])
    gap = (base["honest_accuracy_min"] - ch["honest_accuracy_min"]) * 100
    return (f"churn: 20% offline, {longer.rounds} rounds (as many steps per node as {a.rounds} "
            f"without churn): worst {ch['honest_accuracy_min'] * 100:.1f}% against "
            f"{base['honest_accuracy_min'] * 100:.1f}% without churn ({gap:+.1f} points lost; goal: "
            f"within 2) — {'met' if gap <= 2 else 'NOT met'}; at equal rounds "
            f"{same_rounds['honest_accuracy_min'] * 100:.1f}%")


def backdoor(a):
    att = ["--attackers", "0.2", "--attack", "backdoor"]
    off = run(a, "backdoor-trust-off", common(a, 16, "regular:4") + att + ["--trust", "off"])
    on = run(a, "backdoor-trust-on", common(a, 16, "regular:4") + att + ["--trust", "on"])
    s_off, s_on = off["backdoor_success"] * 100, on["backdoor_success"] * 100
    return (f"backdoor: trigger success on honest nodes {s_on:.1f}% with trust on, {s_off:.1f}% "
            f"with it off (worst honest {on['honest_accuracy_min'] * 100:.1f}% / "
            f"{off['honest_accuracy_min'] * 100:.1f}%; goal: at most 5% with trust on) — "
            f"{'met' if s_on <= 5 else 'NOT met'}")


def personal_config(out_dir):
    """configs/federation.toml with the classifier head ("out") kept local."""
    with open(os.path.join(ROOT, "configs", "federation.toml")) as f:
        text = f.read()
    text = text.replace("\n[model]\n", '\n[model]\nlocal_layers = ["out"]\n', 1)
    path = os.path.join(out_dir, "personal.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def personal(a):
    """Each node judged on its own distribution (own_accuracy): the model
    trained alone, the federated model, the federated model with its
    classifier head kept local (local_layers = ["out"], trained on local data
    only), and the federated model with the node's class prior added to its
    logits at prediction (own_accuracy_prior: label-shift correction, no
    training), on skewed federations of 16 nodes (random 4-regular)."""
    cfg = personal_config(a.out)
    lines = []
    print("\n| split | alone | federated | federated + own prior | federated, local head | "
          "local head − better of alone and federated (mean) | nodes below alone | "
          "all ten classes: federated / local head |")
    print("|---|---|---|---|---|---|---|---|")
    mean = lambda v: sum(v) / len(v)
    for split in ("dirichlet:0.1", "classes:2"):
        tag = split.replace(":", "")
        alone = run(a, f"personal-{tag}-alone", common(a, 16, "none", split))
        fed = run(a, f"personal-{tag}-federated", common(a, 16, "regular:4", split))
        mine = run(a, f"personal-{tag}-local-head", common(a, 16, "regular:4", split) + ["--config", cfg])
        own = lambda r, k="own_accuracy": [n[k] * 100 for n in r["per_node"]]
        al, fe, pe, pr = own(alone), own(fed), own(mine), own(fed, "own_accuracy_prior")
        gain = mean([p - max(f, l) for p, f, l in zip(pe, fe, al)])
        below = sum(p < l for p, l in zip(pe, al))
        print(f"| {split} | {mean(al):.1f}% | {mean(fe):.1f}% | {mean(pr):.1f}% ({sum(p < l for p, l in zip(pr, al))} "
              f"below alone) | {mean(pe):.1f}% (worst {min(pe):.1f}%) | {gain:+.1f} | {below} of {len(pe)} | "
              f"{fed['honest_accuracy_mean'] * 100:.1f}% / {mine['honest_accuracy_mean'] * 100:.1f}% |")
        lines.append(f"{split} local head {mean(pe):.1f}% against alone {mean(al):.1f}% and federated "
                     f"{mean(fe):.1f}% ({gain:+.1f} over the better, goal +2; {below} nodes below alone, goal 0)"
                     f" — {'met' if gain >= 2 and below == 0 else 'NOT met'}")
    return "personal: " + "; ".join(lines)


ATTACKS = ["none", "scale:100", "signflip", "alie", "labelflip", "backdoor"]
RULES = [("none", "off"), ("reject", "off"), ("trimmed_mean", "off"), ("median", "off"), ("none", "on")]


def robust(a):
    """Every merge rule against every attack: 16 nodes, random 4-regular,
    Dirichlet(0.3), 20% attackers."""
    rules = [r for r in RULES if a.rules is None or (r[0] + ("+trust" if r[1] == "on" else "")) in a.rules]
    table = {}
    for attack in ATTACKS:
        for rule, trust in rules:
            att = [] if attack == "none" else ["--attackers", "0.2", "--attack", attack]
            name = f"robust-{attack.replace(':', '')}-{rule}" + ("-trust" if trust == "on" else "")
            table[attack, rule, trust] = run(a, name, common(a, 16, "regular:4") + att +
                                             ["--robust", rule, "--trust", trust])
    heads = [rule + (" + trust" if trust == "on" else "") for rule, trust in rules]
    print("\n| attack (20% of 16 nodes) | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(rules))
    for attack in ATTACKS:
        cells = []
        for rule, trust in rules:
            res = table[attack, rule, trust]
            cell = f"{res['honest_accuracy_min'] * 100:.1f}%"
            if attack == "backdoor":
                cell += f" (trigger {res['backdoor_success'] * 100:.0f}%)"
            cells.append(cell)
        print(f"| {attack} | " + " | ".join(cells) + " |")
    clean = run(a, "robust-none-none", common(a, 16, "regular:4"))["honest_accuracy_min"] \
        if ("none", "none", "off") not in table else table["none", "none", "off"]["honest_accuracy_min"]
    best = {attack: max(rules, key=lambda r: table[attack, r[0], r[1]]["honest_accuracy_min"])
            for attack in ATTACKS if attack not in ("none", "backdoor")}
    within = [at for at, (r, t) in best.items()
              if clean - table[at, r, t]["honest_accuracy_min"] <= 0.02]
    return (f"robust: the best rule keeps the worst honest node within 2 points of the clean "
            f"{clean * 100:.1f}% against {', '.join(within) or 'no attack'} "
            f"(of {', '.join(best)})")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "plot":
        if len(sys.argv) not in (3, 4):
            sys.exit("usage: sim_bench.sh plot RESULT.json [PNG]")
        png = plot(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)
        print(f"plot: {png}" if png else "no plot")
        return
    p = argparse.ArgumentParser(description="mycel-sim: scale, churn and backdoor, side by side")
    p.add_argument("what", choices=["scale", "churn", "backdoor", "robust", "personal", "all"])
    p.add_argument("--rounds", type=int, default=500)
    p.add_argument("--sizes", default="16,64,256")
    p.add_argument("--target", type=float, default=0.80)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="/tmp/mycel-sim-bench")
    p.add_argument("--sim", default=SIM, help="the mycel-sim binary")
    p.add_argument("--rules", help="robust: only these columns, e.g. median,trimmed_mean,none+trust")
    a = p.parse_args()
    a.sizes = [int(s) for s in a.sizes.split(",")]
    a.rules = a.rules.split(",") if a.rules else None
    if min(a.sizes) < 2 or a.rounds < 1 or not 0 < a.target < 1:
        sys.exit("--sizes must be at least 2 nodes, --rounds at least 1, --target in (0, 1)")
    os.makedirs(a.out, exist_ok=True)
    jobs = {"scale": scale, "churn": churn, "backdoor": backdoor, "robust": robust, "personal": personal}
    lines = [jobs[w](a) for w in (jobs if a.what == "all" else [a.what])]
    print()
    print("; ".join(lines))


if __name__ == "__main__":
    main()
