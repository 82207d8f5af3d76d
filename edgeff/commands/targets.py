"""edgeff targets: the device profiles bundles are built for."""

import json

from ..deploy.targets import PROFILES
from ..memory import fmt_bytes

HELP = "list the device profiles (Raspberry Pi, Jetson, generic): Python, wheels, RAM, budget, pitfalls"


def add_arguments(p):
    p.add_argument("--json", action="store_true")


def run(args):
    if args.json:
        print(json.dumps({name: t.as_dict() for name, t in PROFILES.items()}, allow_nan=False))
        return 0
    for t in PROFILES.values():
        print(f"{t.name:17s} {t.arch:8s} {fmt_bytes(t.ram_bytes):>9s} RAM, budget {fmt_bytes(t.default_budget_bytes):>9s}"
              f"  {t.description}")
        print(f"{'':17s} Python {t.python}; onnxruntime: {t.onnxruntime}; wheels: {t.abi} {t.platforms[0]} ... "
              f"{t.platforms[-1]}" if t.wheels else f"{'':17s} Python {t.python}; onnxruntime: {t.onnxruntime}; "
              "no wheelhouse")
        for pitfall in t.pitfalls:
            print(f"{'':17s} ! {pitfall}")
    return 0
