"""The runtime workload: the unplanted runtime passes, each planted
runtime bug is found within a bounded number of seeds, shrinks, and its
reproducer replays exactly."""
from __future__ import annotations

import pytest

from gqemu import plant
from gqemu.stress.engine import Options, run_one
from gqemu.stress.repro import load_repro, replay_repro, write_repro
from gqemu.stress.shrink import ddmin, shrink

SEEDS = range(40)


def first_failure(opts, seeds=SEEDS):
    for s in seeds:
        r = run_one(s, opts)
        if not r.ok:
            return r
    return None


@pytest.mark.parametrize("policy", ["uniform", "pct"])
def test_unplanted_runtime_passes(policy):
    opts = Options(workload="runtime", policy=policy)
    checks = 0
    for s in SEEDS:
        r = run_one(s, opts)
        assert r.ok, (s, r.invariant, r.message, r.where)
        checks += r.checks
    assert checks > 1000


def test_same_seed_same_run():
    opts = Options(workload="runtime")
    a, b = run_one(3, opts), run_one(3, opts)
    assert a.ok and (a.fingerprint, a.trace, a.steps) == (b.fingerprint, b.trace, b.steps)
    assert run_one(4, opts).fingerprint != a.fingerprint


@pytest.mark.allow_loop_leaks      # a run stops at the violation, programs parked
@pytest.mark.parametrize("bug,invariants", [
    ("comutex_barging", {"comutex_fifo"}),
    ("completion_twice", {"completion_once", "coroutine_misuse"}),
])
def test_planted_bug_found_shrunk_and_replayed(bug, invariants, tmp_path):
    opts = Options(workload="runtime", plant=(bug,))
    r = first_failure(opts)
    assert r is not None, "%s not found in %d seeds" % (bug, len(SEEDS))
    assert r.invariant in invariants, (r.invariant, r.message)
    assert not plant.comutex_barging and not plant.completion_twice   # cleared
    # the same seed passes without the planted bug
    assert run_one(r.seed, Options(workload="runtime")).ok
    small = shrink(r, opts, max_runs=150, max_seconds=10)
    assert not small.ok and small.invariant == r.invariant
    ops = lambda res: sum(len(p) for p in res.spec["programs"])   # noqa: E731
    assert (ops(small), len(small.applied)) <= (ops(r), len(r.applied))
    path = str(tmp_path / "repro.json")
    write_repro(path, small, opts, "gqemu stress ...")
    res, same = replay_repro(load_repro(path))
    assert same and res.fingerprint == small.fingerprint


def test_ddmin_finds_a_minimal_subset():
    calls = []

    def fails(sub):
        calls.append(sub)
        return {3, 11}.issubset(sub)
    assert ddmin(list(range(20)), fails) == [3, 11]
    assert ddmin(list(range(5)), lambda sub: True) == []


@pytest.mark.allow_loop_leaks
def test_pct_finds_barging_too():
    opts = Options(workload="runtime", policy="pct", plant=("comutex_barging",))
    r = first_failure(opts, range(100))
    assert r is not None and r.invariant == "comutex_fifo"
