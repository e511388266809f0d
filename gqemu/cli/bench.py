"""``gqemu bench``: each suite prints its figures beside anchors measured in
the same process run, as ratios (never asserted in tests)."""
from __future__ import annotations

import argparse
import importlib

# suite -> module with run_bench(args) -> int
SUITES: dict[str, str] = {
    "coroutine": "gqemu.bench.coroutine",
    "threadpool": "gqemu.bench.threadpool",
    "block": "gqemu.bench.block",
    "qcow2": "gqemu.bench.qcow2",
    "ide": "gqemu.bench.ide",
    "replay": "gqemu.bench.replay",
    "stress": "gqemu.bench.stress",
    "kvm": "gqemu.bench.kvm",
    "virtio": "gqemu.bench.virtio",
    "startup": "gqemu.bench.startup",
    "iotests": "gqemu.bench.iotests",
}
# Run only when named: they take minutes.
OPT_IN = ("iotests",)


def default_suites() -> list[str]:
    """What ``gqemu bench`` with no SUITE runs."""
    return [n for n in SUITES if n not in OPT_IN]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help="one or more of: %s (default: all but %s)"
                   % (", ".join(SUITES), ", ".join(OPT_IN)))
    p.add_argument("--quick", action="store_true",
                   help="fewer iterations (for a smoke run)")
    p.add_argument("--trace-one", metavar="FILE",
                   help="write the Perfetto trace (JSON) of one 4 KiB read of the block "
                        "suite to FILE, then run the suites named, if any")
    p.add_argument("--iotests-runner", metavar="PATH",
                   help="iotests suite: QEMU's qemu-iotests runner (default: "
                        "../shared/tools/iotests.sh beside the project, if there)")


def run(args: argparse.Namespace) -> int:
    from gqemu.cli.main import UsageError
    names = args.suites or default_suites()
    for n in names:
        if n not in SUITES:
            raise UsageError("unknown suite '%s' (known: %s)" % (n, ", ".join(SUITES)))
    status = 0
    if args.trace_one:
        from gqemu.bench.trace_one import write_trace
        try:
            status = write_trace(args.trace_one)
        except OSError as e:
            raise UsageError("--trace-one: %s: %s" % (e.filename or args.trace_one,
                                                      e.strerror or e))
        if not args.suites:
            return status
    for n in names:
        try:
            mod = importlib.import_module(SUITES[n])
        except ImportError:
            if args.suites:
                raise UsageError("suite '%s' is not available" % n)
            continue
        status |= int(mod.run_bench(args) or 0)
    return status
