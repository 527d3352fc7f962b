#!/usr/bin/env python3
"""The trainer benchmark's bare loop in PyTorch, for comparison with libtorch.

Same network as the daemon's `mlp` kind (flatten -> Linear+ReLU per hidden
width -> Linear(classes)), same SGD options, batch and intra-op threads as
tests/bench/trainer_bench.cc passes; the whole Fashion-MNIST train set is
preloaded as float tensors and every step trains on a random index batch.

Standalone:  python3 tests/bench/trainer_bench.py --seconds 2 --rounds 5
             prints one line per round and a final "python: N samples/s".
Driven:      --serve reads "run SECONDS" lines on stdin and answers each with
             "result SAMPLES WALL_S CPU_S", so trainer_bench can interleave
             Python rounds with its own (machines are shared and noisy).
Exit status 2 when torch cannot be imported.
"""
import argparse
import gzip
import os
import statistics
import struct
import sys
import time


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def load_data(torch, args):
    images = os.path.join(args.data_dir, "train-images-idx3-ubyte.gz")
    labels = os.path.join(args.data_dir, "train-labels-idx1-ubyte.gz")
    width, classes = 784, 10
    if args.synthetic or not (os.path.exists(images) and os.path.exists(labels)):
        n = args.limit or 60000
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (n, width), dtype=torch.uint8, generator=g)
        y = torch.randint(0, classes, (n,), dtype=torch.int64, generator=g)
        source = "synthetic"
    else:
        idims, ibytes = read_idx(images)
        ldims, lbytes = read_idx(labels)
        n = idims[0]
        width = idims[1] * idims[2]
        x = torch.frombuffer(bytearray(ibytes), dtype=torch.uint8).reshape(n, width)
        y = torch.frombuffer(bytearray(lbytes), dtype=torch.uint8).to(torch.int64)
        if args.limit and args.limit < n:
            x, y, n = x[:args.limit], y[:args.limit], args.limit
        source = images
    return (x.float() / 255.0).contiguous(), y.contiguous(), source


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before the rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, nargs="+", default=[128])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--limit", type=int, default=0, help="use only the first N examples")
    p.add_argument("--synthetic", action="store_true", help="random data instead of Fashion-MNIST")
    p.add_argument("--serve", action="store_true", help="take 'run SECONDS' commands on stdin")
    args = p.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"trainer_bench.py: cannot import torch ({e}); install python3-torch", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y, source = load_data(torch, args)
    n, width = x.shape

    class Mlp(torch.nn.Module):
        # Mirrors MlpNet in src/model/networks.cc (names fc0.., out).
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.ModuleList()
            w = width
            for h in args.hidden:
                self.hidden.append(torch.nn.Linear(w, h))
                w = h
            self.out = torch.nn.Linear(w, 10)

        def forward(self, inp):
            h = inp.reshape(inp.size(0), -1)
            for layer in self.hidden:
                h = torch.relu(layer(h))
            return self.out(h)

    model = Mlp()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    batch = args.batch

    def run(seconds):
        steps = 0
        c0, t0 = time.process_time(), time.perf_counter()
        deadline = t0 + seconds
        while True:
            idx = torch.randint(n, (batch,))
            xb = x.index_select(0, idx)
            yb = y.index_select(0, idx)
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() >= deadline:
                break
        return steps * batch, time.perf_counter() - t0, time.process_time() - c0

    if args.serve:
        print(f"ready torch {torch.__version__}, {torch.get_num_threads()} thread(s), {n} examples",
              flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "run" and len(words) == 2:
                samples, wall, cpu = run(float(words[1]))
                print(f"result {samples} {wall:.6f} {cpu:.6f}", flush=True)
            else:
                print(f"error unknown command {line.strip()!r}", flush=True)
        return 0

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {n} examples from {source}")
    run(args.warmup)
    rates = []
    for r in range(args.rounds):
        samples, wall, cpu = run(args.seconds)
        rates.append(samples / wall)
        print(f"round {r + 1}: {samples / wall:,.0f} samples/s (cpu/wall {cpu / wall:.2f})")
    print(f"python: {statistics.median(rates):,.0f} samples/s (median of {args.rounds} rounds of "
          f"{args.seconds:g} s; batch {batch}, threads {args.threads})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
