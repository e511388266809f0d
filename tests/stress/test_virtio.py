"""The virtio-blk workload: batches of requests in flight on a legacy
virtio-blk-pci device under the stress scheduler; the unplanted device
passes, and planted device bugs are caught by its invariants."""
from __future__ import annotations

import pytest

import gqemu.hw.virtio.virtio_blk as vblk
from gqemu.stress.engine import Options, run_one


@pytest.mark.parametrize("fmt,policy,seeds", [("raw", "uniform", 12), ("raw", "pct", 6),
                                              ("qcow2", "uniform", 3)])
def test_unplanted_virtio_passes(fmt, policy, seeds):
    opts = Options(workload="virtio", fmt=fmt, policy=policy)
    merged = 0
    real = vblk.submit_requests

    def count(s, mrb, start, num_reqs):
        nonlocal merged
        merged += num_reqs > 1
        return real(s, mrb, start, num_reqs)

    vblk.submit_requests = count
    try:
        for s in range(seeds):
            r = run_one(s, opts)
            assert r.ok, (s, r.invariant, r.message, r.where)
            assert r.requests == opts.requests
    finally:
        vblk.submit_requests = real
    assert merged > 0                  # the batches did exercise merging


def test_lost_merged_completion_is_a_hang(monkeypatch):
    """Completing only the head of a merged request leaves the others in
    flight forever: virtio_hang."""
    real = vblk.virtio_blk_rw_complete

    def head_only(opaque, ret):
        opaque.mr_next = None
        real(opaque, ret)

    monkeypatch.setattr(vblk, "virtio_blk_rw_complete", head_only)
    bad = [run_one(s, Options(workload="virtio")) for s in range(8)]
    assert any(not r.ok and r.invariant == "virtio_hang" for r in bad)


def test_wrong_status_is_caught(monkeypatch):
    """Every request reported OK (the out-of-range read too): virtio_used."""
    real = vblk.virtio_blk_req_complete
    monkeypatch.setattr(vblk, "virtio_blk_req_complete", lambda req, status: real(req, 0))
    bad = [run_one(s, Options(workload="virtio")) for s in range(8)]
    assert any(not r.ok and r.invariant == "virtio_used" for r in bad)
