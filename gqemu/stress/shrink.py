"""Shrinking a failing run: fewer programs, fewer operations, fewer
perturbations, the same violated invariant.

Delta debugging (Zeller's ddmin) over, in turn, the workload's injected
faults, its programs, each program's operations, and the perturbation
numbers the scheduler applied.  Every candidate is a real replay of the seed with the smaller
spec or ``allowed`` set; it is kept only if it still violates the same
invariant.  Budgets (replays and seconds) bound the work; what comes back
always fails.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

from gqemu.stress.engine import Options, RunResult, run_one

__all__ = ["ddmin", "shrink"]


def ddmin(items: Sequence[Any], fails: Callable[[list[Any]], bool]) -> list[Any]:
    """A minimal sublist of ``items`` for which ``fails`` holds (``fails``
    must hold for ``items`` itself).  Tries the empty list first."""
    items = list(items)
    if not items or fails([]):
        return []
    n = 2
    while len(items) >= 2:
        chunk = -(-len(items) // n)
        parts = [items[i:i + chunk] for i in range(0, len(items), chunk)]
        for k, part in enumerate(parts):
            if len(parts) > 2 and fails(part):
                items, n = part, 2
                break
            rest = [x for j, p in enumerate(parts) if j != k for x in p]
            if fails(rest):
                items, n = rest, max(n - 1, 2)
                break
        else:
            if n >= len(items):
                break
            n = min(len(items), 2 * n)
    return items


class _Budget(Exception):
    pass


def shrink(res: RunResult, opts: Options, max_runs: int = 300,
           max_seconds: float = 20.0,
           log: Optional[Callable[[str], None]] = None) -> RunResult:
    """Shrink the failing ``res``; returns the smallest failing replay, whose
    ``spec`` and ``applied`` (the allowed perturbations) reproduce it."""
    seed, target = res.seed, res.invariant
    deadline = time.monotonic() + max_seconds
    runs = [0]
    best = [res]

    def attempt(spec: dict[str, Any], allowed: Optional[list[int]]) -> bool:
        if runs[0] >= max_runs or time.monotonic() > deadline:
            raise _Budget()
        runs[0] += 1
        r = run_one(seed, opts, spec=spec, allowed=allowed)
        if not r.ok and r.invariant == target:
            best[0] = r
            return True
        return False

    def size(spec: dict[str, Any]) -> int:
        return len(spec["programs"]) + sum(len(p) for p in spec["programs"])

    spec = res.spec
    try:
        for key in ("faults",):             # other list-valued parts first
            items = spec.get(key)
            if items:
                def with_items(ix: list[int], key: str = key,
                               items: list[Any] = items) -> dict[str, Any]:
                    return {**spec, key: [items[i] for i in ix]}
                keep = ddmin(range(len(items)), lambda ix: attempt(with_items(ix), None))
                spec = with_items(keep)
        for _round in range(3):             # programs, then operations, to a fixpoint
            before = size(spec)
            progs = spec["programs"]

            def with_progs(ix: list[int], progs: list[Any] = progs) -> dict[str, Any]:
                return {**spec, "programs": [progs[i] for i in ix]}
            keep = ddmin(range(len(progs)), lambda ix: attempt(with_progs(ix), None))
            spec = with_progs(keep)
            for p in range(len(spec["programs"])):
                ops = spec["programs"][p]

                def with_ops(ix: list[int], p: int = p, ops: list[Any] = ops) -> dict[str, Any]:
                    progs2 = list(spec["programs"])
                    progs2[p] = [ops[i] for i in ix]
                    return {**spec, "programs": progs2}
                keep = ddmin(range(len(ops)), lambda ix: attempt(with_ops(ix), None))
                spec = with_ops(keep)
            if any(not p for p in spec["programs"]):
                trimmed = {**spec, "programs": [p for p in spec["programs"] if p]}
                if attempt(trimmed, None):
                    spec = trimmed
            if size(spec) >= before:
                break
        if best[0].spec is not spec and not attempt(spec, None):
            spec = best[0].spec
        ddmin(best[0].applied, lambda sub: attempt(spec, sub))
    except _Budget:
        pass
    if log is not None:
        log("shrunk in %d replays" % runs[0])
    return best[0]
