"""``gqemu bench stress``: how fast ``gqemu stress`` explores, and what the
seeded scheduler costs over the normal one.

For each workload the same seeds (the same generated programs) run twice,
each in its own child process:

- *seeded*: ``GQEMU_STRESS=1`` (every coroutine_fn call a scheduling
  point), the StressScheduler installed: held workers released one at a
  time, permuted BHs and completions, virtual time, all invariants;
- *normal*: no GQEMU_STRESS, no scheduler: concurrent worker threads, BHs
  in their natural order, real time -- the anchor.

The figures are schedules/s and requests/s of the seeded runs, and the
ratio of their time per schedule to the normal runs' (target <= 2x).
The invariant checks run in both, so the ratio is the scheduler's cost;
the runtime workload's real-time sleeps are left out of both (the normal
scheduler would spend them asleep).

With Dask installed (``pip install 'gqemu[cluster]'``) a second table runs
one ``gqemu stress`` campaign (the same seeds) in one local process and on
a 2-worker ``--scheduler local:2`` cluster, and reports the schedules/s of
each (the cluster's start-up left out, shown apart), and that both
summaries agree.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from gqemu.bench.common import progress, progress_done, table

WORKLOADS = ("runtime", "block", "ide")
_CHILD = "import sys; from gqemu.bench.stress import child; sys.exit(child(sys.argv[1:]))"


def child(argv: list[str]) -> int:
    """Child process: run the seeds and print one JSON line of totals."""
    workload, mode, n = argv[0], argv[1], int(argv[2])
    from gqemu.stress.engine import Options, run_one
    from gqemu.stress.engine import workload_class
    opts = Options(workload=workload)
    cls = workload_class(workload)

    def spec(seed: int) -> dict[str, Any]:
        # No real-time sleeps: the normal scheduler would spend them waiting.
        sp = cls.generate(seed, opts)
        sp["programs"] = [[op for op in p if op[0] != "sleep"] for p in sp["programs"]]
        return sp
    run_one(10_000, opts, spec(10_000), install=(mode == "seeded"))      # warm up
    totals: dict[str, float] = {"schedules": 0, "requests": 0, "failures": 0, "decisions": 0}
    t0 = time.perf_counter()
    for seed in range(n):
        r = run_one(seed, opts, spec(seed), install=(mode == "seeded"))
        totals["schedules"] += 1
        totals["requests"] += r.requests
        totals["decisions"] += r.steps
        totals["failures"] += 0 if r.ok else 1
    totals["seconds"] = time.perf_counter() - t0
    sys.stdout.write(json.dumps(totals) + "\n")
    return 0


def _run_child(workload: str, mode: str, n: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("GQEMU_STRESS", None)
    if mode == "seeded":
        env["GQEMU_STRESS"] = "1"
    out = subprocess.run([sys.executable, "-c", _CHILD, workload, mode, str(n)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_bench(args: argparse.Namespace) -> int:
    n = {"runtime": 200, "block": 30, "ide": 30}
    if getattr(args, "quick", False):
        n = {k: max(5, v // 5) for k, v in n.items()}
    rows = []
    for w in WORKLOADS:
        best: dict[str, dict[str, Any]] = {}
        for rnd in range(1 if getattr(args, "quick", False) else 2):
            for mode in ("seeded", "normal"):
                progress("stress: %s %s round %d" % (w, mode, rnd + 1))
                r = _run_child(w, mode, n[w])
                if mode not in best or r["seconds"] < best[mode]["seconds"]:
                    best[mode] = r
        progress_done()
        s, b = best["seeded"], best["normal"]
        per_s = s["seconds"] / s["schedules"]
        per_b = b["seconds"] / b["schedules"]
        ratio = per_s / per_b if per_b else float("inf")
        rows.append([w, "%.1f" % (s["schedules"] / s["seconds"]),
                     "%.0f" % (s["requests"] / s["seconds"]),
                     "%.0f" % (s["decisions"] / s["schedules"]),
                     "%.2f ms" % (per_s * 1e3), "%.2f ms" % (per_b * 1e3),
                     "%.2fx" % ratio,
                     "%s (target <= 2.00x)" % ("met" if ratio <= 2.0 else "MISSED"),
                     "%d/%d" % (s["failures"], b["failures"])])
    table("gqemu bench stress (best of %d; seeded = GQEMU_STRESS=1 + StressScheduler,"
          " normal = no scheduler)" % (1 if getattr(args, "quick", False) else 2),
          ["workload", "schedules/s", "requests/s", "decisions/schedule",
           "seeded per schedule", "normal per schedule", "overhead", "target",
           "failures s/n"], rows)
    _cluster_bench(args)
    return 0


_MAIN = "import sys; from gqemu.cli.main import main; sys.exit(main())"


def _campaign(n: int, scheduler: str = "") -> tuple[dict[str, Any], float]:
    """One ``gqemu stress`` campaign of the runtime workload; its JSON
    summary and its wall time (start-up included)."""
    cmd = [sys.executable, "-c", _MAIN, "stress", "--workload", "runtime",
           "--seed", "0", "--iterations", str(n), "--json"]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    env = dict(os.environ, GQEMU_STRESS="1")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t0
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def _cluster_bench(args: argparse.Namespace, n: int = 0) -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        sys.stderr.write("gqemu bench stress: distributed is not installed; skipping "
                         "the cluster table (pip install 'gqemu[cluster]')\n")
        return
    n = n or (80 if getattr(args, "quick", False) else 400)
    progress("stress: %d schedules in one process" % n)
    local, lwall = _campaign(n)
    progress("stress: %d schedules on a 2-worker local cluster" % n)
    dask, dwall = _campaign(n, "local:2")
    progress_done()
    keys = ("schedules", "requests", "checks", "steps", "perturbations", "fingerprint")
    same = all(local[k] == dask[k] for k in keys)
    rows = []
    for name, j, wall in (("one process", local, lwall), ("local:2 (Dask)", dask, dwall)):
        rows.append([name, "%d" % j["schedules"], "%.2f s" % j["elapsed"],
                     "%.1f" % (j["schedules"] / j["elapsed"]),
                     "%.2f s" % (wall - j["elapsed"]),
                     "%.2fx" % ((j["schedules"] / j["elapsed"])
                                / (local["schedules"] / local["elapsed"]))])
    table("gqemu bench stress: a runtime campaign locally and on Dask (os.cpu_count() "
          "= %s; summaries %s)" % (os.cpu_count(), "identical" if same else "DIFFER"),
          ["where", "schedules", "campaign", "schedules/s", "start-up", "speed-up"],
          rows)
