"""Guest-side ATA programs of the IDE stress workload, as generators.

Each program yields one request per step -- ``("in", port, size)``,
``("out", port, size, value)``, ``("ins", port, nbytes)``,
``("outs", port, data)``, ``("wait",)`` (nothing to do until the loop
makes progress), ``("pause",)`` (let the loop run a little), ``("lock",
ch)``/``("unlock", ch)`` (the guest's lock on a channel), ``("reset", ch)``
(machine reset of a channel) and ``("drain", ch)`` -- and the driver in
:mod:`gqemu.stress.wl_ide` performs it and sends back the value read.
The checks use the workload's ``env``, ``shadow``, ``pic`` and ``ram``.
"""
from __future__ import annotations

import struct
from typing import Any, Generator, Optional

SECTOR = 512
BASE = (0x1F0, 0x170)
CTL = (0x3F6, 0x376)
IRQ = (14, 15)
BMDMA = 0xC000
BSY, DRDY, DRQ, ERR = 0x80, 0x40, 0x08, 0x01

Gen = Generator[Any, Any, Any]


class AtaPrograms:
    """Mixin: the ``g_<op>`` programs and the register checks."""

    env: Any
    shadow: dict[int, Any]
    pic: Any
    ram: bytearray
    faults: bool                # errors may be injected: ERR is allowed

    # -- guest programs --------------------------------------------------------

    def guest(self, idx: int, prog: list[Any]) -> Gen:
        for op in prog:
            self.env.requests += 1
            ch = op[1] // 2
            yield ("lock", ch)
            yield from getattr(self, "g_" + op[0])(idx, ch, op)
            yield ("unlock", ch)

    def _wait_not_busy(self, ch: int) -> Gen:
        while True:
            st = yield ("in", CTL[ch], 1)
            if not st & BSY:
                return st
            yield ("wait",)

    def _select(self, drive: int, ch: int) -> Gen:
        yield ("out", BASE[ch] + 6, 1, 0xE0 | (drive & 1) << 4)
        yield from self._wait_not_busy(ch)

    def _taskfile(self, ch: int, drive: int, lba: int, n: int, lba48: int,
                  cmd28: int, cmd48: int) -> Gen:
        b = BASE[ch]
        yield from self._select(drive, ch)
        if lba48:
            yield ("out", b + 2, 1, (n >> 8) & 0xFF)
            for k in range(3):
                yield ("out", b + 3 + k, 1, (lba >> (24 + 8 * k)) & 0xFF)
            yield ("out", b + 2, 1, n & 0xFF)
            for k in range(3):
                yield ("out", b + 3 + k, 1, (lba >> (8 * k)) & 0xFF)
            yield ("out", b + 6, 1, 0x40 | (drive & 1) << 4)
            yield ("out", b + 7, 1, cmd48)
        else:
            yield ("out", b + 2, 1, n & 0xFF)
            for k in range(3):
                yield ("out", b + 3 + k, 1, (lba >> (8 * k)) & 0xFF)
            yield ("out", b + 6, 1, 0xE0 | (drive & 1) << 4 | (lba >> 24) & 0xF)
            yield ("out", b + 7, 1, cmd28)

    def _finish(self, ch: int, what: str, end_lba: Optional[int], lba48: int) -> Gen:
        """Status and register checks once a command is over.  Returns
        True when the command failed (only allowed with injected faults:
        then the status is DRDY|ERR and the error register says ABRT)."""
        b = BASE[ch]
        check = self.env.check
        yield from self._wait_not_busy(ch)
        st = yield ("in", b + 7, 1)
        check(not self.pic.levels[IRQ[ch]], "ide_irq",
              "%s: IRQ %d still raised after the status read", what, IRQ[ch])
        if st & ERR and self.faults:
            error = yield ("in", b + 1, 1)
            check(st & (BSY | DRQ | DRDY | ERR) == DRDY | ERR and error & 0x04,
                  "ide_registers", "%s failed: status 0x%02x, error 0x%02x (expected"
                  " DRDY|ERR and ABRT)", what, st, error)
            return True
        check(st & (BSY | DRQ | DRDY | ERR) == DRDY, "ide_registers",
              "%s: status 0x%02x after completion", what, st)
        if end_lba is None:
            return False
        nsect = yield ("in", b + 2, 1)
        got = 0
        for k in range(3):
            got |= (yield ("in", b + 3 + k, 1)) << (8 * k)
        if lba48:
            yield ("out", CTL[ch], 1, 0x80)             # HOB
            for k in range(3):
                got |= (yield ("in", b + 3 + k, 1)) << (24 + 8 * k)
            yield ("out", CTL[ch], 1, 0x00)
        else:
            got |= ((yield ("in", b + 6, 1)) & 0xF) << 24
        check(nsect == 0 and got == end_lba, "ide_registers",
              "%s: sector count %d, LBA %d after the command (expected 0, %d)",
              what, nsect, got, end_lba)
        return False

    def _wait_drq(self, ch: int, what: str) -> Gen:
        """Wait for the next data block; False if the command failed."""
        while True:
            st = yield from self._wait_not_busy(ch)
            if st & (DRQ | ERR):
                break
            yield ("wait",)
        if st & ERR and self.faults:
            return False
        self.env.check(not st & ERR, "ide_registers", "%s: error status 0x%02x", what, st)
        return True

    def g_pio_r(self, idx: int, ch: int, op: list[Any]) -> Gen:
        _, drive, lba, n, lba48 = op
        sh = self.shadow[drive]
        rid = sh.read_begin(lba * SECTOR, n * SECTOR)
        yield from self._taskfile(ch, drive, lba, n, lba48, 0x20, 0x24)
        data = b""
        for _ in range(n):
            if not (yield from self._wait_drq(ch, "PIO read")):
                break
            data += yield ("ins", BASE[ch], SECTOR)
        failed = yield from self._finish(ch, "READ SECTORS", lba + n, lba48)
        err = sh.read_end(rid, None if failed else data)
        self.env.check(err is None, "shadow_read", "PIO read of drive %d LBA %d+%d: %s",
                       drive, lba, n, err)

    def g_pio_w(self, idx: int, ch: int, op: list[Any]) -> Gen:
        _, drive, lba, n, lba48 = op
        sh = self.shadow[drive]
        wid, data = sh.write_begin(lba * SECTOR, n * SECTOR)
        yield from self._taskfile(ch, drive, lba, n, lba48, 0x30, 0x34)
        for k in range(n):
            if not (yield from self._wait_drq(ch, "PIO write")):
                break
            yield ("outs", BASE[ch], data[k * SECTOR:(k + 1) * SECTOR])
        failed = yield from self._finish(ch, "WRITE SECTORS", lba + n, lba48)
        sh.write_end(wid, -1 if failed else 0)

    def _dma_setup(self, idx: int, ch: int, nbytes: int, split: int,
                   to_memory: bool, fill: bytes = b"") -> Gen:
        base = 0x10000 + idx * 0x10000
        bufs = [(base + 0x1000, split * SECTOR), (base + 0x8000, nbytes - split * SECTOR)]
        prd = b""
        parts = [(a, ln) for a, ln in bufs if ln]
        for k, (a, ln) in enumerate(parts):
            prd += struct.pack("<IHH", a, ln, 0x8000 if k == len(parts) - 1 else 0)
        self.ram[base:base + len(prd)] = prd
        pos = 0
        for a, ln in parts:
            self.ram[a:a + ln] = fill[pos:pos + ln] if fill else b"\xa5" * ln
            pos += ln
        bm = BMDMA + ch * 8
        yield ("out", bm + 2, 1, 0x06)
        yield ("out", bm + 4, 4, base)
        yield ("out", bm, 1, 0x08 if to_memory else 0x00)
        return parts

    def _dma_run(self, ch: int, to_memory: bool) -> Gen:
        bm = BMDMA + ch * 8
        yield ("out", bm, 1, (0x08 if to_memory else 0) | 1)

    def _dma_wait(self, ch: int, to_memory: bool) -> Gen:
        bm = BMDMA + ch * 8
        while True:
            st = yield ("in", bm + 2, 1)
            if st & 0x04:
                break
            yield ("wait",)
        yield ("out", bm, 1, 0x08 if to_memory else 0)
        self.env.check(st & 0x03 == 0, "ide_registers",
                       "BMDMA status 0x%02x after the interrupt", st)
        yield ("out", bm + 2, 1, 0x06)

    def _gather(self, parts: list[tuple[int, int]]) -> bytes:
        return b"".join(bytes(self.ram[a:a + ln]) for a, ln in parts)

    def g_dma_r(self, idx: int, ch: int, op: list[Any]) -> Gen:
        _, drive, lba, n, lba48, split = op
        sh = self.shadow[drive]
        rid = sh.read_begin(lba * SECTOR, n * SECTOR)
        parts = yield from self._dma_setup(idx, ch, n * SECTOR, split, True)
        yield from self._taskfile(ch, drive, lba, n, lba48, 0xC8, 0x25)
        yield from self._dma_run(ch, True)
        yield from self._dma_wait(ch, True)
        failed = yield from self._finish(ch, "READ DMA", lba + n, lba48)
        err = sh.read_end(rid, None if failed else self._gather(parts))
        self.env.check(err is None, "shadow_read", "DMA read of drive %d LBA %d+%d: %s",
                       drive, lba, n, err)

    def g_dma_w(self, idx: int, ch: int, op: list[Any]) -> Gen:
        _, drive, lba, n, lba48, split = op
        sh = self.shadow[drive]
        wid, data = sh.write_begin(lba * SECTOR, n * SECTOR)
        yield from self._dma_setup(idx, ch, n * SECTOR, split, False, data)
        yield from self._taskfile(ch, drive, lba, n, lba48, 0xCA, 0x35)
        yield from self._dma_run(ch, False)
        yield from self._dma_wait(ch, False)
        failed = yield from self._finish(ch, "WRITE DMA", lba + n, lba48)
        sh.write_end(wid, -1 if failed else 0)

    def g_flush(self, idx: int, ch: int, op: list[Any]) -> Gen:
        _, drive, ext = op
        yield from self._select(drive, ch)
        yield ("out", BASE[ch] + 7, 1, 0xEA if ext else 0xE7)
        yield from self._finish(ch, "FLUSH CACHE", None, 0)

    def _g_reset(self, idx: int, ch: int, op: list[Any], srst: bool) -> Gen:
        _, drive, lba, n, lba48, write, delay = op
        sh = self.shadow[drive]
        if write:
            wid, data = sh.write_begin(lba * SECTOR, n * SECTOR)
            parts = yield from self._dma_setup(idx, ch, n * SECTOR, 0, False, data)
        else:
            parts = yield from self._dma_setup(idx, ch, n * SECTOR, 0, True)
        yield from self._taskfile(ch, drive, lba, n, lba48,
                                  0xCA if write else 0xC8, 0x35 if write else 0x25)
        yield from self._dma_run(ch, not write)
        for _ in range(delay):
            yield ("pause",)
        if srst:
            yield ("out", CTL[ch], 1, 0x04)
            yield ("out", CTL[ch], 1, 0x00)
            yield from self._wait_not_busy(ch)      # SRST completes in a BH
        else:
            yield ("reset", ch)
        after = self._gather(parts)
        irqs = self.pic.raised_count[IRQ[ch]]
        yield ("drain", ch)
        yield ("out", BMDMA + ch * 8, 1, 0)
        if write:
            sh.write_end(wid, -1)       # may or may not have landed
        else:
            self.env.check(self._gather(parts) == after, "reset_stale_dma",
                           "guest RAM of a DMA read changed after the %s",
                           "SRST" if srst else "reset")
        self.env.check(self.pic.raised_count[IRQ[ch]] == irqs, "ide_irq",
                       "IRQ %d raised after the %s by a command it cancelled",
                       IRQ[ch], "SRST" if srst else "reset")
        yield from self._wait_not_busy(ch)
        b = BASE[ch]
        regs = []
        for port in (b + 1, b + 2, b + 3, b + 4, b + 5):
            regs.append((yield ("in", port, 1)))
        st = yield ("in", CTL[ch], 1)
        want = [1 if srst else 0, 1, 1, 0, 0]
        self.env.check(regs == want and st & ~0x10 == DRDY, "ide_registers",
                       "after %s: error/count/sector/lcyl/hcyl %s, status 0x%02x"
                       " (expected the reset signature %s and 0x50)",
                       "SRST" if srst else "reset", regs, st, want)

    def g_reset(self, idx: int, ch: int, op: list[Any]) -> Gen:
        yield from self._g_reset(idx, ch, op, False)

    def g_srst(self, idx: int, ch: int, op: list[Any]) -> Gen:
        yield from self._g_reset(idx, ch, op, True)
