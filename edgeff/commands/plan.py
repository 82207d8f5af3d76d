"""edgeff plan: the training run's memory plan, before any training."""

import json

from ..plan_report import plan_report, print_plan
from . import train

HELP = "show the memory plan of a training run (takes train's options) and whether it fits --memory-budget"


def add_arguments(p):
    train.add_arguments(p)


def run(args):
    prepared = train.prepare(args)
    report = plan_report(*prepared.plan_args)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        print_plan(report)
    return 0
