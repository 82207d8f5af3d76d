"""Training throughput against this machine's own float32 GEMM, measured in one run.

    python tools/bench.py [--batch-size 256] [--steps 20] [--rounds 5] [--json]

For each net: samples/s of FF training (simultaneous schedule, hard negatives),
achieved GFLOP/s counting the matrix products actually done (the first layer's
one product per data row, the other layers' forward of positives and
negatives, weight gradients), and
that as a fraction of numpy's matmul GFLOP/s on exactly the same shapes, timed
here in the same run: --rounds interleaved rounds of --steps training steps
then the GEMMs, the median round's figures printed with the range of the
rounds' fractions (on a shared machine one timing window of each side swung
the fraction by 10 points between runs). Also the kernels' first-run compile time (empty Numba
cache) and cached start time.

Conv section (kernels/conv.py, batch 128, conv-small's three 3x3 convs and a depthwise
and a pointwise conv): GFLOP/s of forward, weight gradient and input gradient, each as
a fraction of numpy's matmul doing the same multiply-adds as one GEMM per group over
the whole batch ((C_out/G, C_in/G*KH*KW) @ (C_in/G*KH*KW, N*OH*OW) forward, its
transpose products for the gradients: "of same") and of numpy's GEMM peak (a 1024^3
product: "of peak"), all timed in the same run, the GEMMs and the convs in turn, best
of --conv-repeats. The convs are timed as a conv net trains them: BLAS kept to one
thread while each conv shares its batch among BLAS's thread count (after BLAS's idle
threads went to sleep). Compiling happens before any timing. A benchmark, not a test:
nothing is asserted.

--breakdown: where one training step's time goes, per net: numpy's BLAS (matmul), each
Numba kernel, the other numpy calls, and the rest (Python: wrappers, checks, the loop).
Each is timed by wrapping it in this process (about a microsecond a call on top), over
--steps batches; for the layerwise peer job (784-500-500, batch 1000) the second phase
both ways: streaming the frozen first layer and from its cache.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from edgeff.config import TrainConfig
from numba.core.registry import CPUDispatcher

from edgeff.kernels import batch, blas, conv, conv_direct, conv_gemm, conv_threads, dense, ff_loss, norm, optim, overlay, softmax
from edgeff import tuning
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


def bench_net(name, spec, batch_size, steps, rounds):
    """Training against numpy's GEMM on the same shapes, in `rounds` interleaved rounds: each times
    `steps` training steps, then the GEMMs, so a neighbour's burst on a shared machine lands in one
    round's pair instead of skewing one side. Reports the median round's ratio and the range."""
    cfg = TrainConfig(model=spec, batch_size=batch_size).validate()
    ds = random_dataset(batch_size * (steps + 2))
    trainer = Trainer(cfg, ds)
    layers = list(range(len(cfg.sizes) - 1))
    trainer._bind_phase(0)
    losses = np.zeros(len(layers))

    def run(i):
        trainer.idx[:batch_size] = np.arange(i * batch_size, (i + 1) * batch_size)
        trainer._batch(batch_size, layers, losses)

    for i in range(2):  # warm the caches and BLAS threads
        run(i)
    shapes = gemm_shapes(cfg)
    train, peak = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(2, steps + 2):
            run(i)
        train.append((time.perf_counter() - t0) / steps)
        peak.append(numpy_gemm_seconds(shapes, max(3, steps // 2)))
    ratios = np.array(peak) / np.array(train)
    mid = int(np.argsort(ratios)[len(ratios) // 2])     # the median round (rounds is odd)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    return {
        "net": name, "model": spec, "batch_size": batch_size, "rounds": rounds,
        "samples_per_s": batch_size / train[mid],
        "gflops": flops / train[mid] / 1e9,
        "numpy_gflops": flops / peak[mid] / 1e9,
        "fraction_of_numpy": float(ratios[mid]),
        "fraction_of_numpy_range": [float(ratios.min()), float(ratios.max())],
    }


class KernelTimer:
    """Seconds spent in numpy's matmul, in each Numba kernel the dense trainer calls and in
    its other numpy calls, measured by wrapping each (module attributes, this process only)."""

    NUMPY = ("take", "einsum", "add", "sqrt", "reciprocal", "multiply")

    def __init__(self):
        self.seconds, self.calls, self._saved = collections.Counter(), collections.Counter(), []

    def _wrap(self, owner, attr, label, fn=None):
        fn = fn or getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self.calls[label] += 1
        return timed

    def __enter__(self):
        targets = [(np, "matmul", "BLAS matmul")] + [(np, name, "numpy other") for name in self.NUMPY]
        for module in (batch, dense, ff_loss, norm, overlay, softmax):
            targets += [(module, name, name.lstrip("_")) for name, f in vars(module).items()
                        if isinstance(f, CPUDispatcher)]
        for owner, attr, label in targets:
            self._saved.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, self._wrap(owner, attr, label))
        for attr in ("_ADAM", "_SGD"):   # (serial, parallel) variants
            pair = getattr(optim, attr)
            self._saved.append((optim, attr, pair))
            name = attr.strip("_").lower()
            setattr(optim, attr, (self._wrap(None, None, f"{name} (serial)", pair[0]),
                                  self._wrap(None, None, f"{name} (parallel)", pair[1])))
        return self

    def __exit__(self, *exc):
        for owner, attr, fn in reversed(self._saved):
            setattr(owner, attr, fn)


def breakdown(name, cfg, phase, steps, cache=None):
    """{label: ms per step} of `steps` batches of cfg's phase `phase`, and the total."""
    ds = random_dataset(cfg.batch_size * (steps + 2))
    trainer = Trainer(cfg, ds, cache=cache)
    trainer._bind_phase(phase)
    layers, b = trainer.phases()[phase], cfg.batch_size
    losses = np.zeros(len(layers))

    def run(i):
        trainer.idx[:b] = np.arange(i * b, (i + 1) * b)
        trainer._batch(b, layers, losses)

    for i in range(2):   # compile, fill the cache, warm BLAS threads: before any wrapper exists
        run(i)
    with KernelTimer() as timer:
        t0 = time.perf_counter()
        for i in range(2, steps + 2):
            run(i)
        total = time.perf_counter() - t0
    parts = {label: 1e3 * s / steps for label, s in timer.seconds.most_common()}
    parts["Python (the rest)"] = 1e3 * total / steps - sum(parts.values())
    return {"name": name, "model": cfg.model, "phase": phase, "ms_per_step": 1e3 * total / steps, "parts": parts}


def breakdowns(batch_size, steps):
    peer = TrainConfig(model="784-500-500", schedule="layerwise", batch_size=1000, negatives="random",
                       goodness="mean", threshold=2, lr=0.03, head_epochs=0, classifier="goodness").validate()
    out = [breakdown(name, TrainConfig(model=spec, batch_size=batch_size).validate(), 0, steps)
           for name, spec in NETS.items()]
    out.append(breakdown("peer, layer 2, streamed", peer, 1, steps))
    out.append(breakdown("peer, layer 2, cached", peer, 1, steps, cache="float32"))
    return out


# name: (C_in, C_out, H = W, K = KH = KW, stride, pad, groups)
CONVS = {
    "3x3 1->32 @28": (1, 32, 28, 3, 1, 1, 1),
    "3x3 32->64 @14": (32, 64, 14, 3, 1, 1, 1),
    "3x3 64->128 @7": (64, 128, 7, 3, 1, 1, 1),
    "dw3x3 64 @14": (64, 64, 14, 3, 1, 1, 64),
    "1x1 64->128 @14": (64, 128, 14, 1, 1, 0, 1),
}


CONV_OPS = ("forward", "wgrad", "igrad")
BLAS_SPIN_SECONDS = 0.2   # OpenBLAS's idle threads spin about 0.1 s after a product before they sleep


def best_seconds(fns, repeats):
    """Best time of each function, calling them in turn so load from elsewhere hits all alike."""
    for f in fns:
        f()  # compile, warm caches and BLAS threads
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def as_conv_nets_train(fns, repeats=1):
    """Best seconds of each conv call timed as a conv net trains them (sff_train.ConvTrainer.fit):
    spread over BLAS's threads while BLAS keeps to one (conv_threads.spread_over), after BLAS's idle
    threads, which spin for about 0.1 s after a product on several, have gone to sleep."""
    time.sleep(BLAS_SPIN_SECONDS)
    with conv_threads.spread_over(blas.blas_threads() or 1):
        return best_seconds(fns, repeats)


def conv_arrays(shape, n):
    """Random x, w, dy and an empty y for one conv of CONVS with batch n."""
    c_in, c_out, hw, k, stride, pad, groups = shape
    rng = np.random.default_rng(0)
    oh, ow = conv.conv2d_output_size(hw, hw, k, k, stride, pad)
    x = rng.standard_normal((n, c_in, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in // groups, k, k), dtype=np.float32)
    dy = rng.standard_normal((n, c_out, oh, ow), dtype=np.float32)
    return x, w, dy, np.empty_like(dy)


def bench_conv(name, shape, n, repeats):
    c_in, c_out, _, k, stride, pad, groups = shape
    x, w, dy, y = conv_arrays(shape, n)
    b, gw, gb = np.zeros(c_out, np.float32), np.empty_like(w), np.empty(c_out, np.float32)
    scratch = np.empty(conv.conv2d_scratch_size(x.shape, w.shape, stride, pad, groups), np.float32)
    # the same multiply-adds as one GEMM per group: (c_out/G, kk) @ (kk, cols), and x.T @ dy's shape
    kk, cols, rng = c_in // groups * k * k, n * dy.shape[2] * dy.shape[3], np.random.default_rng(1)
    wg, colsg = rng.random((groups, c_out // groups, kk), np.float32), rng.random((groups, kk, cols), np.float32)
    dyg, yg, gwg = rng.random((groups, c_out // groups, cols), np.float32), np.empty((groups, c_out // groups, cols), np.float32), np.empty_like(wg)
    dx, dcolsg = np.empty_like(x), np.empty_like(colsg)
    sq = rng.random((1024, 1024), np.float32)
    sq_out = np.empty_like(sq)
    gemms = [lambda: np.matmul(wg, colsg, out=yg), lambda: np.matmul(dyg, colsg.transpose(0, 2, 1), out=gwg),
             lambda: np.matmul(wg.transpose(0, 2, 1), dyg, out=dcolsg), lambda: np.matmul(sq, sq, out=sq_out)]
    convs = [lambda: conv.conv2d_forward(x, w, b, stride, pad, groups, y, scratch),
             lambda: conv.conv2d_weight_grad(x, dy, stride, pad, groups, gw, gb, scratch),
             lambda: conv.conv2d_input_grad(dy, w, stride, pad, groups, dx, scratch)]
    best_gemm, best_conv = [float("inf")] * len(gemms), [float("inf")] * len(convs)
    for _ in range(repeats):   # the GEMMs and the convs in turn, so load from elsewhere hits both alike
        best_gemm = np.minimum(best_gemm, best_seconds(gemms, 1))
        best_conv = np.minimum(best_conv, as_conv_nets_train(convs))
    *gemm_seconds, peak = best_gemm
    gflop, peak_gflops = 2 * c_out * kk * cols / 1e9, 2 * 1024**3 / peak / 1e9
    row = {"conv": name, "method": conv.conv2d_method(c_in, groups), "batch_size": n, "gemm_peak_gflops": peak_gflops}
    for op, conv_s, gemm_s in zip(CONV_OPS, best_conv, gemm_seconds):
        row.update({f"{op}_gflops": gflop / conv_s, f"{op}_of_same_gemm": gemm_s / conv_s,
                    f"{op}_of_peak": gflop / conv_s / peak_gflops})
    return row


def bench_conv_methods(name, shape, n, repeats):
    """ms per call of both methods of kernels/conv.py on one conv: what chose conv2d_method."""
    _, _, _, _, stride, pad, groups = shape
    x, w, dy, y = conv_arrays(shape, n)
    gw, dx = np.empty_like(w), np.empty_like(x)
    scratch = np.empty(conv_gemm.scratch_size(x.shape, w.shape, stride, pad, groups, blas.cores()),
                       np.float32)
    seconds = as_conv_nets_train([
        lambda: conv_gemm.forward(x, w, None, stride, pad, groups, y, scratch),
        lambda: conv_direct.forward(x, w, conv._NO_BIAS, stride, pad, y),
        lambda: conv_gemm.weight_grad(x, dy, stride, pad, groups, gw, scratch),
        lambda: conv_direct.weight_grad(x, dy, stride, pad, gw),
        lambda: conv_gemm.input_grad(dy, w, stride, pad, groups, dx, scratch),
        lambda: conv_direct.input_grad(dy, w, stride, pad, dx)], repeats)
    ops = [(op, method) for op in CONV_OPS for method in ("gemm", "direct")]
    return {"conv": name, **{f"{op}_{method}_ms": 1e3 * t for (op, method), t in zip(ops, seconds)}}


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
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of training steps and GEMMs, "
                   "odd (default: 5); the median round is reported")
    p.add_argument("--conv-batch-size", type=int, default=128)
    p.add_argument("--conv-repeats", type=int, default=10)
    p.add_argument("--conv-methods", action="store_true", help="only time both conv methods on the conv shapes")
    p.add_argument("--breakdown", action="store_true", help="only where a training step's time goes, per kernel")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.rounds < 1 or args.rounds % 2 == 0:
        p.error("--rounds must be odd and at least 1 (the median round is reported)")
    tuning.apply(tuning.tuned()[0])      # this machine's thread use and thresholds, as training has them
    if args.breakdown:
        warm_up()
        rows = breakdowns(args.batch_size, args.steps)
        if args.json:
            print(json.dumps(rows))
            return
        for r in rows:
            print(f"{r['name']} ({r['model']}, phase {r['phase'] + 1}): {r['ms_per_step']:.2f} ms per step")
            for label, ms in r["parts"].items():
                print(f"  {label:24} {ms:8.2f} ms {ms / r['ms_per_step']:6.1%}")
        return
    if args.conv_methods:
        for name, shape in CONVS.items():
            r = bench_conv_methods(name, shape, args.conv_batch_size, args.conv_repeats)
            print(f"{name:18} ms, gemm / direct:" + "".join(
                f"  {op} {r[op + '_gemm_ms']:.2f} / {r[op + '_direct_ms']:.2f}" for op in CONV_OPS))
        return
    warm_up()
    rows = [bench_net(name, spec, args.batch_size, args.steps, args.rounds) for name, spec in NETS.items()]
    convs = [bench_conv(name, shape, args.conv_batch_size, args.conv_repeats) for name, shape in CONVS.items()]
    cold, cached = compile_times()
    if args.json:
        print(json.dumps({"nets": rows, "convs": convs, "compile_seconds": cold, "cached_start_seconds": cached}))
        return
    print(f"{'net':8} {'model':26} {'samples/s':>10} {'GFLOP/s':>8} {'numpy GFLOP/s':>14} {'of numpy':>9}"
          f"  (median of {args.rounds} rounds; range)")
    for r in rows:
        low, high = r["fraction_of_numpy_range"]
        print(f"{r['net']:8} {r['model']:26} {r['samples_per_s']:10.0f} {r['gflops']:8.1f} "
              f"{r['numpy_gflops']:14.1f} {r['fraction_of_numpy']:9.1%}  ({low:.1%}-{high:.1%})")
    print(f"\n{'conv (N=' + str(args.conv_batch_size) + ')':18} {'method':6} {'GEMM peak':>9}"
          + "".join(f" {op + ' GFLOP/s':>15} {'of same':>8} {'of peak':>8}" for op in CONV_OPS))
    for r in convs:
        print(f"{r['conv']:18} {r['method']:6} {r['gemm_peak_gflops']:9.1f}" + "".join(
            f" {r[op + '_gflops']:15.1f} {r[op + '_of_same_gemm']:8.1%} {r[op + '_of_peak']:8.1%}" for op in CONV_OPS))
    print(f"kernels: first-run compile {cold:.1f} s, cached start {cached:.2f} s")


if __name__ == "__main__":
    main()
