"""``gqemu bench iotests``: the wall time of a small fixed slice of QEMU
7.2's own qemu-iotests, run once on the real qemu-io/qemu-img (found on
PATH) and once on gqemu-io/gqemu-img, through the shared runner
(``../shared/tools/iotests.sh`` beside the project, or
``--iotests-runner PATH``).  Opt-in: it takes minutes, so it is not part
of the suites ``gqemu bench`` runs by default.

gqemu's programs are two small wrapper scripts in a temporary directory
(removed afterwards, with the bytecode they cache there, as an installed
package has its own): the runner needs executables that keep ``argv[0]``.
Both runs use one ``./check`` job (``IOTESTS_JOBS``, default 1 here), so
the two wall times are taken the same way, after an untimed run of one
test (the runner fetches QEMU's test sources on its first use).  Beside
each wall time, the CPU time (user + system) of everything under the
runner: a shared host stretches wall time, hardly CPU time.  A run that
does not pass every test is reported as not comparable, and the suite then
exits 1.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

from gqemu.bench.common import progress, progress_done, table, verdict
from gqemu.cli.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_RUNNER = os.path.join(os.path.dirname(ROOT), "shared", "tools", "iotests.sh")
TARGET = 3.0                 # issue 16: the slice in at most 3x real QEMU's wall time

# Fast tests of tests/iotests-slice.txt that gqemu passes (1-4 s each on real
# QEMU, one ./check job): read/write patterns, sizes, subclusters, lazy
# refcounts.  Fixed, so that runs can be compared.
SLICE: dict[str, list[str]] = {
    "raw": ["001", "003", "005", "009", "010"],
    "qcow2": ["005", "010", "027", "047", "069"],
}

WRAPPER = """#!%(python)s
import sys
sys.path.insert(0, %(root)r)
sys.pycache_prefix = %(pycache)r
sys.dont_write_bytecode = False
from gqemu.cli.%(module)s import main
sys.exit(main())
"""

_SUMMARY = re.compile(r"^iotests (\S+): (\d+)/(\d+) passed$")


def find_runner(path: Optional[str]) -> Optional[str]:
    """The runner to use: ``path`` (which must exist), else the default
    beside the project if it exists, else None."""
    if path:
        if not os.path.isfile(path):
            raise UsageError("--iotests-runner: %s: no such file" % path)
        return os.path.abspath(path)
    return DEFAULT_RUNNER if os.path.isfile(DEFAULT_RUNNER) else None


def write_wrappers(d: str) -> tuple[str, str]:
    """gqemu-io and gqemu-img as executables in ``d``."""
    progs = []
    for name, module in (("gqemu-io", "qemu_io"), ("gqemu-img", "qemu_img")):
        p = os.path.join(d, name)
        with open(p, "w", encoding="utf-8") as f:
            f.write(WRAPPER % {"python": sys.executable, "root": ROOT, "module": module,
                               "pycache": os.path.join(d, "pycache")})
        os.chmod(p, 0o755)
        progs.append(p)
    return progs[0], progs[1]


def run_slice(runner: str, fmt: str, io: str, img: str, tests: list[str]
              ) -> tuple[float, float, int, int, str]:
    """Wall time, CPU time (user + system of the runner and every process
    under it: ./check, the tests' shells, the programs), tests passed,
    tests run, and the output of one run.

    The output goes to a file, not a pipe: the runner's watchdog leaves a
    ``sleep 5`` behind that holds its stdout, and waiting for a pipe's end
    would round every time up to the next 5 s."""
    env = dict(os.environ)
    env.setdefault("IOTESTS_JOBS", "1")
    with tempfile.TemporaryFile() as log:
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(["bash", runner, fmt, io, img, *tests], stdout=log,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        dt = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        log.seek(0)
        out = log.read().decode("utf-8", "replace")
    lines = out.strip().splitlines()
    m = _SUMMARY.match(lines[-1].strip()) if lines else None
    passed, total = (int(m.group(2)), int(m.group(3))) if m else (0, len(tests))
    return dt, cpu, passed, total, out


def _warm_up(io: str, img: str, d: str) -> None:
    """Cache gqemu's bytecode before the timed run (as an install would)."""
    raw, qcow = os.path.join(d, "w.raw"), os.path.join(d, "w.qcow2")
    with open(raw, "wb") as f:
        f.truncate(1 << 16)
    for argv in ([img, "create", "-q", "-f", "qcow2", qcow, "1M"],
                 [img, "info", qcow], [io, "-c", "read 0 512", qcow],
                 [io, "-f", "raw", "-c", "write 0 512", raw]):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL)
    for p in (raw, qcow):
        os.unlink(p)


def run_bench(args: argparse.Namespace) -> int:
    runner = find_runner(getattr(args, "iotests_runner", None))
    if runner is None:
        print("\niotests: skipped: no runner (%s is missing; give --iotests-runner PATH)"
              % DEFAULT_RUNNER)
        return 0
    real_io, real_img = shutil.which("qemu-io"), shutil.which("qemu-img")
    if real_io is None or real_img is None:
        print("\niotests: skipped: the anchor needs QEMU's qemu-io and qemu-img on PATH")
        return 0
    d = tempfile.mkdtemp(prefix="gqemu-bench-iotests-")
    rows = []
    status = 0
    totals = [0.0, 0.0]
    cpu_totals = [0.0, 0.0]
    try:
        io, img = write_wrappers(d)
        _warm_up(io, img, d)
        # untimed: the runner fetches the test sources on its first use, and
        # the first run pays for a cold page cache
        progress("iotests: warm-up")
        fmt0 = next(iter(SLICE))
        run_slice(runner, fmt0, real_io, real_img, SLICE[fmt0][:1])
        for fmt, tests in SLICE.items():
            times = []
            cpus = []
            results = []
            for who, (p_io, p_img) in (("qemu", (real_io, real_img)), ("gqemu", (io, img))):
                progress("iotests: %s on %s (%d tests)" % (fmt, who, len(tests)))
                dt, cpu, passed, total, out = run_slice(runner, fmt, p_io, p_img, tests)
                times.append(dt)
                cpus.append(cpu)
                results.append("%d/%d" % (passed, total))
                if passed != total or total != len(tests):
                    status = 1
                    sys.stderr.write("iotests: %s on %s: %d/%d passed; last lines:\n%s\n"
                                     % (fmt, who, passed, total,
                                        "\n".join(out.strip().splitlines()[-15:])))
            totals[0] += times[0]
            totals[1] += times[1]
            cpu_totals[0] += cpus[0]
            cpu_totals[1] += cpus[1]
            ratio = times[1] / times[0] if times[0] else float("inf")
            ok = results[0] == results[1] == "%d/%d" % (len(tests), len(tests))
            rows.append(["%s %s" % (fmt, " ".join(tests)), "%.1f s" % times[1], results[1],
                         "%.1f s" % times[0], results[0], "%.2fx" % ratio,
                         _cpu_ratio(cpus[1], cpus[0]),
                         verdict(ratio, TARGET, higher_is_better=False) if ok
                         else "not comparable (not all passed)"])
    finally:
        progress_done()
        shutil.rmtree(d, ignore_errors=True)
    ratio = totals[1] / totals[0] if totals[0] else float("inf")
    rows.append(["all", "%.1f s" % totals[1], "", "%.1f s" % totals[0], "", "%.2fx" % ratio,
                 _cpu_ratio(cpu_totals[1], cpu_totals[0]),
                 verdict(ratio, TARGET, higher_is_better=False) if status == 0
                 else "not comparable"])
    table("iotests: QEMU 7.2's qemu-iotests through %s, one ./check job, wall time; "
          "ratio = gqemu / real qemu-io+qemu-img; CPU ratio = the same for user + "
          "system time of the whole run (the harness's shells included), steadier "
          "than wall on a loaded host" % runner,
          ["format tests", "gqemu", "passed", "qemu", "passed", "ratio", "CPU ratio",
           "target (wall)"], rows)
    return status


def _cpu_ratio(ours: float, real: float) -> str:
    """gqemu's CPU time / QEMU's, with both figures."""
    return "%.2fx (%.1f / %.1f s)" % (ours / real if real else float("inf"), ours, real)
