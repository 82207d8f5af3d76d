"""edgeff agent serial: the device end of `edgeff deploy --to serial://...`.

Runs on the board, answers one host over a serial line (see edgeff.deploy.serial_link for
the protocol) and writes only inside --root. It runs nothing but the fixed actions ping,
install, rollback and status.
"""

import sys

HELP = "serve deploys from a workstation over a serial line (run this on the device)"


def add_arguments(p):
    kinds = p.add_subparsers(dest="link", metavar="LINK", required=True)
    s = kinds.add_parser("serial", help="answer on a serial port, e.g. /dev/ttyGS0 or /dev/ttyAMA0",
                         description="Answer `edgeff deploy --to serial://...` on a serial port.")
    s.add_argument("--port", required=True, help="serial device on this board, e.g. /dev/ttyGS0")
    s.add_argument("--root", required=True, help="directory deploys go into (created if missing)")
    s.add_argument("--baud", type=int, default=115200, help="line rate; must match the host's (default 115200)")


def run(args):
    from ..deploy.serial_agent import Agent

    agent = Agent(args.port, args.root, baud=args.baud)
    print(f"edgeff agent: serving {agent.root_given} on {args.port} at {args.baud} baud (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    try:
        agent.serve_forever()
    finally:
        agent.close()
    return 0
