#!/usr/bin/env python3
"""Forgetting, measured: a drifting stream of Fashion-MNIST classes.

Real myceld daemons run side by side on the example config's [model] and
[training] (rest = false, so every arm trains the same number of steps):

  POOL F      replay_pool = POOL (uniform or balanced) and replay_fraction = F,
              one arm each (default: the example config's pool and fraction,
              the other pool, and the example's pool at 0: fresh rows only
              while any wait, then the store, since the daemon always trains
              on what it holds);
  sequential  the defaults, but `mycel forget --all` before each phase, so it
              holds only the current phase: a learner with no memory;
  joint       a reference, not a learner one could deploy: before each phase
              `mycel forget --all`, then the training images of every class
              seen so far (shuffled, as the file holds them) and the same
              steps, so each phase's model is trained i.i.d. on all the seen
              classes. What it "forgets" is the part of the measure that is
              no forgetting at all: a class's accuracy drops when classes it
              is confused with arrive (T-shirt and shirt, pullover and coat);
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
   tests/bench/forgetting_bench.sh [phase_steps=1500] [arms=POOL:F,...]
                                   [references=sequential,joint,iid]
"""
import gzip, json, os, re, struct, subprocess, sys, tempfile, threading, time

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


def polled_status(cfg):
    """status, retried: on a loaded machine one call can miss its deadline
    while six daemons parse an ingest, and an arm must not die of it."""
    for attempt in range(10):
        try:
            return status(cfg)
        except SystemExit:
            if attempt == 9:
                raise
            time.sleep(1)


def train_for(cfg, steps):
    """Resumes, waits for `steps` more steps, pauses; returns how many it took.
    Counted from this phase's start: the pause lands some steps late on a busy
    machine, and a later phase must not inherit the overshoot as done."""
    start = polled_status(cfg)["steps"]
    mycel(cfg, "resume")
    while polled_status(cfg)["steps"] < start + steps:
        time.sleep(0.02)
    mycel(cfg, "pause")
    time.sleep(0.3)  # the step in flight finishes
    return polled_status(cfg)["steps"] - start


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
        seen = []
        for k, labels in enumerate(PHASES):
            seen += labels
            if kind in ("sequential", "joint") and k > 0:
                mycel(cfg, "forget", "--all")
            batch = seen if kind == "joint" else labels
            mycel(cfg, "ingest", "--no-progress", "--labels", ",".join(map(str, batch)), *TRAIN)
            stopped.append(train_for(cfg, phase_steps))
            acc.append(class_accuracy(cfg, test_files, range(10)))
            # Progress, so a slow run shows where it is.
            print(f"  {arm} phase {k + 1}: " + " ".join(f"{100 * acc[-1][c]:.0f}" for c in seen), flush=True)
    result[arm] = {"acc": acc, "steps": stopped}


def run_arm_or_say(arm, *args):
    """run_arm, saying why an arm stopped: a thread's sys.exit is silent."""
    try:
        run_arm(arm, *args)
    except BaseException as e:
        print(f"  {arm} stopped: {e}", flush=True)


def mean(xs):
    return sum(xs) / len(xs)


def main():
    phase_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    example = example_config("x", "x", rest=False)
    pool = re.search(r'\nreplay_pool = "([a-z]+)"', example).group(1)
    fraction = float(re.search(r"\nreplay_fraction = ([0-9.]+)", example).group(1))
    other = "balanced" if pool == "uniform" else "uniform"
    spec = sys.argv[2] if len(sys.argv) > 2 else f"{pool}:{fraction:g},{other}:{fraction:g},{pool}:0"
    tmp = tempfile.mkdtemp(prefix="mycel-forgetting-bench-")
    test_files = write_class_test_files(tmp)
    arms = {}
    for a in spec.split(","):
        p, _, f = a.rpartition(":")
        arms[f"{p or pool} {float(f):g}"] = (p or pool, float(f))
    replays = list(arms)
    references = (sys.argv[3] if len(sys.argv) > 3 else "sequential,joint,iid").split(",")
    if "iid" not in references:
        sys.exit("the iid arm is the yardstick of every other: keep it")
    for r in ("sequential", "joint", "iid"):
        if r in references:
            arms[r] = None
    procs, cfgs = [], {}
    try:
        for arm, replay in arms.items():
            safe = arm.replace(" ", "-").replace(".", "_")
            state = os.path.join(tmp, safe)
            cfg = os.path.join(tmp, safe + ".toml")
            text = example_config(safe, state, rest=False)
            if replay is not None:
                text = re.sub(r"\nreplay_fraction = [0-9.]+", f"\nreplay_fraction = {replay[1]}", text)
                text = re.sub(r'\nreplay_pool = "[a-z]+"', f'\nreplay_pool = "{replay[0]}"', text)
            with open(cfg, "w") as f:
                f.write(text)
            procs.append(start_daemon(cfg, state, os.path.join(tmp, safe + ".log")))
            mycel(cfg, "pause")
            cfgs[arm] = cfg
        result, threads = {}, []
        t0 = time.time()
        for arm, cfg in cfgs.items():
            kind = arm if arm in ("iid", "sequential", "joint") else "replay"
            t = threading.Thread(target=run_arm_or_say, args=(arm, kind, cfg, test_files, phase_steps, result))
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
            per_class = [max(acc[k][c] for k in range(p, len(PHASES) - 1)) - acc[-1][c]
                         for p, labels in enumerate(PHASES[:-1]) for c in labels]
            forgetting = mean(per_class)
            # Forgetting is only half the story: a learner that never learns
            # the new classes forgets nothing. So also the accuracy on each
            # phase's own classes right after it.
            fresh = [mean([acc[k][c] for c in labels]) for k, labels in enumerate(PHASES)]
            learnt = mean(fresh)
            final = mean(list(acc[-1].values()))
            summary[arm] = (final, forgetting)
            print(f"{arm:>13}: seen-class accuracy after each phase {' '.join(line)} %; "
                  f"new classes right after their phase {100 * learnt:.1f}% "
                  f"({' '.join(f'{100 * a:.0f}' for a in fresh)}); "
                  f"average forgetting {100 * forgetting:.1f} points "
                  f"(classes 0-7: {' '.join(f'{100 * f:.0f}' for f in per_class)}); final {100 * final:.1f}% "
                  f"= {100 * final / iid_final:.1f}% of i.i.d.; steps per phase {result[arm]['steps']}")
        print(f"{'iid':>13}: final {100 * iid_final:.1f}% after {result['iid']['steps'][-1]} steps")
        first = replays[0]
        print(f"forgetting_bench: {first} final {100 * summary[first][0]:.1f}% = "
              f"{100 * summary[first][0] / iid_final:.1f}% of i.i.d. {100 * iid_final:.1f}%, average forgetting "
              f"{100 * summary[first][1]:.1f} points; " +
              "; ".join(f"{a} {100 * s[0]:.1f}% / forgetting {100 * s[1]:.1f}" for a, s in summary.items() if a != first))
    finally:
        stop_daemons(procs)


if __name__ == "__main__":
    main()
