"""Running many seeds: one job's loop, its events, and the worker process.

:func:`run_seeds` runs the seeds of one job (iteration ``i`` of the whole
run uses seed ``base + i`` and belongs to job ``i % jobs``) until its
iterations or its time run out, or a seed fails.  A failure is shrunk,
written as a reproducer file, replayed from that file to confirm it, and
reported.  Progress goes out as events (dicts) through ``emit``; run as
``python -m gqemu.stress.runner CONFIG_JSON`` (with ``GQEMU_STRESS=1``), a
worker prints them as JSON lines for the parent ``gqemu stress``.

The batch API serves campaigns run elsewhere (:mod:`gqemu.stress.cluster`):
:func:`run_batch` runs iterations ``start .. start + count - 1`` and
returns one record per seed (:func:`seed_record`); :func:`fold` adds
records into the totals exactly as :func:`run_seeds` does, and
:func:`failure_event` shrinks and writes the reproducer of one iteration.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

from gqemu.stress.engine import Options, RunResult, run_one
from gqemu.stress.repro import load_repro, replay_repro, write_repro
from gqemu.stress.shrink import shrink

__all__ = ["run_seeds", "run_batch", "seed_record", "fold", "failure_event",
           "iteration_options", "repro_command", "main"]

TOTALS = ("schedules", "requests", "faults", "checks", "steps", "perturbations")


def repro_command(seed: int, opts: Options) -> str:
    """The ``gqemu stress`` command line that reruns exactly ``seed``."""
    parts = ["gqemu stress", "--workload", opts.workload, "--seed", str(seed),
             "--iterations 1", "--policy", opts.policy, "--pct-depth",
             str(opts.pct_depth), "--requests",
             str(opts.requests), "--depth", str(opts.depth), "--vcpus",
             str(opts.vcpus), "--faults", repr(opts.faults), "--format", opts.fmt]
    for p in opts.plant:
        parts += ["--plant", p]
    return " ".join(parts)


def _count_ops(spec: Any) -> tuple[int, int]:
    progs = spec.get("programs", []) if isinstance(spec, dict) else []
    return len(progs), sum(len(p) for p in progs)


def _failure(res: RunResult, opts: Options, config: dict[str, Any],
             job: int) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "ev": "failure", "job": job, "seed": res.seed, "workload": opts.workload,
        "invariant": res.invariant, "message": res.message, "where": res.where,
        "command": repro_command(res.seed, opts),
    }
    progs0, ops0 = _count_ops(res.spec)
    ev["original"] = {"programs": progs0, "ops": ops0,
                      "perturbations": len(res.applied)}
    final = res
    if config.get("shrink", True):
        final = shrink(res, opts, max_runs=config.get("shrink_runs", 300),
                       max_seconds=config.get("shrink_seconds", 20.0))
    progs, ops = _count_ops(final.spec)
    ev["shrunk"] = {"programs": progs, "ops": ops,
                    "perturbations": len(final.applied)}
    ev["shrunk_invariant"] = final.invariant
    ev["shrunk_message"] = final.message
    path = os.path.join(config.get("out") or ".",
                        "gqemu-stress-%s-%d.json" % (opts.workload, res.seed))
    write_repro(path, final, opts, ev["command"])
    ev["repro"] = path
    _res, same = replay_repro(load_repro(path))
    ev["reproduced"] = same
    return ev


def iteration_options(config: dict[str, Any], i: int) -> Options:
    """The options iteration ``i`` of a campaign runs with (workloads take
    turns)."""
    workloads = config.get("workloads") or ["runtime"]
    return Options.from_dict({**config.get("options", {}),
                              "workload": workloads[i % len(workloads)]})


def seed_record(i: int, res: RunResult) -> dict[str, Any]:
    """What the totals and the failure report need of one seed's run."""
    return {"i": i, "seed": res.seed, "ok": res.ok, "requests": res.requests,
            "faults": res.faults, "checks": res.checks, "steps": res.steps,
            "perturbations": len(res.applied), "fingerprint": res.fingerprint,
            "invariant": res.invariant, "elapsed": res.elapsed}


def new_totals() -> dict[str, int]:
    totals = dict.fromkeys(TOTALS, 0)
    totals["fingerprint"] = 0       # sum of the runs' decision hashes
    return totals


def fold(totals: dict[str, int], rec: dict[str, Any]) -> None:
    """Add one seed's record into ``totals`` (the same sums wherever the
    seed ran, so summaries agree by construction)."""
    totals["schedules"] += 1
    for k in ("requests", "faults", "checks", "steps", "perturbations"):
        totals[k] += rec[k]
    totals["fingerprint"] = (totals["fingerprint"] + rec["fingerprint"]) % (1 << 64)


def run_batch(config: dict[str, Any], start: int, count: int) -> list[dict[str, Any]]:
    """Run iterations ``start .. start + count - 1``, stopping after the
    first failing one; one :func:`seed_record` per iteration run."""
    out = []
    for i in range(start, start + count):
        res = run_one(config["seed"] + i, iteration_options(config, i))
        out.append(seed_record(i, res))
        if not res.ok:
            break
    return out


def failure_event(config: dict[str, Any], i: int, job: int = 0) -> dict[str, Any]:
    """Rerun the failing iteration ``i``, shrink it, write its reproducer
    into ``config["out"]``: the ``failure`` event."""
    opts = iteration_options(config, i)
    res = run_one(config["seed"] + i, opts)
    if res.ok:
        raise RuntimeError("seed %d passed when rerun (nondeterministic?)" % res.seed)
    return _failure(res, opts, config, job)


def run_seeds(config: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> int:
    """Run one job's seeds; returns 1 if a seed failed, else 0."""
    job, jobs = config.get("job", 0), config.get("jobs", 1)
    base = config["seed"]
    iterations = config.get("iterations")
    duration = config.get("duration")
    totals = new_totals()
    t0 = time.monotonic()
    last = t0
    status = 0
    i = job
    while True:
        if iterations is not None and i >= iterations:
            break
        if duration is not None and time.monotonic() - t0 >= duration:
            break
        opts = iteration_options(config, i)
        res = run_one(base + i, opts)
        fold(totals, seed_record(i, res))
        if not res.ok:
            emit(_failure(res, opts, config, job))
            status = 1
            break
        i += jobs
        now = time.monotonic()
        if now - last >= 0.2:
            last = now
            emit({"ev": "tick", "job": job, **totals, "elapsed": now - t0})
    emit({"ev": "done", "job": job, **totals, "elapsed": time.monotonic() - t0})
    return status


def main(argv: list[str] | None = None) -> int:
    """Worker entry: run the job described by the JSON in argv[1]."""
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(argv[0])
    out = sys.stdout

    def emit(ev: dict[str, Any]) -> None:
        out.write(json.dumps(ev) + "\n")
        out.flush()
    return run_seeds(config, emit)


if __name__ == "__main__":
    sys.exit(main())
