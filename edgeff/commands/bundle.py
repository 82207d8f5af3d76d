"""edgeff bundle: a run as a self-contained bundle for a device (model, weights, wheelhouse), optionally signed."""

import json
import os
import sys

from ..deploy.bundle import build
from ..deploy.targets import PROFILES
from ..fileio import make_output_dir, remove_made_dirs, write_error
from ..memory import fmt_bytes
from ..progress import progress_enabled

HELP = "build a bundle of a run for a Raspberry Pi / Jetson target: ONNX model, weights, offline wheelhouse"


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by 'edgeff train --out'")
    p.add_argument("--target", required=True, metavar="NAME", help=f"one of: {', '.join(PROFILES)}")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a new directory, or OUT.tar.gz")
    p.add_argument("--sign", metavar="KEY", help="sign the bundle with this private key (from 'edgeff keygen')")
    p.add_argument("--python-version", metavar="X.Y",
                   help="the wheelhouse for this Python on the device, not the target's own (e.g. 3.12)")
    p.add_argument("--abi", metavar="cp3XY", help="pip's ABI tag for the wheelhouse (default cpXY of the Python)")
    p.add_argument("--no-wheels", dest="wheels", action="store_false",
                   help="no wheelhouse: the device installs edgeff's dependencies from its package index")
    p.add_argument("--extra", action="append", default=[], choices=["fed"],
                   help="also ship this extra's wheels: fed, Flower's, so the device can be a SuperNode "
                        "(flower-supernode in the release's venv)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run(args):
    show = progress_enabled(args.quiet, args.json)
    step = (lambda msg: print(f"bundle: {msg}", file=sys.stderr, flush=True)) if show else (lambda msg: None)
    made = make_output_dir(os.path.dirname(os.path.abspath(args.output)), "-o")   # before any work
    try:
        manifest = build(args.run_dir, args.target, args.output, args.wheels, step, sign=args.sign,
                         python=args.python_version, abi=args.abi, extras=args.extra)
    except BaseException as exc:
        remove_made_dirs(made)
        if isinstance(exc, OSError):   # a full disk: build's temp directory is gone with it
            raise write_error(args.output, exc, "nothing was written") from None
        raise
    if args.json:
        print(json.dumps(manifest, allow_nan=False))
        return 0
    total = sum(f["size"] for f in manifest["files"])
    wheels = sum(1 for f in manifest["files"] if f["path"].startswith("wheels/"))
    print(f"wrote {args.output}: release {manifest['release']} for {manifest['target']} ({manifest['arch']}, "
          f"Python {manifest['python']}), "
          f"{len(manifest['files'])} files, {fmt_bytes(total)}, {wheels} wheels")
    return 0
