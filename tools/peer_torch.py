"""edgeff against the PyTorch Forward-Forward design most people start from, same machine, same run.

    pip install torch==2.13.0          # CPU build; a tool dependency only
    python tools/peer_torch.py [--epochs 10] [--json]

The peer, written here in PyTorch after the widely used reference design: 784-500-500,
label overlaid on the first 10 pixels at the input's maximum, inputs standardised,
each layer's input length-normalised, goodness = mean of squares, threshold 2, Adam
lr 0.03 per layer, negatives = the labels of a random permutation, layers trained one
after another on the stored activations of the whole training set, goodness summed
over layers for each label to classify. Here at batch 1000 for --epochs per layer
on the first 50,000 Fashion-MNIST training images.

edgeff does the same work (same net, schedule, batch, epochs, threshold, goodness,
learning rate, random negatives, goodness classifier) with `edgeff train`. Each side
runs in its own process with 2 threads; the table gives training seconds (data
loading and compilation excluded), test error and peak resident memory, and the
ratios. Then time-to-accuracy: edgeff's default quick job, timed to the error the
peer's full recipe reaches (--target, 17.8 % for 1000 full-batch epochs per layer).
A benchmark, not a test: nothing is asserted.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

THREADS = 2


def peer(epochs, batch, n_train):
    """Train and test the PyTorch peer; returns its figures (run in a child process)."""
    import numpy as np
    import torch

    from edgeff.data import load_dataset

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    ds = load_dataset("fashion-mnist")
    t_load = time.perf_counter()

    def standardise(x):
        return (torch.from_numpy(x.astype(np.float32) * ds.scale) - 0.1307) / 0.3081

    x, y = standardise(ds.x_train[:n_train]), torch.from_numpy(ds.y_train[:n_train].astype(np.int64))
    x_test, y_test = standardise(ds.x_test), torch.from_numpy(ds.y_test.astype(np.int64))

    def with_label(x, labels):
        out = x.clone()
        out[:, :10] = 0.0
        out[torch.arange(len(x)), labels] = x.max()
        return out

    class Layer(torch.nn.Linear):
        def forward(self, x):
            x = x / (x.norm(2, 1, keepdim=True) + 1e-4)
            return torch.relu(x @ self.weight.T + self.bias)

        def fit(self, pos, neg):
            opt = torch.optim.Adam(self.parameters(), lr=0.03)
            for _ in range(epochs):
                for i in range(0, len(pos), batch):
                    g_pos = self(pos[i:i + batch]).pow(2).mean(1)
                    g_neg = self(neg[i:i + batch]).pow(2).mean(1)
                    loss = torch.log(1 + torch.exp(torch.cat([2.0 - g_pos, g_neg - 2.0]))).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                return self(pos), self(neg)

    layers = [Layer(784, 500), Layer(500, 500)]
    load_seconds = time.perf_counter() - t_load
    t0 = time.perf_counter()
    pos, neg = with_label(x, y), with_label(x, y[torch.randperm(len(y))])
    for layer in layers:
        pos, neg = layer.fit(pos, neg)
    train_seconds = time.perf_counter() - t0
    with torch.no_grad():
        scores = []
        for label in range(10):
            h, total = with_label(x_test, torch.full((len(x_test),), label)), 0
            for layer in layers:
                h = layer(h)
                total = total + h.pow(2).mean(1)
            scores.append(total)
        error = (torch.stack(scores, 1).argmax(1) != y_test).float().mean().item()
    return {"train_seconds": train_seconds, "test_error": error, "load_seconds": load_seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__}


def edgeff_train(*args):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS),
               OPENBLAS_NUM_THREADS=str(THREADS))
    r = subprocess.run([sys.executable, "-m", "edgeff.cli", "train", "--json", "--quiet", "--force", *args],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"edgeff train failed: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs per layer (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--train-samples", type=int, default=50000)
    p.add_argument("--target", type=float, default=0.178, help="test error for time-to-accuracy")
    p.add_argument("--out", default="/tmp/edgeff-peer", help="where edgeff's runs go")
    p.add_argument("--json", action="store_true")
    p.add_argument("--peer-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer_child:
        print(json.dumps(peer(args.epochs, args.batch_size, args.train_samples)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    r = subprocess.run([sys.executable, __file__, "--peer-child", "--epochs", str(args.epochs),
                        "--batch-size", str(args.batch_size), "--train-samples", str(args.train_samples)],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"the PyTorch peer failed (is torch installed? pip install torch==2.13.0): {r.stderr.strip()[-500:]}")
    torch_run = json.loads(r.stdout.strip().splitlines()[-1])
    same = edgeff_train("--model", "784-500-500", "--schedule", "layerwise", "--epochs", str(args.epochs),
                        "--batch-size", str(args.batch_size), "--lr", "0.03", "--constant-lr", "--threshold", "2",
                        "--goodness", "mean", "--negatives", "random", "--head-epochs", "0",
                        "--classifier", "goodness", "--limit-train", str(args.train_samples),
                        "--out", os.path.join(args.out, "same-work"))
    result = {"torch": torch_run, "edgeff": same,
              "speedup": torch_run["train_seconds"] / same["ff_seconds"],
              "rss_ratio": same["peak_rss_mib"] / torch_run["peak_rss_mib"]}
    reached = None
    for epochs in (1, 2, 3, 5, 10):   # edgeff's defaults, timed to the peer's best error
        quick = edgeff_train("--epochs", str(epochs), "--out", os.path.join(args.out, f"quick-{epochs}"))
        total = quick["train_seconds"] + quick["compile_seconds"]
        reached = {"epochs": epochs, "test_error": quick["test_error"], "seconds": total}
        if quick["test_error"] <= args.target:
            break
    result["time_to_target"] = dict(reached, target=args.target)
    if args.json:
        print(json.dumps(result))
        return
    print(f"same work (784-500-500 layerwise, batch {args.batch_size}, {args.epochs} epochs/layer, "
          f"{args.train_samples} samples, {THREADS} threads):")
    for name, run in (("pytorch", torch_run), ("edgeff", same)):
        print(f"  {name:8s} train {run['train_seconds']:7.1f} s   test error {run['test_error']:6.2%}   "
              f"peak RSS {run['peak_rss_mib']:7.0f} MiB")
    print(f"  edgeff is {result['speedup']:.2f}x faster with {result['rss_ratio']:.2f}x the peak RSS")
    t = result["time_to_target"]
    print(f"time to {args.target:.1%} test error, edgeff defaults: {t['seconds']:.1f} s "
          f"({t['epochs']} epochs, {t['test_error']:.2%}, compile included)")


if __name__ == "__main__":
    main()
