"""What a dense net needs trained with backprop (Adam) against edgeff's layerwise FF, in one table.

    python tools/backprop_memory.py [--model 784-2000-2000-2000-2000] [--batch-size 256] [--steps 50] [--json]

Training memory (weights, optimiser state, gradients, activations): backprop's from the profiler's
model (edgeff/profile.py backprop_estimate: every layer's parameters, Adam's two moments and gradients
at once, every layer's input and pre-activation kept for the backward pass); FF's from edgeff's own
memory plan, layerwise, with both halves of the batch at once and in turn (--in-turn).
With PyTorch installed (pip install torch, a tool dependency only) it also trains the same net with
backprop and Adam for --steps batches of random data in a child process and gives that process's
peak resident memory, beside `edgeff train`'s for the same steps: what each needs under a cgroup limit.
A benchmark, not a test: nothing is asserted.
"""

import argparse
import dataclasses
import json
import subprocess
import sys

from edgeff.budget import layout_for
from edgeff.config import TrainConfig, parse_spec
from edgeff.memory import fmt_bytes, peak_live_bytes, plan_greedy
from edgeff.profile import backprop_estimate

TORCH_RUN = """
import resource, sys, time
import torch
sizes, batch, steps = [int(s) for s in sys.argv[1].split("-")], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
layers = []
for a, b in zip(sizes, sizes[1:]):
    layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
net = torch.nn.Sequential(*layers[:-1], torch.nn.Linear(sizes[-1], 10))
opt = torch.optim.Adam(net.parameters(), 1e-3)
x, y = torch.rand(batch, sizes[0]), torch.randint(0, 10, (batch,))
for _ in range(steps):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def ff_parts(cfg, in_width, classes):
    """{kind: bytes at its peak} of FF's plan, its arena, and the FF phases' activations alone."""
    layout = layout_for(cfg, in_width, classes)
    plan = plan_greedy(layout.buffers)
    parts = {kind: peak_live_bytes(plan.buffers, (kind,)) for kind in ("weights", "optimizer", "gradients", "activations")}
    ff_only = [b for b in layout.buffers if b.name.startswith("p")]
    return dict(parts, arena=plan.arena_bytes, ff_phase_activations=peak_live_bytes(ff_only, ("activations",)))


def torch_peak(model, batch, steps):
    try:
        import torch  # noqa: F401  (only to know whether the child can run)
    except ImportError:
        return None
    r = subprocess.run([sys.executable, "-c", TORCH_RUN, model, str(batch), str(steps)], capture_output=True,
                       text=True, check=True)
    return int(r.stdout.split()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="784-2000-2000-2000-2000")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    sizes = parse_spec(args.model)
    in_width = sizes[0] + 10                                   # the label inputs edgeff appends to 784 pixels
    cfg = TrainConfig(model=args.model, schedule="layerwise", batch_size=args.batch_size, head_epochs=0,
                      classifier="goodness")
    backprop = backprop_estimate([in_width] + list(sizes[1:]), args.batch_size, "adam")
    out = dict(model=args.model, batch_size=args.batch_size, backprop_adam=backprop,
               ff_layerwise=ff_parts(cfg, in_width, 10),
               ff_layerwise_in_turn=ff_parts(dataclasses.replace(cfg, in_turn=True), in_width, 10),
               torch_peak_rss_bytes=torch_peak(args.model, args.batch_size, args.steps))
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.model}, batch {args.batch_size}, Adam; training memory (runtime and data not included)")
    print(f"{'':24}{'weights':>12}{'optimiser':>12}{'gradients':>12}{'activations':>12}{'total':>12}")
    b = backprop
    print(f"{'backprop (model)':24}{fmt_bytes(b['weights']):>12}{fmt_bytes(b['optimizer']):>12}"
          f"{fmt_bytes(b['gradients']):>12}{fmt_bytes(b['activations']):>12}{fmt_bytes(b['total']):>12}")
    for name in ("ff_layerwise", "ff_layerwise_in_turn"):
        f = out[name]
        print(f"{name.replace('_', ' '):24}{fmt_bytes(f['weights']):>12}{fmt_bytes(f['optimizer']):>12}"
              f"{fmt_bytes(f['gradients']):>12}{fmt_bytes(f['ff_phase_activations']):>12}"
              f"{fmt_bytes(f['arena']):>12}  (total = the planned arena)")
    peak = out["torch_peak_rss_bytes"]
    print("PyTorch not installed: backprop's figures are the profiler's model only" if peak is None else
          f"PyTorch backprop + Adam, {args.steps} steps: peak RSS {fmt_bytes(peak)}")


if __name__ == "__main__":
    main()
