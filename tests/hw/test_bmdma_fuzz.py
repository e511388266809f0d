"""Bus-master fuzz (issue 10, item 1): BM command, status and PRD-pointer
writes interleaved with DMA commands -- start then command, command then
start, the table moved while the engine runs, tables at the end of RAM and
beyond it, at the top of the 32-bit space.

Every exit (one port access) and every main-loop step must return within a
bounded number of steps, counted, not timed: PRD entries read (at most one
page, 512, per walk), walks per exit, and loop iterations until the device
is idle.  Each walk is also checked against a shadow of QEMU's
bmdma_prepare_buf computed in uint32 arithmetic, and after every exit every
guest-written register holds a value of the width QEMU stores it in.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gqemu.hw.ide.piix as piix
from gqemu.aio import aio_poll
from tests.hw.rig import RAM_SIZE, Rig, make_disk

NSECT = 64
BM = 0xC000
U32 = 0xFFFFFFFF
PAGE_ENTRIES = 512              # PRDs in the 4 KiB page QEMU walks at most
MAX_WALKS_PER_EXIT = 1          # one port write starts at most one walk
MAX_LOOP_STEPS = 64             # loop iterations until the channel is idle
TABLES = [0x1000, 0x1ff8, RAM_SIZE - 8, RAM_SIZE - 4, RAM_SIZE - 0x800,
          RAM_SIZE, 0xFFFFF000, 0xFFFFFFF8, 0xFFFFFFFC]
BUFS = [0x20000, 0x30000, RAM_SIZE - 0x100, RAM_SIZE, 0xFFFFFF00]
EOT = 0x80000000


REAL_PREPARE = piix.BMDMAState.prepare_buf
REAL_READ = piix.dma_memory_read


class StepLimit(AssertionError):
    pass


class Steps:
    """Counts PRD reads and walks; raises once a bound is passed, so the
    unbounded walk of the old code fails fast instead of hanging."""

    def __init__(self) -> None:
        self.prd_reads = 0
        self.walks = 0

    def reset(self) -> None:
        self.prd_reads = self.walks = 0


def shadow_walk(bm, ram: bytes, limit: int):
    """QEMU 7.2's bmdma_prepare_buf on a copy of the state, every address
    in uint32_t: returns (sg pieces, io_buffer_size, cur_addr,
    cur_prd_last, cur_prd_addr)."""
    addr, cur_addr = bm.addr, bm.cur_addr
    last, prd_addr, prd_len = bm.cur_prd_last, bm.cur_prd_addr, bm.cur_prd_len
    sg, size, total = [], 0, 0
    while True:
        if prd_len == 0:
            if last or ((cur_addr - addr) & U32) >= 4096:
                return sg, total, cur_addr, last, prd_addr
            raw = bytes(ram[cur_addr:cur_addr + 8]) if cur_addr < len(ram) else b""
            raw = raw + bytes(8 - len(raw))          # outside RAM reads 0
            cur_addr = (cur_addr + 8) & U32
            a = int.from_bytes(raw[:4], "little")
            s = int.from_bytes(raw[4:], "little")
            prd_len = s & 0xFFFE or 0x10000
            prd_addr, last = a, bool(s & EOT)
        n = min(limit - size, prd_len)
        if n:
            sg.append((prd_addr, n))
            size += n
        prd_addr = (prd_addr + prd_len) & U32
        total += prd_len
        prd_len = 0


def check_widths(rig) -> None:
    for bus in rig.buses:
        assert 0 <= bus.cmd <= 0xFF and bus.unit in (0, 1)
        bm = bus.dma
        assert bm.cmd in (0, 1, 8, 9)
        assert 0 <= bm.status <= 0xFF and not bm.status & ~0x67
        assert 0 <= bm.addr <= U32 and not bm.addr & 3
        assert 0 <= bm.cur_addr <= U32 and 0 <= bm.cur_prd_addr <= U32
        assert 0 <= bm.cur_prd_len <= 0x10000
        for s in bus.ifs:
            for name in ("feature", "error", "sector", "lcyl", "hcyl", "hob_feature",
                         "hob_nsector", "hob_sector", "hob_lcyl", "hob_hcyl",
                         "select", "status"):
                v = getattr(s, name)
                assert 0 <= v <= 0xFF, (name, v)
            assert 0 <= s.nsector <= U32


byte = st.integers(0, 255)
prd_entries = st.lists(st.tuples(st.sampled_from(BUFS),
                                 st.sampled_from([0, 1, 256, 512, 513, 1024, 0xFFFE, 0xFFFF]),
                                 st.booleans()), min_size=1, max_size=6)
ata = st.tuples(st.just("ata"), st.sampled_from([0xC8, 0xCA, 0x25, 0x35]),
                st.tuples(st.integers(0, NSECT + 4), st.sampled_from([0, 1, 2, 3, 8]),
                          st.sampled_from([0, 0, 1])))


@st.composite
def scene(draw):
    """One DMA the way a guest (or an attacker) orders it: mostly after the
    previous command ended, the table, the pointer, the start before or
    after the command, the pointer moved (up, down, or to the top of the
    address space) while the engine runs."""
    table = draw(st.sampled_from(TABLES))
    out = [("settle",)] if draw(st.integers(0, 3)) else []
    out += [("prd", table, draw(prd_entries)), ("bmcmd", 0x00),
            ("bmaddr", table, (0, 4))]
    start = ("bmcmd", draw(st.sampled_from([0x09, 0x01])))
    moved = draw(st.one_of(st.none(), st.sampled_from(TABLES),
                           st.integers(-64, 64).map(lambda d: (table + 4 * d) & U32)))
    steps = [start] + ([("bmaddr", moved, (0, 4))] if moved is not None else [])
    if draw(st.booleans()):
        out += steps + [draw(ata)]
    else:
        out += [draw(ata)] + steps
    return out


primitive = st.one_of(
    st.tuples(st.just("bmcmd"), st.sampled_from([0x00, 0x01, 0x08, 0x09]) | byte),
    st.tuples(st.just("bmstat"), byte),
    st.tuples(st.just("bmaddr"), st.sampled_from(TABLES) | st.integers(0, U32),
              st.sampled_from([(0, 4), (0, 2), (2, 2), (0, 1), (1, 1), (3, 1)])),
    st.tuples(st.just("prd"), st.sampled_from(TABLES), prd_entries),
    ata,
    st.tuples(st.just("poll"), st.integers(1, 3)),
    st.tuples(st.just("reset"),),
).map(lambda op: [op])
ops = st.lists(st.one_of(scene(), primitive), max_size=12).map(
    lambda parts: [op for part in parts for op in part])

ISSUE_CASE = [("bmaddr", 0x1000, (0, 4)), ("bmcmd", 0x09),
              ("bmaddr", 0xFFFFF000, (0, 4)), ("ata", 0xC8, (5, 1, 0))]


@pytest.fixture(scope="module")
def disk_path(tmp_path_factory):
    return make_disk(tmp_path_factory.mktemp("bmfuzz") / "d.img", NSECT)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(prog=ops)
@example(prog=ISSUE_CASE)
@example(prog=[("bmaddr", 0xFFFFFFF8, (0, 4)), ("ata", 0x25, (1, 1, 0)), ("bmcmd", 0x09)])
@example(prog=[("prd", RAM_SIZE - 4, [(0x20000, 512, True)]),
               ("bmaddr", RAM_SIZE - 4, (0, 4)), ("ata", 0xC8, (1, 1, 0)),
               ("bmcmd", 0x09), ("bmaddr", RAM_SIZE, (0, 4)), ("bmcmd", 0x00),
               ("bmcmd", 0x09)])
def test_every_exit_is_bounded(disk_path, monkeypatch, prog):
    steps = Steps()
    real_prepare, real_read = REAL_PREPARE, REAL_READ

    def counted_read(as_, addr, buf, length):
        steps.prd_reads += 1
        if steps.prd_reads > PAGE_ENTRIES * MAX_WALKS_PER_EXIT:
            raise StepLimit("%d PRD entries read in one exit" % steps.prd_reads)
        return real_read(as_, addr, buf, length)

    def checked_prepare(bm, limit):
        steps.walks += 1
        if steps.walks > MAX_WALKS_PER_EXIT:
            raise StepLimit("%d PRD walks in one exit" % steps.walks)
        want = shadow_walk(bm, rig.ram.ram, limit)
        before = steps.prd_reads
        got = real_prepare(bm, limit)
        assert steps.prd_reads - before <= PAGE_ENTRIES
        s = bm.active_if()
        assert (s.sg.sg, s.io_buffer_size, bm.cur_addr, bm.cur_prd_last,
                bm.cur_prd_addr) == want
        assert got == sum(n for _a, n in want[0])
        return got

    with monkeypatch.context() as m:
        m.setattr(piix, "dma_memory_read", counted_read)
        m.setattr(piix.BMDMAState, "prepare_buf", checked_prepare)
        rig = Rig([disk_path])
        try:
            run(rig, prog, steps)
        finally:
            rig.close()


def run(rig, prog, steps) -> None:
    """Perform ``prog``, one exit at a time, checking the bounds."""
    rig.outb(0x3F6, 0x00)

    def exit_(fn, *args):
        steps.reset()
        fn(*args)
        check_widths(rig)

    def settle():
        for _ in range(MAX_LOOP_STEPS):
            steps.reset()
            if not rig.busy():
                return
            aio_poll(rig.ctx, True)
            check_widths(rig)
        raise StepLimit("the channel is still busy after %d loop steps" % MAX_LOOP_STEPS)

    for op in prog:
        kind = op[0]
        if kind == "bmcmd":
            exit_(rig.outb, BM, op[1])
        elif kind == "bmstat":
            exit_(rig.outb, BM + 2, op[1])
        elif kind == "bmaddr":
            value, (off, width) = op[1], op[2]
            out = {1: rig.outb, 2: rig.outw, 4: rig.outl}[width]
            exit_(out, BM + 4 + off, (value >> (8 * off)) & ((1 << (8 * width)) - 1))
        elif kind == "prd":
            base, entries = op[1], op[2]
            data = b"".join(a.to_bytes(4, "little")
                            + (n | (EOT if eot else 0)).to_bytes(4, "little")
                            for a, n, eot in entries)
            if base + len(data) <= RAM_SIZE:
                rig.mem_write(base, data)
        elif kind == "ata":
            cmd, (lba, count, hob) = op[1], op[2]
            if cmd in (0x25, 0x35):
                for reg, hi, lo in ((2, hob, count), (3, 0, lba), (4, 0, 0), (5, 0, 0)):
                    exit_(rig.outb, 0x1F0 + reg, hi)
                    exit_(rig.outb, 0x1F0 + reg, lo)
                exit_(rig.outb, 0x1F6, 0x40)
            else:
                for reg, v in ((2, count), (3, lba), (4, 0), (5, 0), (6, 0xE0)):
                    exit_(rig.outb, 0x1F0 + reg, v)
            exit_(rig.outb, 0x1F7, cmd)
        elif kind == "poll":
            for _ in range(op[1]):
                steps.reset()
                aio_poll(rig.ctx, False)
                check_widths(rig)
        elif kind == "reset":
            exit_(rig.piix.reset)
        elif kind == "settle":
            settle()
        exit_(rig.inb, BM + 2)
        exit_(rig.inb, 0x1F7)
    settle()
    rig.outb(BM, 0x00)
    settle()


def test_moved_table_ends_the_walk_at_once(tmp_path, monkeypatch):
    """The issue's case, step by step: start with the table at 0x1000, move
    it to 0xFFFFF000 while the engine runs, then READ DMA.  QEMU's uint32
    ``cur_addr - addr`` is huge: no entry is read, the PRDs are "too short"
    (status 0x50, no IRQ, engine inactive, nothing written).  (Before the
    fix: about 500 million entries; the counter stops it after a page.)"""
    reads = []

    def counted_read(as_, addr, buf, length):
        reads.append(addr)
        if len(reads) > PAGE_ENTRIES:
            raise StepLimit("%d PRD entries read" % len(reads))
        return REAL_READ(as_, addr, buf, length)

    monkeypatch.setattr(piix, "dma_memory_read", counted_read)
    rig = Rig([make_disk(tmp_path / "d.img", NSECT)])
    try:
        rig.outb(0x3F6, 0x00)
        rig.mem_write(0x1000, (0x20000).to_bytes(4, "little") + (512 | EOT).to_bytes(4, "little"))
        rig.outl(BM + 4, 0x1000)
        rig.outb(BM, 0x09)
        rig.outl(BM + 4, 0xFFFFF000)
        for reg, v in ((1, 0), (2, 1), (3, 5), (4, 0), (5, 0), (6, 0xE0)):
            rig.outb(0x1F0 + reg, v)
        rig.outb(0x1F7, 0xC8)
        assert reads == []
        rig.settle()
        assert (rig.inb(BM + 2), rig.inb(0x1F7), rig.irq()) == (0x00, 0x50, 0)
        assert rig.mem_read(0x20000, 512) == bytes(512)
    finally:
        rig.close()
