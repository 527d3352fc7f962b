#!/usr/bin/env python3
"""Memory, measured: myceld's RSS against a bare libtorch program, side by side.

For each built-in image model (mlp, then cnn) a real myceld starts on the
example config's [model] and [training] (rest = false, so it trains for the
whole window), is sent Fashion-MNIST's 60,000 training images, and trains.
Beside it bare_torch trains the same network on as many uint8 images with
nothing else around it: libtorch's floor plus the data. Both processes' RSS
is read from /proc/<pid>/status every second over the same window; the peak
and the last reading are reported, with what myceld's RSS is made of (from
/proc/<pid>/smaps) and its RSS before any data. Prints one summary line per
model.
   tests/bench/memory_bench.sh [window_s=60] [models=mlp,cnn]
"""
import os, re, subprocess, sys, tempfile, time

from benchlib import BIN, DATA, example_config, mycel, start_daemon, status

BARE = os.path.join(BIN, "bare_torch")
ROWS = 60000


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def breakdown(pid):
    """RSS in MiB by what backs it: libtorch, the BLAS/OpenMP runtime, gRPC and
    its kin, other shared objects, the executable, and anonymous memory."""
    groups = {}
    name = None
    exe = os.path.realpath(f"/proc/{pid}/exe")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                path = head[5] if len(head) > 5 else ""
                base = os.path.basename(path)
                if path == exe:
                    name = "executable"
                elif "torch" in base or "c10" in base:
                    name = "libtorch"
                elif "blas" in base or "gomp" in base or "lapack" in base or "gfortran" in base:
                    name = "openblas+openmp"
                elif any(k in base for k in ("grpc", "protobuf", "absl", "ssl", "crypto", "upb", "re2", "cares")):
                    name = "grpc+protobuf+absl"
                elif ".so" in base:
                    name = "other libraries"
                else:
                    name = "anonymous (heap, tensors, stacks)"
            elif head and head[0] == "Rss:" and name:
                groups[name] = groups.get(name, 0) + int(head[1]) / 1024
    return groups


def measure(kind, window, tmp):
    state = os.path.join(tmp, kind)
    cfg = os.path.join(tmp, kind + ".toml")
    with open(cfg, "w") as f:
        f.write(example_config(kind, state, rest=False, kind=kind))
    daemon = start_daemon(cfg, state, os.path.join(tmp, kind + ".log"))
    bare = None
    try:
        time.sleep(2)
        empty = rss_mib(daemon.pid)
        mycel(cfg, "ingest", "--no-progress", f"{DATA}/train-images-idx3-ubyte.gz", f"{DATA}/train-labels-idx1-ubyte.gz")
        bare = subprocess.Popen([BARE, kind, str(ROWS), str(window + 30)], stdout=subprocess.PIPE, text=True)
        if bare.stdout.readline().strip() != "ready":
            sys.exit("bare_torch did not start")
        d_peak = b_peak = 0.0
        t0 = time.time()
        while time.time() - t0 < window:
            d, b = rss_mib(daemon.pid), rss_mib(bare.pid)
            d_peak, b_peak = max(d_peak, d), max(b_peak, b)
            time.sleep(1)
        d_last, b_last = rss_mib(daemon.pid), rss_mib(bare.pid)
        d_peak, b_peak = max(d_peak, d_last), max(b_peak, b_last)
        parts = breakdown(daemon.pid)
        bare_parts = breakdown(bare.pid)
        st = status(cfg)
        print(f"{kind}: myceld {st['examples_train']} train + {st['examples_val']} validation examples, "
              f"{st['steps']} steps; RSS with an empty store {empty:.0f} MiB")
        print(f"{kind}: RSS over {window:.0f} s, peak / last: myceld {d_peak:.0f} / {d_last:.0f} MiB, "
              f"bare libtorch {b_peak:.0f} / {b_last:.0f} MiB")
        for k in sorted(parts, key=lambda k: -parts[k]):
            print(f"{kind}:   {k:36s} myceld {parts[k]:6.1f} MiB   bare {bare_parts.get(k, 0.0):6.1f} MiB")
        print(f"memory_bench {kind}: myceld peak {d_peak:.0f} MiB vs bare libtorch {b_peak:.0f} MiB: "
              f"+{d_peak - b_peak:.0f} MiB (ratio {d_peak / max(b_peak, 1e-9):.2f}); last +{d_last - b_last:.0f} MiB")
    finally:
        if bare:
            bare.kill()
            bare.wait()
        daemon.terminate()
        daemon.wait(timeout=60)


def main():
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    models = sys.argv[2].split(",") if len(sys.argv) > 2 else ["mlp", "cnn"]
    tmp = tempfile.mkdtemp(prefix="mycel-memory-bench-")
    for kind in models:
        measure(kind, window, tmp)


if __name__ == "__main__":
    main()
