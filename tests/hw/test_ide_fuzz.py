"""Random port-I/O streams and PRD tables against the IDE controller
(reliability 6.3, T40): nothing raises, the loop is idle within a bounded
number of polls after every step, no request leaves the image, BSY is never
stuck, and the PIO pointers stay inside the buffer."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gqemu.hw.dma as hwdma
import gqemu.hw.ide.core as core
from gqemu.aio import aio_poll
from gqemu.hw.ide.internal import BUSY_STAT, DRQ_STAT
from tests.hw.rig import RAM_SIZE, Rig, make_disk

NSECT = 64
PORTS = ([0x1F0 + i for i in range(8)] + [0x3F6, 0x3F7] + [0x170 + i for i in range(8)]
         + [0x376] + [0xC000 + i for i in range(16)])
COMMANDS = [0x20, 0x24, 0x29, 0x30, 0x34, 0x39, 0x40, 0x42, 0x90, 0xC4, 0xC5, 0xC6,
            0xC8, 0xCA, 0x25, 0x35, 0xE7, 0xEA, 0xEC, 0xEF, 0xF8, 0x27, 0xE5, 0xB0,
            0x00, 0x01, 0x08, 0xA0, 0xA1, 0x06, 0xF5, 0x91, 0x10]

byte = st.one_of(st.integers(0, 255), st.sampled_from([0, 1, 2, 4, 6, 8, 0x10, 0x40, 0x80,
                                                         0xA0, 0xB0, 0xE0, 0xF0, 0xFF]))
op = st.one_of(
    st.tuples(st.just("outb"), st.sampled_from(PORTS), byte),
    st.tuples(st.just("cmd"), st.sampled_from([0x1F7, 0x177]), st.sampled_from(COMMANDS)),
    st.tuples(st.just("ctrl"), st.sampled_from([0x3F6, 0x376]), st.sampled_from([0, 2, 4, 6, 0x80])),
    st.tuples(st.just("outw"), st.sampled_from(PORTS), st.integers(0, 0xFFFF)),
    st.tuples(st.just("outl"), st.sampled_from(PORTS), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.sampled_from(["inb", "inw", "inl"]), st.sampled_from(PORTS), st.just(0)),
    st.tuples(st.just("rep"), st.sampled_from([0x1F0, 0x170]), st.integers(1, 600)),
    st.tuples(st.just("prd"), st.integers(0, 15),
              st.tuples(st.sampled_from([0x2000, 0x3000, RAM_SIZE - 256, 0xF0000000,
                                         0xFFFFFFFF]),
                        st.sampled_from([0, 1, 256, 512, 513, 1024, 4096, 0xFFFF]),
                        st.booleans())),
    st.tuples(st.just("tf"), st.sampled_from([0x1F0, 0x170]),
              st.tuples(byte, byte, byte, byte, byte, st.sampled_from([0x40, 0xE0, 0xA0, 0xF0, 0x4F]),
                        st.sampled_from(COMMANDS))),
    st.tuples(st.just("tf"), st.sampled_from([0x1F0]),
              st.tuples(byte, byte, byte, byte, byte, st.sampled_from([0x40, 0xE0, 0xA0]),
                        st.sampled_from([0x20, 0x24, 0x30, 0x34, 0xC4, 0xC5, 0xC8, 0xCA, 0x25, 0x35]))),
    st.tuples(st.just("poll"), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("reset"), st.just(0), st.just(0)),
)

MAX_POLLS = 2000


@pytest.fixture(scope="module")
def disk_path(tmp_path_factory):
    return make_disk(tmp_path_factory.mktemp("fuzz") / "d.img", NSECT)


def settle_bounded(rig):
    for _ in range(MAX_POLLS):
        if not rig.busy():
            break
        aio_poll(rig.ctx, True)
    else:
        raise AssertionError("the device is still busy after %d polls" % MAX_POLLS)
    for _ in range(100):                 # and the loop itself goes idle
        if not aio_poll(rig.ctx, False):
            return
    raise AssertionError("the loop keeps making progress with the device idle")


def check(rig):
    for bus in rig.buses:
        for s in bus.ifs:
            assert 0 <= s.data_ptr <= s.data_end <= len(s.io_buffer)
            assert not (s.status & BUSY_STAT), "BSY stuck: %r" % s
            if s.status & DRQ_STAT and s.end_transfer_func is not core.ide_transfer_stop:
                assert s.data_ptr < s.data_end or bus.dma.aiocb is not None or \
                    s.end_transfer_func is core.ide_dummy_transfer_stop or \
                    s.data_end == 0          # DMA command waiting for the bus master
    assert len(rig.ram.ram) == RAM_SIZE


@settings(max_examples=int(os.environ.get("GQEMU_FUZZ_EXAMPLES", "80")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=40), readahead=st.sampled_from([0, 0, 16]))
def test_random_port_io(disk_path, monkeypatch, ops, readahead):
    requests = []

    def spy(real, is_flush=False):
        def f(blk, *args):
            if not is_flush:
                offset, qiov = args[0], args[1]
                requests.append((offset, qiov.size))
            return real(blk, *args)
        return f

    with monkeypatch.context() as m:
        import gqemu.hw.ide.readahead as ra_mod
        m.setattr(ra_mod, "blk_aio_preadv", spy(ra_mod.blk_aio_preadv))
        for mod in (core, hwdma):
            m.setattr(mod, "blk_aio_preadv", spy(mod.blk_aio_preadv))
            m.setattr(mod, "blk_aio_pwritev", spy(mod.blk_aio_pwritev))
        rig = Rig([disk_path, None, None, None], readahead=readahead)
        try:
            for kind, a, b in ops:
                if kind == "outb":
                    rig.outb(a, b)
                elif kind in ("cmd", "ctrl"):
                    rig.outb(a, b)
                elif kind == "outw":
                    rig.outw(a, b)
                elif kind == "outl":
                    rig.outl(a, b)
                elif kind in ("inb", "inw", "inl"):
                    v = getattr(rig, kind)(a)
                    assert 0 <= v < (1 << {"inb": 8, "inw": 16, "inl": 32}[kind])
                elif kind == "rep":
                    from gqemu.hw.memory import address_space_rw_string
                    buf = bytearray(2 * b)
                    address_space_rw_string(rig.as_io, a, None, buf, 2, b, False)
                elif kind == "prd":
                    addr, size, eot = b
                    rig.mem_write(0x1000 + 8 * a, addr.to_bytes(4, "little")
                                  + (size | (0x80000000 if eot else 0)).to_bytes(4, "little"))
                    rig.outl(0xC004, 0x1000)
                elif kind == "tf":
                    for i, v in enumerate(b[:6]):
                        rig.outb(a + 1 + i, v)
                    rig.outb(a + 7, b[6])
                    if b[6] in (0xC8, 0xCA, 0x25, 0x35):
                        rig.outb(0xC000 + (a == 0x170) * 8, 0x01 | (b[6] in (0xC8, 0x25)) * 8)
                elif kind == "poll":
                    for _ in range(a):
                        aio_poll(rig.ctx, False)
                elif kind == "reset":
                    rig.piix.reset()
                settle_bounded(rig)
                check(rig)
        finally:
            rig.close()
    for offset, size in requests:
        assert 0 <= offset and offset + size <= NSECT * 512, (offset, size)
    assert disk_path.stat().st_size == NSECT * 512
