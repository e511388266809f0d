"""The IDE workload: several vCPUs stepping ATA programs port by port; the
unplanted hardware passes, and a reset that keeps an in-flight completion
(CVE-2023-5088's class) is caught."""
from __future__ import annotations

import sys

import pytest

import gqemu.hw.dma as hw_dma
import gqemu.stress.wl_ide  # noqa: F401  (imports the IDE modules)
from gqemu.stress.engine import Options, run_one
from gqemu.stress.repro import load_repro, replay_repro, write_repro
from gqemu.stress.shrink import shrink


def orphan_nothing(monkeypatch):
    """Every hw module's dma_blk_orphan becomes a no-op."""
    real = hw_dma.dma_blk_orphan
    for name, mod in list(sys.modules.items()):
        if name.startswith("gqemu.hw") and getattr(mod, "dma_blk_orphan", None) is real:
            monkeypatch.setattr(mod, "dma_blk_orphan", lambda acb: None)


@pytest.mark.parametrize("fmt,vcpus,faults,seeds", [
    ("raw", 2, 0.0, 16), ("raw", 3, 0.0, 6), ("raw", 2, 0.3, 10), ("qcow2", 2, 0.0, 4),
    ("qcow2", 2, 0.3, 3)])
def test_unplanted_ide_passes(fmt, vcpus, faults, seeds):
    opts = Options(workload="ide", fmt=fmt, vcpus=vcpus, faults=faults)
    exits = injected = 0
    for s in range(seeds):
        r = run_one(s, opts)
        assert r.ok, (s, r.invariant, r.message, r.where)
        exits += len(r.trace)
        injected += r.faults
        assert r.requests == opts.requests
    assert exits > 100 * seeds
    assert (injected > 0) == (faults > 0)


def test_same_seed_same_exits():
    a = run_one(5, Options(workload="ide"))
    b = run_one(5, Options(workload="ide"))
    assert a.ok and a.trace == b.trace and a.fingerprint == b.fingerprint
    assert run_one(6, Options(workload="ide")).trace != a.trace


def _found(opts, tmp_path, seeds=range(30)):
    for s in seeds:
        r = run_one(s, opts)
        if not r.ok:
            break
    else:
        pytest.fail("stale completion after reset not found in %d seeds" % len(seeds))
    assert r.invariant in ("reset_stale_dma", "ide_irq", "ide_registers", "shadow_read")
    small = shrink(r, opts, max_runs=60, max_seconds=15)
    assert not small.ok and small.invariant == r.invariant
    assert sum(map(len, small.spec["programs"])) <= sum(map(len, r.spec["programs"]))
    path = str(tmp_path / "ide.json")
    write_repro(path, small, opts, "")
    doc = load_repro(path)
    assert doc["trace"] and all(t[1] in ("i", "o", "ins", "outs", "reset")
                                for t in doc["trace"])
    again, same = replay_repro(doc)
    assert same, (again.invariant, again.message)
    return r


def test_reset_keeping_its_completion_is_caught(monkeypatch, tmp_path):
    """The detector: a reset that does not detach the DMA in flight (what
    the planted switch does), by stubbing dma_blk_orphan."""
    orphan_nothing(monkeypatch)
    r = _found(Options(workload="ide"), tmp_path)
    monkeypatch.undo()
    assert run_one(r.seed, Options(workload="ide")).ok


def test_planted_reset_keeps_completion(tmp_path):
    r = _found(Options(workload="ide", plant=("reset_keeps_completion",)), tmp_path)
    assert run_one(r.seed, Options(workload="ide")).ok
