#!/usr/bin/env python3
"""Forgetting, measured: a drifting stream of Fashion-MNIST classes.

Real myceld daemons run side by side on the example config's [model] and
[training] (rest = false, so every arm trains the same number of steps):

  replay      the defaults (replay_fraction as the example config has it);
  replay=0    replay_fraction = 0: fresh rows only while any wait, then the
              store (the daemon always trains on what it holds);
  sequential  the defaults, but `mycel forget --all` before each phase, so it
              holds only the current phase: a learner with no memory;
  iid         all ten classes at once, trained as many steps in total.

The stream has five phases of two classes (0-1, 2-3, ..., 8-9). In each, an
arm is sent that phase's training images with `mycel ingest --labels`,
trains `phase_steps` steps (polled; `mycel pause` stops it there) and is
evaluated with `mycel eval` on each class's test images. It reports per arm
the accuracy on all classes seen so far after each phase, the accuracy on
each phase's new classes right after it (what a learner that learns nothing
new would lack), the average forgetting (for each class of phases 1-4, its best accuracy after it was
learnt minus its final one, averaged) and the final ten-class accuracy
against the i.i.d. arm's. The last line is the summary.
   tests/bench/forgetting_bench.sh [phase_steps=1500] [replay arms=0.5,0]
"""
import gzip, json, os, struct, subprocess, sys, tempfile, threading, time

from benchlib import BIN, DATA, example_config, mycel, start_daemon, status, stop_daemons

PHASES = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
TRAIN = (f"{DATA}/train-images-idx3-ubyte.gz", f"{DATA}/train-labels-idx1-ubyte.gz")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return dims, data[4 + 4 * ndim :]


def write_class_test_files(tmp):
    """One idx.gz image+label pair per class, from the 10,000 test images."""
    (n, h, w), images = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz")
    (_,), labels = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz")
    files = {}
    for c in range(10):
        rows = [i for i in range(n) if labels[i] == c]
        img = os.path.join(tmp, f"test-{c}-images.gz")
        lab = os.path.join(tmp, f"test-{c}-labels.gz")
        with gzip.open(img, "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(rows), h, w))
            f.write(b"".join(images[i * h * w : (i + 1) * h * w] for i in rows))
        with gzip.open(lab, "wb") as f:
            f.write(struct.pack(">II", 0x801, len(rows)))
            f.write(bytes(c for _ in rows))
        files[c] = (img, lab)
    return files


def train_for(cfg, steps):
    """Resumes, waits for `steps` more steps, pauses; returns how many it took.
    Counted from this phase's start: the pause lands some steps late on a busy
    machine, and a later phase must not inherit the overshoot as done."""
    start = status(cfg)["steps"]
    mycel(cfg, "resume")
    while status(cfg)["steps"] < start + steps:
        time.sleep(0.02)
    mycel(cfg, "pause")
    time.sleep(0.3)  # the step in flight finishes
    return status(cfg)["steps"] - start


def class_accuracy(cfg, test_files, classes):
    out = {}
    for c in classes:
        r = json.loads(mycel(cfg, "eval", "--json", *test_files[c]))
        out[c] = r["accuracy"]
    return out


def run_arm(arm, kind, cfg, test_files, phase_steps, result):
    """Drives one daemon through the stream; result gets the per-phase
    per-class accuracies and the steps each phase stopped at."""
    acc, stopped = [], []
    if kind == "iid":
        mycel(cfg, "ingest", "--no-progress", *TRAIN)
        stopped.append(train_for(cfg, phase_steps * len(PHASES)))
        acc.append(class_accuracy(cfg, test_files, range(10)))
    else:
        for k, labels in enumerate(PHASES):
            if kind == "sequential" and k > 0:
                mycel(cfg, "forget", "--all")
            mycel(cfg, "ingest", "--no-progress", "--labels", ",".join(map(str, labels)), *TRAIN)
            stopped.append(train_for(cfg, phase_steps))
            acc.append(class_accuracy(cfg, test_files, range(10)))
    result[arm] = {"acc": acc, "steps": stopped}


def mean(xs):
    return sum(xs) / len(xs)


def main():
    phase_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    replays = [float(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "0.5,0").split(",")]
    tmp = tempfile.mkdtemp(prefix="mycel-forgetting-bench-")
    test_files = write_class_test_files(tmp)
    arms = {}
    for r in replays:
        arms[f"replay={r:g}"] = r
    arms["sequential"] = None
    arms["iid"] = None
    procs, cfgs = [], {}
    try:
        for arm, replay in arms.items():
            safe = arm.replace("=", "-").replace(".", "_")
            state = os.path.join(tmp, safe)
            cfg = os.path.join(tmp, safe + ".toml")
            text = example_config(safe, state, rest=False)
            if replay is not None:
                text = text.replace("\nreplay_fraction = 0.5", f"\nreplay_fraction = {replay}")
            with open(cfg, "w") as f:
                f.write(text)
            procs.append(start_daemon(cfg, state, os.path.join(tmp, safe + ".log")))
            mycel(cfg, "pause")
            cfgs[arm] = cfg
        result, threads = {}, []
        t0 = time.time()
        for arm, cfg in cfgs.items():
            kind = "iid" if arm == "iid" else ("sequential" if arm == "sequential" else "replay")
            t = threading.Thread(target=run_arm, args=(arm, kind, cfg, test_files, phase_steps, result))
            t.start()
            threads.append((arm, kind, t))
        for arm, kind, t in threads:
            t.join()
        if any(arm not in result for arm in cfgs):
            sys.exit("an arm did not finish; see the logs in " + tmp)
        print(f"{len(PHASES)} phases of two classes, {phase_steps} steps each, batch 64; "
              f"ran in {time.time() - t0:.0f} s")
        iid_final = mean(list(result["iid"]["acc"][-1].values()))
        summary = {}
        for arm in cfgs:
            if arm == "iid":
                continue
            acc = result[arm]["acc"]
            seen = []
            line = []
            for k, labels in enumerate(PHASES):
                seen += labels
                line.append(f"{100 * mean([acc[k][c] for c in seen]):.1f}")
            forgetting = mean([max(acc[k][c] for k in range(p, len(PHASES) - 1)) - acc[-1][c]
                               for p, labels in enumerate(PHASES[:-1]) for c in labels])
            # Forgetting is only half the story: a learner that never learns
            # the new classes forgets nothing. So also the accuracy on each
            # phase's own classes right after it.
            fresh = [mean([acc[k][c] for c in labels]) for k, labels in enumerate(PHASES)]
            learnt = mean(fresh)
            final = mean(list(acc[-1].values()))
            summary[arm] = (final, forgetting)
            print(f"{arm:>12}: seen-class accuracy after each phase {' '.join(line)} %; "
                  f"new classes right after their phase {100 * learnt:.1f}% "
                  f"({' '.join(f'{100 * a:.0f}' for a in fresh)}); "
                  f"average forgetting {100 * forgetting:.1f} points; final {100 * final:.1f}% "
                  f"= {100 * final / iid_final:.1f}% of i.i.d.; steps per phase {result[arm]['steps']}")
        print(f"{'iid':>12}: final {100 * iid_final:.1f}% after {result['iid']['steps'][-1]} steps")
        first = f"replay={replays[0]:g}"
        print(f"forgetting_bench: {first} final {100 * summary[first][0]:.1f}% = "
              f"{100 * summary[first][0] / iid_final:.1f}% of i.i.d. {100 * iid_final:.1f}%, average forgetting "
              f"{100 * summary[first][1]:.1f} points; " +
              "; ".join(f"{a} {100 * s[0]:.1f}% / forgetting {100 * s[1]:.1f}" for a, s in summary.items() if a != first))
    finally:
        stop_daemons(procs)


if __name__ == "__main__":
    main()
