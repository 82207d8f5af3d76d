"""The `edgeff` command: a table of subcommands, one module each under edgeff/commands/.

Each command module defines HELP (one line), add_arguments(parser) and run(args) -> int.
A user mistake raises EdgeFFError: printed as one line on stderr, exit code 2, no traceback.
Anything else that escapes a command is a bug: one line asking for a report, exit 1.
"""

import argparse
import importlib
import os
import sys
import traceback

from .version import __version__
from .errors import EdgeFFError

COMMANDS = ("train", "learn", "federate", "eval", "export", "infer", "bundle", "keygen", "deploy", "rollback", "targets", "plan", "profile", "info", "data", "agent")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse's own errors print usage over several lines; keep to one line.
        raise EdgeFFError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser(only=None):
    """The parser of every command, or with `only` of that one alone: a command's module (and what it
    imports: ONNX for export, the deploy code...) is loaded only when that command runs or help lists it."""
    parser = _Parser(prog="edgeff", description="Forward-Forward training on small Linux devices.")
    parser.add_argument("--version", action="version", version=f"edgeff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in (only,) if only else COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(named if named in COMMANDS else None).parse_args(argv)
        if not getattr(args, "command", None):
            usage = build_parser().format_usage().strip()
            raise EdgeFFError(f"no command given; {usage} (see 'edgeff --help' for the commands)")
        return args._run(args)
    except EdgeFFError as exc:
        print(f"edgeff: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeff: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a safety net only: every known bad input is refused at its cause
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"edgeff: internal error: {type(exc).__name__}: {str(exc)[:200]} "
              f"(at {os.path.basename(where.filename)}:{where.lineno}); please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
