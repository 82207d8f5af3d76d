"""Training throughput against this machine's own float32 GEMM, measured in one run.

    python tools/bench.py [--batch-size 256] [--steps 20] [--json]

For each net: samples/s of FF training (simultaneous schedule, hard negatives),
achieved GFLOP/s counting the matrix products actually done (the first layer's
one product per data row, the other layers' forward of positives and
negatives, weight gradients), and
that as a fraction of numpy's matmul GFLOP/s on exactly the same shapes, timed
here in the same run. Also the kernels' first-run compile time (empty Numba
cache) and cached start time. A benchmark, not a test: nothing is asserted.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from edgeff.config import TrainConfig
from edgeff.data import Dataset
from edgeff.train import Trainer, warm_up

NETS = {"quick": TrainConfig().model, "hinton": "784-2000-2000-2000-2000"}


def random_dataset(n, d=784, c=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, d), dtype=np.uint8)
    y = rng.integers(0, c, n).astype(np.int32)
    return Dataset("random", x, y, x[:10], y[:10], c, 1 / 255, None, tuple(map(str, range(c))), "bench")


def gemm_shapes(cfg):
    """(m, k, n) of every matrix product one training batch does. The first layer runs once
    per data row (kernels/overlay.py: positives and negatives share x0 @ w0, and the hard
    negatives come from the same product); the other layers see 2B rows."""
    sizes, b = cfg.sizes, cfg.batch_size
    shapes = [(b, sizes[0], sizes[1]), (sizes[0], b, sizes[1])]
    for d_in, d_out in zip(sizes[1:-1], sizes[2:]):
        shapes += [(2 * b, d_in, d_out), (d_in, 2 * b, d_out)]  # forward, x.T @ dz
    return shapes


def numpy_gemm_seconds(shapes, repeats):
    rng = np.random.default_rng(0)
    total = 0.0
    for m, k, n in shapes:
        a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
        out = np.empty((m, n), np.float32)
        np.matmul(a, b, out=out)
        t0 = time.perf_counter()
        for _ in range(repeats):
            np.matmul(a, b, out=out)
        total += (time.perf_counter() - t0) / repeats
    return total


def bench_net(name, spec, batch_size, steps):
    cfg = TrainConfig(model=spec, batch_size=batch_size).validate()
    ds = random_dataset(batch_size * (steps + 2))
    trainer = Trainer(cfg, ds)
    layers = list(range(len(cfg.sizes) - 1))
    trainer._bind_phase(0, layers)
    losses = np.zeros(len(layers))

    def run(i):
        trainer.idx[:batch_size] = np.arange(i * batch_size, (i + 1) * batch_size)
        trainer._batch(batch_size, layers, losses)

    for i in range(2):  # warm the caches and BLAS threads
        run(i)
    t0 = time.perf_counter()
    for i in range(2, steps + 2):
        run(i)
    seconds = (time.perf_counter() - t0) / steps
    shapes = gemm_shapes(cfg)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    peak_seconds = numpy_gemm_seconds(shapes, max(3, steps // 2))
    return {
        "net": name, "model": spec, "batch_size": batch_size,
        "samples_per_s": batch_size / seconds,
        "gflops": flops / seconds / 1e9,
        "numpy_gflops": flops / peak_seconds / 1e9,
        "fraction_of_numpy": peak_seconds / seconds,
    }


def compile_times():
    """First-run compile seconds (empty cache) and cached start seconds, in fresh processes."""
    code = "from edgeff.train import warm_up; print(warm_up())"
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        run = lambda: float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                           capture_output=True, text=True).stdout.strip())
        return run(), run()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    warm_up()
    rows = [bench_net(name, spec, args.batch_size, args.steps) for name, spec in NETS.items()]
    cold, cached = compile_times()
    if args.json:
        print(json.dumps({"nets": rows, "compile_seconds": cold, "cached_start_seconds": cached}))
        return
    print(f"{'net':8} {'model':26} {'samples/s':>10} {'GFLOP/s':>8} {'numpy GFLOP/s':>14} {'of numpy':>9}")
    for r in rows:
        print(f"{r['net']:8} {r['model']:26} {r['samples_per_s']:10.0f} {r['gflops']:8.1f} "
              f"{r['numpy_gflops']:14.1f} {r['fraction_of_numpy']:9.1%}")
    print(f"kernels: first-run compile {cold:.1f} s, cached start {cached:.2f} s")


if __name__ == "__main__":
    main()
