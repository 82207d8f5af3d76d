"""Inference throughput of an exported model: onnxruntime against edgeff's NumPy/Numba forward.

    python tools/bench_infer.py RUN_DIR [RUN_DIR ...] [--seconds 2] [--rounds 1] [--json]

For each run, each head it has (linear, goodness, first; a conv run: goodness, every block's vote,
and last; an ffcl run: goodness, its one classifier) and batch size (1, 256): rows/s of the
NumPy/Numba forward (FFNet.predict, ConvNet.predict, FFCLNet.predict) and of onnxruntime on the
exported graph (float32, and int8 dynamic for the linear head and for conv nets), all measured in
this one run on random rows, beside the test error each head had when the run was trained (its
metrics.json: classifiers compared at the same error). With several runs, each row also holds
its speed over the first run's goodness head at the same batch size and engine
("over_first_goodness": e.g. an ffcl run with late labels against plain FF's C-pass classifier,
timed side by side on a shared machine).
--rounds N measures everything N times over, interleaved, and keeps each figure's best: on a
machine shared with other jobs, the round least disturbed.
A benchmark, not a test: nothing is asserted.
"""

import argparse
import json
import sys
import time

import numpy as np

from edgeff import export
from edgeff.convnet import ConvNet
from edgeff.errors import EdgeFFError
from edgeff.runs import load_metrics, load_run
from edgeff.sff_train import warm_up_conv
from edgeff.train import warm_up


def rows_per_second(fn, x, seconds):
    fn(x)  # warm: first-call allocations and compilation stay out of the timing
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        n += 1
    return n * len(x) / (time.perf_counter() - t0)


def run_cases(run_dir, rng):
    """(row, {engine: predict(x)}, x) for every head and batch size of one run (module docstring)."""
    net, cfg = load_run(run_dir)
    metrics = load_metrics(run_dir)          # a dict: load_metrics refuses anything else
    conv = isinstance(net, ConvNet)
    warm_up_conv() if conv else warm_up()
    cases = []
    for head in net.classifiers():
        model = export.build(net, head).SerializeToString()
        engines = {"numpy": lambda x, head=head: net.predict(x, 1.0, head),
                   "onnxruntime": (lambda s: lambda x: s.run(["label"], {"x": x}))(export.session(model))}
        if head == "linear" or conv:
            q = export.session(export.quantize(model, "dynamic"))
            engines["onnxruntime-int8"] = lambda x, q=q: q.run(["label"], {"x": x})
        for batch in (1, 256):
            x = rng.random((batch, net.in_features)).astype(np.float32)
            error = metrics.get(f"test_error_{head}")
            row = {"run": run_dir, "algo": cfg.algo, "head": head, "batch": batch,
                   "test_error": error if isinstance(error, (int, float)) else None}
            cases.append((row, engines, x))
    return cases


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    p.add_argument("--rounds", type=int, default=1, help="measure everything this many times, keep the best")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    try:
        cases = [case for run_dir in args.run_dirs for case in run_cases(run_dir, rng)]
    except EdgeFFError as exc:                      # a run directory that is not one, or is damaged
        sys.exit(f"bench_infer: {exc}")
    for _ in range(args.rounds):
        for row, engines, x in cases:
            for name, fn in engines.items():
                row[name] = max(row.get(name, 0.0), rows_per_second(fn, x, args.seconds))
    results = [row for row, _, _ in cases]
    for row in results:
        row["onnxruntime_over_numpy"] = row["onnxruntime"] / row["numpy"]
    if len(args.run_dirs) > 1:
        base = {r["batch"]: r for r in results if r["run"] == args.run_dirs[0] and r["head"] == "goodness"}
        for r in results:
            if r["batch"] in base:
                r["over_first_goodness"] = {e: r[e] / base[r["batch"]][e] for e in ("numpy", "onnxruntime")}
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        speeds = ", ".join(f"{k} {r[k]:,.0f} rows/s" for k in ("numpy", "onnxruntime", "onnxruntime-int8") if k in r)
        over = r.get("over_first_goodness")
        error = "" if r["test_error"] is None else f" (test error {100 * r['test_error']:.2f} %)"
        print(f"{r['run']} ({r['algo']}) {r['head']:8s}{error} batch {r['batch']:3d}: {speeds}; onnxruntime/numpy "
              f"{r['onnxruntime_over_numpy']:.2f}x" + (f"; over the first run's goodness: numpy {over['numpy']:.2f}x, "
                                                      f"onnxruntime {over['onnxruntime']:.2f}x" if over else ""))


if __name__ == "__main__":
    main()
