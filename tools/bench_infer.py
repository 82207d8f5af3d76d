"""Inference throughput of an exported model: onnxruntime against edgeff's NumPy/Numba forward.

    python tools/bench_infer.py RUN_DIR [--seconds 2] [--json]

For each head the run has (linear, goodness, first; a conv run: goodness, every block's vote, and last) and
batch size (1, 256): rows/s of the NumPy/Numba forward (FFNet.predict, ConvNet.predict)
and of onnxruntime on the exported graph (float32, and int8 dynamic for the linear head
and for conv nets), all measured in this one run on random rows. A benchmark, not a
test: nothing is asserted.
"""

import argparse
import json
import time

import numpy as np

from edgeff import export
from edgeff.convnet import ConvNet
from edgeff.runs import load_run
from edgeff.sff_train import warm_up_conv
from edgeff.train import warm_up


def rows_per_second(fn, x, seconds):
    fn(x)  # warm: first-call allocations and compilation stay out of the timing
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        n += 1
    return n * len(x) / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    net, _ = load_run(args.run_dir)
    conv = isinstance(net, ConvNet)
    warm_up_conv() if conv else warm_up()
    rng = np.random.default_rng(0)
    results = []
    for head in net.classifiers():
        model = export.build(net, head).SerializeToString()
        engines = {"numpy": lambda x, head=head: net.predict(x, 1.0, head),
                   "onnxruntime": (lambda s: lambda x: s.run(["label"], {"x": x}))(export.session(model))}
        if head == "linear" or conv:
            q = export.session(export.quantize(model, "dynamic"))
            engines["onnxruntime-int8"] = lambda x, q=q: q.run(["label"], {"x": x})
        for batch in (1, 256):
            x = rng.random((batch, net.in_features)).astype(np.float32)
            row = {"head": head, "batch": batch}
            row.update({name: rows_per_second(fn, x, args.seconds) for name, fn in engines.items()})
            row["onnxruntime_over_numpy"] = row["onnxruntime"] / row["numpy"]
            results.append(row)
            if not args.json:
                print(f"{head:8s} batch {batch:3d}: " + ", ".join(
                    f"{k} {v:,.0f} rows/s" for k, v in row.items() if k not in ("head", "batch", "onnxruntime_over_numpy"))
                    + f"; onnxruntime/numpy {row['onnxruntime_over_numpy']:.2f}x")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
