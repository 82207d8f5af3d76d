"""edgeff deploy: push a run or a bundle to a device over SSH, a serial line or a mounted directory."""

import json
import sys

from ..deploy.push import push, rollback
from ..errors import UsageError
from ..memory import fmt_bytes
from ..progress import Progress, progress_enabled

HELP = "deploy a run or bundle to a device (ssh://, serial://, file://): install atomically, smoke-test, roll back"


def add_arguments(p):
    p.add_argument("source", nargs="?", metavar="SOURCE", help="a run directory (bundled on the fly) or a bundle")
    p.add_argument("--to", required=True, metavar="URL",
                   help="ssh://[user@]host[:port]/path, serial:///dev/ttyUSB0?baud=115200 or file:///path")
    p.add_argument("--target", metavar="NAME", help="profile to bundle a run for (default: detected on the device)")
    p.add_argument("--sign", metavar="KEY", help="sign the bundle made from a run with this private key "
                   "(from 'edgeff keygen'); a device that pinned a key accepts only bundles it signed")
    p.add_argument("--rollback", action="store_true", help="make the previous release current again")
    p.add_argument("--keep", type=int, default=3, help="releases kept on the device (default: %(default)s)")
    p.add_argument("--no-smoke", dest="smoke", action="store_false", help="skip the smoke test after install")
    p.add_argument("--dry-run", action="store_true", help="print what would be sent and run, change nothing")
    p.add_argument("--ssh-config", metavar="FILE", help="an ssh_config file (ssh -F) instead of ~/.ssh/config")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    if args.rollback:
        if args.source or args.sign:
            raise UsageError("--rollback takes no SOURCE and no --sign")
        result = rollback(args.to, args.ssh_config)
        print(json.dumps(result, allow_nan=False) if args.json else f"rolled back {args.to}: current release {result['current']} "
              f"(was {result['previous']})")
        return 0
    if not args.source:
        raise UsageError("give a run directory or a bundle to deploy, or --rollback")
    if args.keep < 1:
        raise UsageError(f"--keep must be at least 1, got {args.keep}")
    show = progress_enabled(args.quiet, args.json)
    step = (lambda msg: print(f"deploy: {msg}", file=sys.stderr, flush=True)) if show else (lambda msg: None)
    bar = (lambda total, desc: Progress(total, desc, unit="B")) if show else (lambda total, desc: None)
    report = push(args.source, args.to, args.target, args.keep, args.smoke, args.dry_run, args.ssh_config, step, bar,
                  sign=args.sign)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    elif args.dry_run:
        print(f"would send {len(report['would_send'])} files ({fmt_bytes(report['would_send_bytes'])}) of release "
              f"{report['release']} to {args.to}, then run: {'; '.join(report['would_run'])}")
        for p in report["would_send"]:
            print(f"  {p}")
    else:
        inst = report["install"]
        print(f"release {report['release']} ({report['target']}) is current on {args.to}; sent "
              f"{report['sent_files']} files ({fmt_bytes(report['sent_bytes'])} of {fmt_bytes(report['bundle_bytes'])}), "
              f"linked {report['linked_files']}; smoke test: {'passed' if inst.get('smoke') else 'skipped'}")
    return 0
