"""The block workload: the unplanted block layer passes on raw and qcow2
(with and without injected faults); an unserialised read-modify-write is
caught by the shadow model and shrinks to a replayable reproducer."""
from __future__ import annotations

import sys

import pytest

from gqemu.block import io as block_io
from gqemu.stress.engine import Options, run_one
from gqemu.stress.repro import load_repro, replay_repro, write_repro
from gqemu.stress.shrink import shrink


@pytest.mark.parametrize("fmt,faults,seeds", [
    ("raw", 0.0, 12), ("raw", 0.3, 8), ("qcow2", 0.0, 6), ("qcow2", 0.3, 6)])
def test_unplanted_block_layer_passes(fmt, faults, seeds):
    opts = Options(workload="block", fmt=fmt, faults=faults)
    total = dict(requests=0, faults=0, checks=0)
    for s in range(seeds):
        r = run_one(s, opts)
        assert r.ok, (s, r.invariant, r.message, r.where)
        total["requests"] += r.requests
        total["faults"] += r.faults
        total["checks"] += r.checks
    assert total["requests"] >= 20 * seeds and total["checks"] > total["requests"]
    assert (total["faults"] > 0) == (faults > 0)


def _find_and_shrink(opts, tmp_path, seeds=range(30)):
    for s in seeds:
        r = run_one(s, opts)
        if not r.ok:
            break
    else:
        pytest.fail("unserialised RMW not found in %d seeds" % len(seeds))
    assert r.invariant in ("shadow_read", "serialising_overlap"), (r.invariant, r.message)
    small = shrink(r, opts, max_runs=60, max_seconds=15)
    assert not small.ok and small.invariant == r.invariant
    path = str(tmp_path / "r.json")
    write_repro(path, small, opts, "")
    again, same = replay_repro(load_repro(path))
    assert same, (again.invariant, again.message)
    return r


def test_unserialised_rmw_is_caught(monkeypatch, tmp_path):
    """The detector itself: make every RMW skip serialisation (what the
    planted switch does) by stubbing mark_request_serialising."""
    monkeypatch.setattr(block_io, "mark_request_serialising", lambda req, align: None)
    r = _find_and_shrink(Options(workload="block"), tmp_path)
    monkeypatch.undo()
    assert run_one(r.seed, Options(workload="block")).ok


def test_planted_rmw_unserialised(tmp_path):
    r = _find_and_shrink(Options(workload="block", plant=("rmw_unserialised",)), tmp_path)
    assert run_one(r.seed, Options(workload="block")).ok


def test_qcow2_check_invariant_catches_a_corrupt_image():
    import struct

    from gqemu.stress.invariants import Checker, InvariantViolation
    from gqemu.stress.wl_block import check_qcow2, make_image
    path = make_image("qcow2")
    check_qcow2(path, 0, Checker().check)           # a fresh image is clean
    with open(path, "r+b") as f:
        l1 = struct.unpack(">Q", f.read(48)[40:48])[0]
        f.seek(l1)
        f.write(struct.pack(">Q", (1 << 63) | 0x10000))   # L2 table past EOF
    with pytest.raises(InvariantViolation) as e:
        check_qcow2(path, 0, Checker().check)
    assert e.value.name == "qcow2_check"


@pytest.mark.allow_loop_leaks      # the run stops at the violation, programs parked
def test_serialising_requests_that_do_not_wait_are_caught(monkeypatch):
    """The in-flight check itself: RMWs still marked serialising, but no
    request ever waits for them."""
    real = block_io.wait_serialising_requests
    for name, mod in list(sys.modules.items()):
        if name.startswith("gqemu.block") and getattr(mod, "wait_serialising_requests",
                                                      None) is real:
            monkeypatch.setattr(mod, "wait_serialising_requests", lambda req: False)
    opts = Options(workload="block")
    found = [r for r in (run_one(s, opts) for s in range(12)) if not r.ok]
    assert found and {r.invariant for r in found} <= {"serialising_overlap", "shadow_read"}
    assert "serialising_overlap" in {r.invariant for r in found}


def test_qcow2_zeroize_waits_for_inflight_allocation():
    """Regression, found by gqemu stress: a partial-cluster write-zeroes
    falls back to an allocating write that copies backing data; a
    whole-cluster write-zeroes running meanwhile must wait for it, or the
    allocation's L2 update overwrites the zero flag and backing data
    reappears.  The shrunk reproducer (3 requests) must now pass."""
    from pathlib import Path
    repro = load_repro(str(Path(__file__).parent / "repros" / "qcow2_zero_race.json"))
    assert repro["invariant"] == "shadow_read"
    result, _same = replay_repro(repro)
    assert result.ok, (result.invariant, result.message)
