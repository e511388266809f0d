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

import errno
import json
import os
import stat
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


MAX_REPRO_BYTES = 256 << 20     # far above any reproducer gqemu writes


def load_repro(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)              # before open: opening a FIFO would block
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            raise ReproError("'%s' is not a reproducer file: not a regular file" % path)
        if st.st_size > MAX_REPRO_BYTES:
            raise ReproError("'%s' is not a reproducer file: larger than %d MiB"
                             % (path, MAX_REPRO_BYTES >> 20))
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ReproError("cannot read '%s': %s" % (path, e.strerror)) from None
    except UnicodeDecodeError:
        raise ReproError("'%s' is not a reproducer file: not UTF-8 text" % path) from None
    except json.JSONDecodeError as e:
        raise ReproError("'%s' is not a reproducer file: not JSON (line %d, column %d: %s)"
                         % (path, e.lineno, e.colno, e.msg)) from None
    except (ValueError, RecursionError):
        raise ReproError("'%s' is not a reproducer file: not JSON" % path) from None
    if not isinstance(doc, dict) or "gqemu_stress_repro" not in doc:
        raise ReproError("'%s' is not a gqemu stress reproducer" % path)
    if doc["gqemu_stress_repro"] != REPRO_VERSION:
        v = doc["gqemu_stress_repro"]
        raise ReproError("'%s': unsupported reproducer version %s (this gqemu reads %d)"
                         % (path, v if type(v) is int else json.dumps(v)[:40], REPRO_VERSION))
    for key in ("seed", "options", "spec", "allowed", "invariant"):
        if key not in doc:
            raise ReproError("'%s': missing field '%s'" % (path, key))
    if type(doc["seed"]) is not int or doc["seed"] < 0:
        raise ReproError("'%s': \"seed\" is not a non-negative integer" % path)
    if not (doc["allowed"] is None or (type(doc["allowed"]) is list
                                       and all(type(a) is int for a in doc["allowed"]))):
        raise ReproError("'%s': \"allowed\" is not a list of integers" % path)
    if type(doc["invariant"]) is not str:
        raise ReproError("'%s': \"invariant\" is not a string" % path)
    if "fingerprint" in doc and type(doc["fingerprint"]) is not str:
        raise ReproError("'%s': \"fingerprint\" is not a string" % path)
    opts = _check_options(doc["options"], path)
    _check_spec(doc["spec"], doc["seed"], opts, path)
    return doc


_OPTION_RANGES = {"requests": 1, "depth": 1, "vcpus": 1, "pct_depth": 1}


def _check_options(d: Any, path: str) -> Options:
    """The reproducer's options, each of the type and range ``gqemu stress``
    accepts on its command line.  Raises ReproError."""
    from gqemu.plant import NAMES as PLANTS
    from gqemu.stress.engine import WORKLOADS
    if type(d) is not dict:
        raise ReproError("'%s': \"options\" is not a JSON object" % path)
    defaults = Options()
    for k, v in d.items():
        if not hasattr(defaults, k):
            raise ReproError("'%s': unknown option '%s'" % (path, k))
        want = type(getattr(defaults, k))
        if want is tuple:
            good = type(v) is list and all(type(x) is str for x in v)
        elif want is float:
            good = type(v) in (int, float)
        else:
            good = type(v) is want
        if not good:
            raise ReproError("'%s': option '%s' has the wrong type" % (path, k))
    opts = Options.from_dict(d)
    bad = None
    if opts.workload not in WORKLOADS:
        bad = "workload"
    elif opts.policy not in ("uniform", "pct"):
        bad = "policy"
    elif opts.fmt not in ("raw", "qcow2"):
        bad = "fmt"
    elif not (0.0 <= opts.faults <= 1.0 and 0.0 <= opts.yield_prob <= 1.0):
        bad = "faults" if not 0.0 <= opts.faults <= 1.0 else "yield_prob"
    elif any(b not in PLANTS for b in opts.plant):
        bad = "plant"
    else:
        bad = next((k for k, lo in _OPTION_RANGES.items() if getattr(opts, k) < lo), None)
    if bad is not None:
        raise ReproError("'%s': bad option '%s': %r" % (path, bad, d.get(bad)))
    return opts


def _check_spec(spec: Any, seed: int, opts: Options, path: str) -> None:
    """A reproducer's spec is what its seed generates, cut down: the same
    settings, and each program's operations a subset of the generated ones
    (the shrinker only removes).  Anything else was not written by gqemu
    and could make the workload fail on the file instead of on the bug."""
    from gqemu.stress.engine import workload_class
    full = json.loads(json.dumps(workload_class(opts.workload).generate(seed, opts)))
    if type(spec) is not dict or type(spec.get("programs")) is not list:
        raise ReproError("'%s': \"spec\" is not a workload spec" % path)
    for k in set(spec) | set(full):
        if k not in spec or k not in full:
            raise ReproError("'%s': spec key '%s' is not in what seed %d generates"
                             % (path, k, seed))
        mine, theirs = spec[k], full[k]
        if type(theirs) is not list:
            ok = mine == theirs
        elif k == "programs":
            ops = [json.dumps(op) for prog in theirs for op in prog]
            ok = all(type(p) is list and all(json.dumps(op) in ops for op in p)
                     for p in mine)
        else:
            ok = type(mine) is list and all(x in theirs for x in mine)
        if not ok:
            raise ReproError("'%s': spec '%s' is not part of what seed %d generates with "
                             "these options (an edited file?)" % (path, k, seed))


def replay_repro(doc: dict[str, Any]) -> tuple[RunResult, bool]:
    """Replay a loaded reproducer.  Returns the result and whether it
    reproduced exactly (same invariant, same decision fingerprint)."""
    opts = Options.from_dict(doc["options"])
    res = run_one(doc["seed"], opts, spec=doc["spec"], allowed=doc["allowed"])
    same = (not res.ok and res.invariant == doc["invariant"]
            and ("fingerprint" not in doc
                 or "0x%016x" % res.fingerprint == doc["fingerprint"]))
    return res, same
