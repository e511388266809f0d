"""The ``gqemu`` command: a thin dispatcher over lazily imported subcommands.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``; nothing is imported until that subcommand is chosen, so
``gqemu --help`` and one-shot commands start fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from gqemu import __version__
from gqemu.cli.errors import UsageError
from gqemu.cli.tool_run import tool_run_exiting

__all__ = ["main", "UsageError", "SUBCOMMANDS", "error_exit"]

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("gqemu.cli.run", "run an emulator script on a simulated pc machine"),
    "mkdisk": ("gqemu.cli.mkdisk", "write the self-describing scratch disk to a file"),
    "replay": ("gqemu.cli.replay", "replay a recorded exit trace and compare every result"),
    "import-qemu-trace": ("gqemu.cli.import_trace",
                          "convert a QEMU log-backend ide_* trace into a gqemu trace"),
    "stress": ("gqemu.cli.stress", "seeded exploration of coroutine schedules"),
    "bench": ("gqemu.cli.bench", "measure the I/O path against its anchors"),
}


def error_exit(prog: str, msg: str, status: int = 2) -> int:
    sys.stderr.write("%s: %s\n" % (prog, msg))
    return status


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gqemu",
        description="An executable model of QEMU's storage I/O path.")
    parser.add_argument("--version", action="version",
                        version="gqemu %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, helptext) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == load:
            importlib.import_module(modname).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gqemu`` console script; with no ``argv`` it is
    the process's (``sys.exit(main())``)."""
    if argv is not None:
        return _main(argv)
    try:
        return _main(sys.argv[1:])
    finally:
        tool_run_exiting()


def _main(argv: list[str]) -> int:
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen not in SUBCOMMANDS:
        chosen = None
    try:
        parser = build_parser(chosen)
    except ImportError as e:                       # a subcommand not built yet
        return error_exit("gqemu", "%s: not available (%s)" % (chosen, e), 2)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    mod = importlib.import_module(SUBCOMMANDS[args.command][0])
    if isinstance(getattr(args, "trace", None), list):   # a --trace PATTERN option
        from gqemu.trace import trace_set_warning_location
        trace_set_warning_location("gqemu " + args.command, "--trace")
    try:
        return int(mod.run(args) or 0)
    except UsageError as e:
        return error_exit("gqemu " + args.command, str(e), 2)
    except KeyboardInterrupt:
        return error_exit("gqemu " + args.command, "interrupted", 130)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
