"""A hostile guest on the whole ``pc`` machine at once: random port I/O of
every width spread over both IDE channels, the PIIX bus-master BAR, the
virtio-blk BAR and the PCI configuration mechanism (which lets it move
BARs, switch I/O decoding and bus mastering off and on mid-request), with
RAM seeded with junk descriptor tables and PRDs, and the main loop run
between accesses.  The fuzzers beside it drive one device each
(test_ide_fuzz, test_bmdma_fuzz, test_virtio_fuzz); this one mixes them.

After every sequence: no exception escaped an exit, the machine goes idle
within a bounded number of main-loop iterations (counted, not timed),
every image keeps its size (nothing was written outside it), and every
guest-visible register read returned a value of its access width.
"""
from __future__ import annotations

import os
import random

import pytest

from gqemu.aio import aio_poll
from gqemu.hw.memory import cpu_inb, cpu_inl, cpu_inw, cpu_outb, cpu_outl, cpu_outw
from gqemu.machine import Machine, drive_config, make_scratch_disk

pytestmark = pytest.mark.timeout(300)

MAX_IDLE_STEPS = 10000          # main-loop iterations until every device is idle
OPS = 300
INTERESTING = [0, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x80000000, 1, 4, 7, 8, 0x10, 0x20, 0x25,
               0x30, 0x35, 0x40, 0xA0, 0xB0, 0xC8, 0xCA, 0xE7, 0xEA, 0xEC, 0xEF, 0xF8]


def _cfg_addr(rnd: random.Random) -> int:
    """A CONFIG_ADDRESS aimed at the IDE (00:01.1) or virtio (00:02.0)
    function's command register or a BAR, now and then anywhere."""
    devfn = rnd.choice([0x09, 0x10, rnd.randrange(256)])
    reg = rnd.choice([0x04, 0x10, 0x14, 0x20, 0x3C, rnd.randrange(0, 256, 4)])
    return 0x80000000 | devfn << 8 | reg


@pytest.mark.parametrize("seed", range(12))
def test_mixed_port_io_never_escapes_or_hangs(tmp_path, seed):
    rnd = random.Random(seed)
    paths = [str(tmp_path / n) for n in ("a.img", "b.img", "v.img")]
    for p in paths:
        make_scratch_disk(p, 2)
    m = Machine(drive_config(["file=%s,format=raw,if=ide,index=0" % paths[0],
                              "file=%s,format=raw,if=ide,index=2" % paths[1],
                              "file=%s,format=raw,if=virtio" % paths[2]]))
    try:
        io = m.as_io

        def cfg_read(devfn: int, off: int) -> int:
            cpu_outl(io, 0xCF8, 0x80000000 | devfn << 8 | off)
            return cpu_inl(io, 0xCFC)

        vio = cfg_read(0x10, 0x10) & 0xFFFC
        bm = cfg_read(0x09, 0x20) & 0xFFFC
        ports = (list(range(0x1F0, 0x1F8)) + [0x3F6, 0x3F7] + list(range(0x170, 0x178))
                 + [0x376] + [bm + i for i in range(16)] + [vio + i for i in range(0x20)]
                 + [0xCFC, 0xCFD, 0xCFE, 0xCFF])
        ram = m.ram
        for _ in range(24):         # junk rings, PRD tables and buffers
            a = rnd.choice([0, 0x1000, 0x10000, 0x11000, 0x12000, rnd.randrange(len(ram))])
            n = min(64, len(ram) - a)
            ram[a:a + n] = rnd.randbytes(n)
        sizes = [os.path.getsize(p) for p in paths]
        for _ in range(OPS):
            w = rnd.choice([1, 1, 2, 4])
            if rnd.random() < 0.08:
                cpu_outl(io, 0xCF8, _cfg_addr(rnd))
            port = rnd.choice(ports)
            if rnd.random() < 0.5:
                v = rnd.choice(INTERESTING + [rnd.getrandbits(32)]) & ((1 << 8 * w) - 1)
                {1: cpu_outb, 2: cpu_outw, 4: cpu_outl}[w](io, port, v)
            else:
                v = {1: cpu_inb, 2: cpu_inw, 4: cpu_inl}[w](io, port)
                assert 0 <= v < 1 << 8 * w, (hex(port), w, v)
            if rnd.random() < 0.1:
                for _ in range(4):
                    aio_poll(m.ctx, False)
        steps = 0
        while aio_poll(m.ctx, True):
            steps += 1
            assert steps <= MAX_IDLE_STEPS, "the machine does not go idle"
        assert [os.path.getsize(p) for p in paths] == sizes
        assert len(m.ram) == 16 << 20
    finally:
        m.close()
