"""Reproducer files: everything needed to replay one failing schedule.

A reproducer is a JSON document::

    {"gqemu_stress_repro": 1, "seed": 7, "options": {...},
     "spec": {"programs": [...]}, "allowed": [0, 3],
     "invariant": "comutex_fifo", "message": "...",
     "fingerprint": "0x...", "steps": 41,
     "command": "gqemu stress --seed 7 ...", "trace": [...]}

``spec`` is the (shrunk) workload, ``allowed`` the perturbations the
scheduler applies (all others take their default), ``fingerprint`` the hash
of every scheduling decision of the failing run: a replay that reproduces
the failure exactly has the same one.  ``trace`` is what the workload
recorded (for IDE workloads, the guest's port I/O exits); ``errors`` the
lines the stack reported with error_report() during the run.
"""
from __future__ import annotations

import json
import os
from typing import Any

from gqemu.stress.engine import Options, RunResult, run_one

__all__ = ["REPRO_VERSION", "ReproError", "write_repro", "load_repro", "replay_repro"]

REPRO_VERSION = 1


class ReproError(Exception):
    """A reproducer file that cannot be used (one-line message)."""


def write_repro(path: str, res: RunResult, opts: Options, command: str) -> None:
    doc = {
        "gqemu_stress_repro": REPRO_VERSION,
        "seed": res.seed,
        "options": opts.to_dict(),
        "spec": res.spec,
        "allowed": sorted(res.applied),
        "invariant": res.invariant,
        "message": res.message,
        "where": res.where,
        "fingerprint": "0x%016x" % res.fingerprint,
        "steps": res.steps,
        "command": command,
        "trace": res.trace,
        "errors": res.errors[:100],
    }
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_repro(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ReproError("cannot read '%s': %s" % (path, e.strerror)) from None
    except ValueError as e:
        raise ReproError("'%s' is not a reproducer file: %s" % (path, e)) from None
    if not isinstance(doc, dict) or "gqemu_stress_repro" not in doc:
        raise ReproError("'%s' is not a gqemu stress reproducer" % path)
    if doc["gqemu_stress_repro"] != REPRO_VERSION:
        raise ReproError("'%s': unsupported reproducer version %r"
                         % (path, doc["gqemu_stress_repro"]))
    for key in ("seed", "options", "spec", "allowed", "invariant"):
        if key not in doc:
            raise ReproError("'%s': missing field '%s'" % (path, key))
    if (not isinstance(doc["seed"], int) or not isinstance(doc["spec"], dict)
            or not isinstance(doc["spec"].get("programs"), list)
            or not (doc["allowed"] is None or isinstance(doc["allowed"], list))):
        raise ReproError("'%s': malformed reproducer" % path)
    try:
        Options.from_dict(doc["options"])
    except (TypeError, ValueError) as e:
        raise ReproError("'%s': bad options: %s" % (path, e)) from None
    return doc


def replay_repro(doc: dict[str, Any]) -> tuple[RunResult, bool]:
    """Replay a loaded reproducer.  Returns the result and whether it
    reproduced exactly (same invariant, same decision fingerprint)."""
    opts = Options.from_dict(doc["options"])
    res = run_one(doc["seed"], opts, spec=doc["spec"], allowed=doc["allowed"])
    same = (not res.ok and res.invariant == doc["invariant"]
            and ("fingerprint" not in doc
                 or "0x%016x" % res.fingerprint == doc["fingerprint"]))
    return res, same
