"""``gqemu bench startup``: the wall time of one-shot commands, each a fresh
process, against a process that only imports what gqemu cannot avoid
(``import gevent.threadpool, greenlet, msgpack``), measured in this run.

Rows: ``gqemu-io -c 'read 0 512' img`` (raw, format given), ``gqemu-img
info`` of a qcow2 image, ``gqemu run`` of the seed example
(scripts/examples/read_lba0.py); for scale ``python -c pass``, ``python -S
-c pass`` (without the installation's .pth files, which every process here
runs at start) and QEMU's qemu-io doing the same read.  Each
command runs exactly as its console script would (``sys.exit(main())``);
``PYTHONPATH`` and the rest of the environment are inherited, except that
bytecode is always cached (in a temporary ``PYTHONPYCACHEPREFIX``, even
under ``PYTHONDONTWRITEBYTECODE``), as for an installed package.  Figures are
the best of N alternating rounds (the host is shared: the best round is
the one least disturbed by others); the ratio is command / bare imports,
for wall time and for CPU time (user + system, which a loaded host
disturbs less).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

from gqemu.bench.common import progress, progress_done, table, verdict

IMPORTS = "import gevent.threadpool, greenlet, msgpack"
SEED_EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "examples", "read_lba0.py")


def _entry(module: str, prog: str) -> str:
    return ("import sys; sys.argv[0] = %r; from %s import main; sys.exit(main())"
            % (prog, module))


def commands(d: str) -> list[tuple[str, list[str], Optional[float]]]:
    """name, argv, target ratio (<=) of every measured process."""
    raw = os.path.join(d, "s.raw")
    qcow = os.path.join(d, "s.qcow2")
    py = sys.executable
    rows: list[tuple[str, list[str], Optional[float]]] = [
        ("python -c pass", [py, "-c", "pass"], None),
        ("bare imports (anchor)", [py, "-c", IMPORTS], None),
        ("gqemu-io -c 'read 0 512'", [py, "-c", _entry("gqemu.cli.qemu_io", "gqemu-io"),
                                      "-f", "raw", "-c", "read 0 512", raw], 1.3),
        ("gqemu-img info (qcow2)", [py, "-c", _entry("gqemu.cli.qemu_img", "gqemu-img"),
                                    "info", qcow], 1.3),
    ]
    if os.path.exists(SEED_EXAMPLE):
        rows.append(("gqemu run read_lba0.py", [py, "-c", _entry("gqemu.cli.main", "gqemu"),
                                                "run", SEED_EXAMPLE], 1.6))
    # For scale: the interpreter without site (the .pth files of the
    # installation, run by every process above, are the difference to
    # "python -c pass"), and QEMU's own qemu-io, one process of an iotest.
    rows.append(("python -S -c pass", [py, "-S", "-c", "pass"], None))
    qemu_io = shutil.which("qemu-io")
    if qemu_io:
        rows.append(("qemu-io -c 'read 0 512' (QEMU)", [qemu_io, "-f", "raw", "-c",
                                                        "read 0 512", raw], None))
    return rows


def _make_images(d: str) -> None:
    with open(os.path.join(d, "s.raw"), "wb") as f:
        f.truncate(1 << 20)
    from gqemu.cli.qemu_img import main as img_main
    if img_main(["create", "-q", "-f", "qcow2", os.path.join(d, "s.qcow2"), "1M"]) != 0:
        raise RuntimeError("could not create the qcow2 image")


def _wall(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one process."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,
                       env=env)
    dt = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv[-3:], r.returncode,
                                                   r.stderr.decode()[-300:]))
    return dt, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def run_bench(args: argparse.Namespace) -> int:
    rounds = 5 if getattr(args, "quick", False) else 15
    d = tempfile.mkdtemp(prefix="gqemu-bench-", dir="/tmp")
    try:
        _make_images(d)
        cmds = commands(d)
        env = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(d, "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        best = [float("inf")] * len(cmds)
        cpu = [float("inf")] * len(cmds)
        for _ in range(2):                        # warm the page cache and pyc files
            for _name, argv, _t in cmds:
                _wall(argv, d, env)
        for r in range(rounds):
            progress("startup: round %d/%d" % (r + 1, rounds))
            for i, (_name, argv, _t) in enumerate(cmds):
                w, c = _wall(argv, d, env)
                best[i] = min(best[i], w)
                cpu[i] = min(cpu[i], c)
    finally:
        progress_done()
        shutil.rmtree(d, ignore_errors=True)
    rows = []
    for (name, _argv, target), t, c in zip(cmds, best, cpu):
        ratio = t / best[1]
        rows.append([name, "%.1f ms" % (t * 1e3), "%.2fx" % ratio, "%.1f ms" % (c * 1e3),
                     "%.2fx" % (c / cpu[1]),
                     verdict(ratio, target, higher_is_better=False) if target else ""])
    table("startup: one-shot processes, best of %d; ratio = command / bare imports "
          "(CPU = user + system, steadier than wall on a loaded host)" % rounds,
          ["process", "wall", "ratio", "CPU", "CPU ratio", "target (wall)"], rows)
    return 0
