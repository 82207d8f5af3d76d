"""edgeff rollback: on the device, make the previous release current again."""

import json

from ..deploy import install

HELP = "on the device: switch ROOT/current back to the previous release"


def add_arguments(p):
    p.add_argument("--root", required=True, help="the directory deploys go to")
    p.add_argument("--json", action="store_true")


def run(args):
    result = install.rollback(args.root)
    print(json.dumps(result, allow_nan=False) if args.json else f"current release {result['current']} (was {result['previous']})")
    return 0
