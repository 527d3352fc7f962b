#!/usr/bin/env python3
"""Resting, measured: the CPU a converged daemon takes, and how fast it wakes.

Two real myceld run side by side on the same data with the example config's
[training] (eval_interval_s 5, rest_patience 6, rest_max_s 600): one with
rest on (the default), one with rest = false. Once the first says "resting",
both processes' CPU time is read from /proc/<pid>/stat over the same 60 s.
Then the resting one is sent the 60,000 training images and the time from
the ingest's acknowledgement to the trainer training again is measured.
Prints one line per figure and a summary line.
   tests/bench/rest_bench.sh [window_s=60]
"""
import os, sys, tempfile, time

from benchlib import DATA, example_config, mycel, start_daemon, status, stop_daemons

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def main():
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    tmp = tempfile.mkdtemp(prefix="mycel-rest-bench-")
    nodes, procs = {}, []
    try:
        for name, rest in (("resting", True), ("always", False)):
            state = os.path.join(tmp, name)
            cfg = os.path.join(tmp, name + ".toml")
            with open(cfg, "w") as f:
                f.write(example_config(name, state, rest=rest))
            p = start_daemon(cfg, state, os.path.join(tmp, name + ".log"))
            procs.append(p)
            nodes[name] = (cfg, p)
        for name, (cfg, p) in nodes.items():
            mycel(cfg, "ingest", "--no-progress", f"{DATA}/t10k-images-idx3-ubyte.gz", f"{DATA}/t10k-labels-idx1-ubyte.gz")
        cfg, p = nodes["resting"]
        t0 = time.time()
        while status(cfg)["state"] != "resting":
            if time.time() - t0 > 900:
                sys.exit("no rest within 900 s")
            time.sleep(1)
        converged = time.time() - t0
        st = status(cfg)
        print(f"rest began {converged:.0f} s after the ingest, validation accuracy {st['val_accuracy']:.4f}, "
              f"steps {st['steps']}")
        c0 = {n: cpu_seconds(q.pid) for n, (_, q) in nodes.items()}
        s0 = status(cfg)["steps"]
        w0 = time.time()
        time.sleep(window)
        wall = time.time() - w0
        share = {n: 100 * (cpu_seconds(q.pid) - c0[n]) / wall for n, (_, q) in nodes.items()}
        s1 = status(cfg)
        print(f"CPU over {wall:.0f} s: resting {share['resting']:.2f}% of a core (steps {s0} -> {s1['steps']}, "
              f"state {s1['state']}), rest = false {share['always']:.1f}%")
        # Wake-up: from the ingest's acknowledgement to training again.
        mycel(cfg, "ingest", "--no-progress", f"{DATA}/train-images-idx3-ubyte.gz", f"{DATA}/train-labels-idx1-ubyte.gz")
        t_ack = time.time()
        base = status(cfg)["steps"]
        while True:
            st = status(cfg)
            if st["state"] == "training" and st["steps"] > base:
                break
            if time.time() - t_ack > 60:
                sys.exit("did not wake within 60 s of an ingest")
            time.sleep(0.05)
        wake = time.time() - t_ack
        print(f"woke {wake:.2f} s after the ingest was acknowledged")
        print(f"rest_bench: resting {share['resting']:.2f}% of a core vs {share['always']:.1f}% with rest = false "
              f"(ratio {share['resting'] / max(share['always'], 1e-9):.4f}); wakes in {wake:.2f} s after an ingest")
    finally:
        stop_daemons(procs)


if __name__ == "__main__":
    main()
