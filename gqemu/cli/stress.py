"""``gqemu stress``: seeded, reproducible exploration of schedules.

    gqemu stress [--workload runtime|block|ide|virtio|all] [--seed S]
                 [--iterations N | --duration SECONDS] [--jobs N]
                 [--policy uniform|pct] [--depth N] [--requests N]
                 [--vcpus N] [--faults P] [--format raw|qcow2]
                 [--plant BUG]... [--out DIR] [--no-shrink] [--json]
                 [--scheduler tcp://HOST:PORT | --scheduler local:N]
    gqemu stress --repro FILE

Iteration ``i`` runs seed ``S + i``; ``--jobs N`` runs N worker processes
on disjoint iterations; ``--scheduler`` sends the campaign to a Dask
cluster instead (:mod:`gqemu.stress.cluster`).  The first failing seed is shrunk and written as a
reproducer file; the output names the seed, the violated invariant, the
command that reruns the seed, and the file.  Exit status: 0 when every
schedule passed, 1 when an invariant failed (or a reproducer reproduced),
2 on bad usage, 3 when a reproducer did not reproduce.

The stress engine needs ``GQEMU_STRESS=1`` when gqemu's coroutine module is
imported, so this command runs its work in child processes started with it
(unless this process already has it and ``--jobs`` is 1).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import subprocess
import sys
import time
from typing import Any

from gqemu.cli.main import UsageError
from gqemu.plant import NAMES as PLANTS

WORKLOAD_NAMES = ("runtime", "block", "ide", "virtio")
# Not "-m gqemu.cli.main": that runs main.py as __main__, a second copy whose
# UsageError is not the one subcommands raise.
_MAIN = "import sys; from gqemu.cli.main import main; sys.exit(main())"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="all",
                   help="runtime, block, ide, virtio, a comma list, or all (default)")
    p.add_argument("--seed", type=int, default=None,
                   help="first seed (default: random, printed)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iterations", type=int, default=None,
                   help="schedules to run (default 100)")
    g.add_argument("--duration", type=float, default=None,
                   help="run for this many seconds instead")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--policy", default="uniform", help="uniform or pct")
    p.add_argument("--pct-depth", type=int, default=3, metavar="D",
                   help="PCT: bug depth d (d - 1 priority change points)")
    p.add_argument("--depth", type=int, default=6,
                   help="coroutines / requests in flight")
    p.add_argument("--requests", type=int, default=24,
                   help="operations per schedule")
    p.add_argument("--vcpus", type=int, default=2, help="vCPUs (ide workload)")
    p.add_argument("--faults", type=float, default=0.0,
                   help="probability of an injected fault per event (0..1)")
    p.add_argument("--format", dest="fmt", default="raw", help="raw or qcow2")
    p.add_argument("--plant", action="append", default=[], metavar="BUG",
                   help="turn on a planted bug: " + ", ".join(PLANTS))
    p.add_argument("--out", default=".", help="directory for reproducer files")
    p.add_argument("--no-shrink", action="store_true",
                   help="report a failure without shrinking it")
    p.add_argument("--repro", metavar="FILE", help="replay a reproducer file")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run on a Dask cluster: tcp://HOST:PORT of a running "
                        "'dask scheduler', or local:N for N local worker processes "
                        "(needs: pip install 'gqemu[cluster]')")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object")


def _validate(args: argparse.Namespace) -> list[str]:
    if args.policy not in ("uniform", "pct"):
        raise UsageError("--policy must be uniform or pct, not '%s'" % args.policy)
    if args.fmt not in ("raw", "qcow2"):
        raise UsageError("--format must be raw or qcow2, not '%s'" % args.fmt)
    if args.workload == "all":
        workloads = list(WORKLOAD_NAMES)
    else:
        workloads = [w for w in args.workload.split(",") if w]
        for w in workloads:
            if w not in WORKLOAD_NAMES:
                raise UsageError("unknown workload '%s' (known: %s, all)"
                                 % (w, ", ".join(WORKLOAD_NAMES)))
    for name, v, lo in (("--jobs", args.jobs, 1), ("--depth", args.depth, 1),
                        ("--pct-depth", args.pct_depth, 1),
                        ("--requests", args.requests, 1), ("--vcpus", args.vcpus, 1)):
        if v < lo:
            raise UsageError("%s must be at least %d" % (name, lo))
    if args.iterations is not None and args.iterations < 0:
        raise UsageError("--iterations must not be negative")
    if args.duration is not None and not args.duration > 0:
        raise UsageError("--duration must be positive")
    if not 0.0 <= args.faults <= 1.0:
        raise UsageError("--faults is a probability between 0 and 1")
    if args.seed is not None and args.seed < 0:
        raise UsageError("--seed must not be negative")
    for b in args.plant:
        if b not in PLANTS:
            raise UsageError("unknown planted bug '%s' (known: %s)"
                             % (b, ", ".join(PLANTS)))
    if args.jobs > 64:
        raise UsageError("--jobs must be at most 64")
    if args.scheduler is not None:
        _check_scheduler(args)
    return _available(workloads, explicit=args.workload != "all")


def _check_scheduler(args: argparse.Namespace) -> None:
    addr = args.scheduler
    if addr.startswith("local:"):
        n = addr[6:]
        if not n.isdigit() or not 1 <= int(n) <= 64:
            raise UsageError("--scheduler local:N needs N between 1 and 64, not '%s'" % n)
    else:
        scheme, sep, rest = addr.partition("://")
        host, _c, port = rest.rpartition(":")
        if not sep or not scheme.isalnum() or not host or not port.isdigit():
            raise UsageError("--scheduler takes tcp://HOST:PORT or local:N, not '%s'" % addr)
    if args.jobs != 1:
        raise UsageError("--jobs and --scheduler do not go together "
                         "(the cluster's workers are the jobs)")
    if args.repro:
        raise UsageError("--repro replays on this machine; drop --scheduler")
    from gqemu.stress.cluster import ClusterError, import_distributed
    try:
        import_distributed()
    except ClusterError as e:
        raise UsageError(str(e)) from None


def _available(workloads: list[str], explicit: bool) -> list[str]:
    import importlib
    from gqemu.stress.engine import WORKLOADS
    ok = []
    for w in workloads:
        try:
            importlib.import_module(WORKLOADS[w])
        except ImportError as e:
            if explicit:
                raise UsageError("workload '%s' is not available (%s)" % (w, e))
            continue
        ok.append(w)
    if not ok:
        raise UsageError("no workload available")
    return ok


def _stress_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GQEMU_STRESS"] = "1"
    return env


def _run_repro(args: argparse.Namespace) -> int:
    from gqemu import coroutine
    from gqemu.stress.repro import ReproError, load_repro, replay_repro
    try:                            # a bad file is refused before any child starts
        doc = load_repro(args.repro)
    except ReproError as e:
        raise UsageError(str(e)) from None
    if not coroutine.STRESS:
        cmd = [sys.executable, "-c", _MAIN, "stress", "--repro", args.repro]
        return subprocess.call(cmd, env=_stress_env())
    res, same = replay_repro(doc)
    out = sys.stdout
    if res.ok:
        out.write("not reproduced: seed %d passed (expected %s)\n"
                  % (doc["seed"], doc["invariant"]))
        return 3
    out.write("seed %d: invariant %s violated: %s\n" % (res.seed, res.invariant, res.message))
    if res.where:
        out.write("  at %s\n" % res.where)
    if same:
        out.write("reproduced exactly (%d decisions, fingerprint 0x%016x)\n"
                  % (res.steps, res.fingerprint))
        return 1
    out.write("not reproduced exactly (expected %s%s)\n"
              % (doc["invariant"], ", fingerprint %s" % doc["fingerprint"]
                 if doc.get("fingerprint") else ""))
    return 3


class _Summary:
    def __init__(self) -> None:
        self.per_job: dict[int, dict[str, Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.cluster: dict[str, int] = {}     # workers, retried (--scheduler)

    def event(self, ev: dict[str, Any]) -> None:
        if ev["ev"] in ("tick", "done"):
            self.per_job[ev["job"]] = ev
        elif ev["ev"] == "failure":
            self.failures.append(ev)

    def total(self, key: str) -> int:
        return sum(int(e.get(key, 0)) for e in self.per_job.values())


def _spawn_workers(config: dict[str, Any], jobs: int, summary: _Summary,
                   bar: Any) -> int:
    procs = []
    sel = selectors.DefaultSelector()
    for k in range(jobs):
        cfg = dict(config, job=k, jobs=jobs)
        p = subprocess.Popen([sys.executable, "-m", "gqemu.stress.runner",
                              json.dumps(cfg)], stdout=subprocess.PIPE,
                             env=_stress_env(), text=True)
        procs.append(p)
        sel.register(p.stdout, selectors.EVENT_READ, p)  # type: ignore[arg-type]
    status = 0
    open_ = len(procs)
    try:
        while open_:
            for key, _ in sel.select(timeout=0.5):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    sel.unregister(key.fileobj)
                    open_ -= 1
                    continue
                ev = json.loads(line)
                summary.event(ev)
                if ev["ev"] == "failure":
                    status = 1
                    for q in procs:             # first failure ends the run
                        if q.poll() is None and q is not key.data:
                            q.terminate()
                bar.update(summary.total("schedules"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.wait()
            if p.returncode not in (0, 1, -15) and status == 0:
                status = 4
    return status


def run(args: argparse.Namespace) -> int:
    workloads = _validate(args)
    if args.repro:
        return _run_repro(args)
    from gqemu import coroutine
    from gqemu.cli.progress import Progress
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    iterations = args.iterations
    if iterations is None and args.duration is None:
        iterations = 100
    opts = {"workload": workloads[0], "policy": args.policy, "requests": args.requests,
            "depth": args.depth, "vcpus": args.vcpus, "faults": args.faults,
            "fmt": args.fmt, "plant": list(args.plant), "pct_depth": args.pct_depth}
    config = {"seed": seed, "iterations": iterations, "duration": args.duration,
              "workloads": workloads, "options": opts, "shrink": not args.no_shrink,
              "out": args.out}
    summary = _Summary()
    if args.scheduler is not None:
        status = _run_cluster(args, config, summary)
        _report(args, seed, workloads, summary)
        return status
    bar = Progress("stress", total=iterations, unit="")
    try:
        if coroutine.STRESS and args.jobs == 1:
            from gqemu.stress.runner import run_seeds

            def emit(ev: dict[str, Any]) -> None:
                summary.event(ev)
                bar.update(summary.total("schedules"))
            status = run_seeds(dict(config, job=0, jobs=1), emit)
        else:
            status = _spawn_workers(config, args.jobs, summary, bar)
    finally:
        bar.close()
    _report(args, seed, workloads, summary)
    return status


def _run_cluster(args: argparse.Namespace, config: dict[str, Any],
                 summary: _Summary) -> int:
    import signal
    from gqemu.cli.progress import Progress
    from gqemu.stress.cluster import Campaign, ClusterError
    camp = Campaign(args.scheduler, config, sys.stderr)
    try:
        try:
            camp.connect()
        except ClusterError as e:
            raise UsageError(str(e)) from None
        summary.t0 = time.monotonic()
        bar = Progress("stress", total=config["iterations"], unit="")
        try:
            status = camp.run(summary, bar)
        except ClusterError as e:
            bar.close()
            sys.stderr.write("gqemu stress: %s\n" % e)
            status = 4
        finally:
            bar.close()
        summary.cluster = {"workers": len(camp.used), "retried": camp.retried}
        return status
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C
        try:
            camp.close()
        finally:
            signal.signal(signal.SIGINT, old)


def _report(args: argparse.Namespace, seed: int, workloads: list[str],
            summary: _Summary) -> None:
    out = sys.stdout
    elapsed = max(time.monotonic() - summary.t0, 1e-9)
    busy = max((e.get("elapsed", 0.0) for e in summary.per_job.values()), default=0.0)
    from gqemu.stress.runner import TOTALS
    t = {k: summary.total(k) for k in TOTALS}
    if args.json:
        t["fingerprint"] = sum(int(e.get("fingerprint", 0))
                               for e in summary.per_job.values()) % (1 << 64)
        out.write(json.dumps({"seed": seed, "workloads": workloads, **t,
                              "elapsed": elapsed, "failures": summary.failures,
                              **summary.cluster}) + "\n")
        return
    for f in summary.failures:
        out.write("FAILED seed %d (workload %s): invariant %s violated: %s\n"
                  % (f["seed"], f["workload"], f["invariant"], f["message"]))
        if f.get("where"):
            out.write("  at %s\n" % f["where"])
        o, s = f["original"], f["shrunk"]
        out.write("  shrunk: %d -> %d programs, %d -> %d operations, "
                  "%d -> %d perturbations (%s)\n"
                  % (o["programs"], s["programs"], o["ops"], s["ops"],
                     o["perturbations"], s["perturbations"], str(f.get("shrunk_invariant"))
                     + (", on worker %s" % f["shrunk_on"] if f.get("shrunk_on") else "")))
        out.write("  reproducer: %s (%s)\n" % (f["repro"], "replays exactly"
                  if f.get("reproduced") else "DID NOT REPLAY EXACTLY"))
        out.write("  rerun the seed: %s\n" % f["command"])
        out.write("  replay the shrunk schedule: gqemu stress --repro %s\n" % f["repro"])
    rows = [
        ("seed", "%d" % seed),
        ("workloads", ",".join(workloads)),
        ("policy", args.policy),
        ("schedules", "%d" % t["schedules"]),
        ("requests", "%d" % t["requests"]),
        ("faults injected", "%d" % t["faults"]),
        ("invariant checks", "%d" % t["checks"]),
        ("scheduling decisions", "%d" % t["steps"]),
        ("perturbations", "%d" % t["perturbations"]),
        ("schedules/s", "%.1f" % (t["schedules"] / elapsed)),
        ("requests/s", "%.1f" % (t["requests"] / elapsed)),
        ("elapsed", "%.2f s (jobs %d, busiest %.2f s)" % (elapsed, args.jobs, busy)
         if not summary.cluster else "%.2f s (%d workers, %d batches retried)"
         % (elapsed, summary.cluster["workers"], summary.cluster["retried"])),
        ("result", "FAILED" if summary.failures else "passed"),
    ]
    w = max(len(r[0]) for r in rows)
    out.write("gqemu stress summary\n")
    for k, v in rows:
        out.write("  %s  %s\n" % (k.ljust(w), v))
