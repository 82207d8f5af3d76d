"""edgeff data: where each known data set is found, and downloading one."""

import sys

from ..data import KNOWN, find_dataset
from ..fetch import fetch_dataset
from ..progress import progress_enabled

HELP = "list known data sets and where they are found, or fetch one into the cache"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="known data sets and where each was found")
    ls.add_argument("--data-dir", help="look here first (as train and eval do)")
    f = sub.add_parser("fetch", help="download a data set's official files and check their sha256")
    f.add_argument("name", choices=sorted(KNOWN))
    f.add_argument("--data-dir", help="download into DIR/NAME instead of ~/.cache/edgeff/NAME")
    f.add_argument("--mirror", metavar="URL", help="base URL to download from instead of the official one")
    f.add_argument("--quiet", action="store_true", help="no progress line")


def run(args):
    if args.action == "list":
        for name in KNOWN:
            print(f"{name:14} {find_dataset(name, args.data_dir) or 'not found'}")
        return 0
    show = progress_enabled(args.quiet, False)

    def progress(done, total):
        if show:
            of = f"/{total / 1e6:.1f}" if total else ""
            sys.stderr.write(f"\rdownloading {args.name}: {done / 1e6:.1f}{of} MB\x1b[K")
            sys.stderr.flush()

    def report(line):
        if show:
            sys.stderr.write("\r\x1b[K")
        print(line, flush=True)

    dest = fetch_dataset(args.name, args.data_dir, args.mirror, progress, report=report)
    print(f"{args.name}: saved in {dest}")
    return 0
