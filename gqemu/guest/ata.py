"""A small guest-side ATA driver for emulator scripts (PIO and bus-master DMA).

Runs inside the guest program: every register access is a port I/O exit
through ``cpu``.  It waits like SeaBIOS does (an alternate-status read, then
polling the status register until BSY clears) or, with ``use_irq=True``,
enables interrupts (nIEN = 0) and sleeps in ``hlt`` until IRQ 14/15::

    from gqemu.guest.ata import ATA
    def guest(cpu):
        ata = ATA(cpu)                 # primary master, polling
        data = ata.read_sectors(0, 1)  # READ SECTORS, LBA 0, 1 sector

Errors come back as ``AtaError`` carrying the status and error registers.
This is guest code: the port numbers are the guest's view of machine pc.
"""
from __future__ import annotations

from typing import Any, Optional

# command block offsets
REG_DATA, REG_ERROR, REG_NSECT, REG_LBA0, REG_LBA1, REG_LBA2, REG_DEV, REG_STATUS = range(8)
REG_FEATURE, REG_CMD = REG_ERROR, REG_STATUS

BSY, DRDY, DF, DSC, DRQ, CORR, IDX, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
ABRT = 0x04
CTL_NIEN, CTL_SRST, CTL_HOB = 0x02, 0x04, 0x80

CMD_READ_SECTORS = 0x20
CMD_READ_SECTORS_EXT = 0x24
CMD_READ_DMA_EXT = 0x25
CMD_READ_MULTIPLE_EXT = 0x29
CMD_WRITE_SECTORS = 0x30
CMD_WRITE_SECTORS_EXT = 0x34
CMD_WRITE_DMA_EXT = 0x35
CMD_WRITE_MULTIPLE_EXT = 0x39
CMD_READ_VERIFY = 0x40
CMD_READ_MULTIPLE = 0xC4
CMD_WRITE_MULTIPLE = 0xC5
CMD_SET_MULTIPLE = 0xC6
CMD_READ_DMA = 0xC8
CMD_WRITE_DMA = 0xCA
CMD_FLUSH_CACHE = 0xE7
CMD_FLUSH_CACHE_EXT = 0xEA
CMD_IDENTIFY = 0xEC

CHANNELS = ((0x1F0, 0x3F6, 14), (0x170, 0x376, 15))
BMDMA_BASE = 0xC000
BM_CMD_START, BM_CMD_READ = 0x01, 0x08        # READ: device -> memory
BM_STS_ACTIVE, BM_STS_ERROR, BM_STS_INTR = 0x01, 0x02, 0x04

PRD_TABLE = 0x1000          # guest RAM layout used by the DMA helpers
DMA_BUFFER = 0x10000

MAX_POLLS = 1_000_000


class AtaError(Exception):
    """A command ended with ERR (or timed out): ``status`` and ``error``."""

    def __init__(self, what: str, status: int, error: int) -> None:
        super().__init__("%s: status 0x%02x error 0x%02x" % (what, status, error))
        self.status = status
        self.error = error


class ATA:
    """One drive: ``channel`` 0 (primary) or 1, ``slave`` False/True."""

    def __init__(self, cpu: Any, channel: int = 0, slave: bool = False,
                 use_irq: bool = False) -> None:
        self.cpu = cpu
        self.base, self.ctl, self.irq = CHANNELS[channel]
        self.bm = BMDMA_BASE + 8 * channel
        self.slave = slave
        self.use_irq = use_irq
        self.multiple = 16
        cpu.outb(self.ctl, 0 if use_irq else CTL_NIEN)

    # -- waiting -------------------------------------------------------------

    def alt_status(self) -> int:
        return self.cpu.inb(self.ctl)

    def status(self) -> int:
        """Read the status register (acknowledges INTRQ)."""
        return self.cpu.inb(self.base + REG_STATUS)

    def wait_not_busy(self, what: str = "command") -> int:
        """Poll the status register until BSY clears (SeaBIOS await_not_bsy);
        with ``use_irq``, sleep in hlt until an interrupt first."""
        cpu = self.cpu
        port = self.base + REG_STATUS
        if self.use_irq:
            while self.alt_status() & BSY:
                cpu.hlt()
        for _ in range(MAX_POLLS):
            st = cpu.inb(port)
            if not st & BSY:
                return st
        raise AtaError("%s: timeout waiting for BSY to clear" % what, st, 0)

    def finish(self, what: str) -> int:
        """Wait for the command (or its current step) to end; raise on ERR."""
        self.alt_status()                     # the 400 ns delay
        st = self.wait_not_busy(what)
        if st & ERR:
            raise AtaError(what, st, self.cpu.inb(self.base + REG_ERROR))
        return st

    def wait_drq(self, what: str) -> int:
        st = self.finish(what)
        if not st & DRQ:
            raise AtaError("%s: no data request" % what, st, 0)
        return st

    # -- task file -------------------------------------------------------------

    def select(self, lba_mode: bool = True) -> None:
        self.cpu.outb(self.base + REG_DEV, (0xE0 if lba_mode else 0xA0) | (0x10 if self.slave else 0))

    def command(self, cmd: int, lba: int = 0, count: int = 0, feature: int = 0,
                lba48: bool = False) -> None:
        """Write the task file and the command (like SeaBIOS send_cmd)."""
        out = self.cpu.outb
        b = self.base
        if lba48:
            out(b + REG_FEATURE, feature >> 8 & 0xFF)
            out(b + REG_NSECT, count >> 8 & 0xFF)
            out(b + REG_LBA0, lba >> 24 & 0xFF)
            out(b + REG_LBA1, lba >> 32 & 0xFF)
            out(b + REG_LBA2, lba >> 40 & 0xFF)
        out(b + REG_FEATURE, feature & 0xFF)
        out(b + REG_NSECT, count & 0xFF)
        out(b + REG_LBA0, lba & 0xFF)
        out(b + REG_LBA1, lba >> 8 & 0xFF)
        out(b + REG_LBA2, lba >> 16 & 0xFF)
        dev = 0x40 | (0x10 if self.slave else 0)
        if not lba48:
            dev |= 0xA0 | (lba >> 24 & 0x0F)
        out(b + REG_DEV, dev)
        out(b + REG_CMD, cmd)

    def regs(self, hob: bool = False) -> dict:
        """The task-file registers (with ``hob``, the previous bytes too)."""
        inb = self.cpu.inb
        b = self.base
        r = {"error": inb(b + REG_ERROR), "nsect": inb(b + REG_NSECT),
             "lba0": inb(b + REG_LBA0), "lba1": inb(b + REG_LBA1),
             "lba2": inb(b + REG_LBA2), "dev": inb(b + REG_DEV),
             "status": inb(b + REG_STATUS), "alt": inb(self.ctl)}
        if hob:
            self.cpu.outb(self.ctl, CTL_HOB | (0 if self.use_irq else CTL_NIEN))
            r["hob"] = [inb(b + REG_ERROR), inb(b + REG_NSECT), inb(b + REG_LBA0),
                        inb(b + REG_LBA1), inb(b + REG_LBA2)]
            self.cpu.outb(self.ctl, 0 if self.use_irq else CTL_NIEN)
        return r

    # -- commands --------------------------------------------------------------

    def identify(self) -> list[int]:
        """IDENTIFY DEVICE: the 256 words."""
        self.select()
        self.command(CMD_IDENTIFY)
        self.wait_drq("IDENTIFY")
        raw = self.cpu.insw(self.base + REG_DATA, 256)
        self.finish("IDENTIFY")
        return [raw[i] | raw[i + 1] << 8 for i in range(0, 512, 2)]

    def read_sectors(self, lba: int, count: int, lba48: Optional[bool] = None,
                     dword: bool = False) -> bytes:
        """READ SECTORS (EXT): ``count`` sectors by PIO, one ``rep insw``
        (``insd`` with ``dword``) per sector."""
        lba48 = lba48 if lba48 is not None else (lba + count > 1 << 28 or count > 256)
        cmd = CMD_READ_SECTORS_EXT if lba48 else CMD_READ_SECTORS
        self.command(cmd, lba, count & (0xFFFF if lba48 else 0xFF), lba48=lba48)
        n = count or (65536 if lba48 else 256)
        return self._pio_in("READ SECTORS", n, 1, dword)

    def read_multiple(self, lba: int, count: int, dword: bool = True,
                      lba48: bool = False) -> bytes:
        """READ MULTIPLE: DRQ blocks of ``self.multiple`` sectors."""
        self.command(CMD_READ_MULTIPLE_EXT if lba48 else CMD_READ_MULTIPLE, lba, count,
                     lba48=lba48)
        return self._pio_in("READ MULTIPLE", count, self.multiple, dword)

    def _pio_in(self, what: str, count: int, block: int, dword: bool) -> bytes:
        out = []
        left = count
        port = self.base + REG_DATA
        while left:
            self.wait_drq(what)
            n = min(left, block)
            out.append(self.cpu.insl(port, 128 * n) if dword else self.cpu.insw(port, 256 * n))
            left -= n
        self.finish(what)
        return b"".join(out)

    def write_sectors(self, lba: int, data: bytes, lba48: bool = False,
                      dword: bool = False) -> None:
        """WRITE SECTORS (EXT) by PIO."""
        self._check_data(data)
        count = len(data) // 512
        self.command(CMD_WRITE_SECTORS_EXT if lba48 else CMD_WRITE_SECTORS, lba, count,
                     lba48=lba48)
        self._pio_out("WRITE SECTORS", data, 1, dword)

    def write_multiple(self, lba: int, data: bytes, dword: bool = True,
                       lba48: bool = False) -> None:
        """WRITE MULTIPLE: DRQ blocks of ``self.multiple`` sectors."""
        self._check_data(data)
        self.command(CMD_WRITE_MULTIPLE_EXT if lba48 else CMD_WRITE_MULTIPLE, lba,
                     len(data) // 512, lba48=lba48)
        self._pio_out("WRITE MULTIPLE", data, self.multiple, dword)

    def _pio_out(self, what: str, data: bytes, block: int, dword: bool) -> None:
        port = self.base + REG_DATA
        pos = 0
        while pos < len(data):
            self.wait_drq(what)
            n = min(len(data) - pos, 512 * block)
            chunk = data[pos:pos + n]
            if dword:
                self.cpu.outsl(port, chunk)
            else:
                self.cpu.outsw(port, chunk)
            pos += n
        self.finish(what)

    @staticmethod
    def _check_data(data: bytes) -> None:
        if not data or len(data) % 512:
            raise ValueError("write of %d bytes: not whole sectors" % len(data))

    def flush(self) -> None:
        """FLUSH CACHE: polls through the BSY period while the flush runs."""
        self.command(CMD_FLUSH_CACHE)
        self.finish("FLUSH CACHE")

    def set_multiple(self, n: int) -> None:
        self.command(CMD_SET_MULTIPLE, 0, n)
        self.finish("SET MULTIPLE MODE")
        self.multiple = n

    def read_verify(self, lba: int, count: int) -> None:
        self.command(CMD_READ_VERIFY, lba, count)
        self.finish("READ VERIFY")

    def soft_reset(self) -> dict:
        """SRST: set, wait, clear; returns the registers (the signature)."""
        nien = 0 if self.use_irq else CTL_NIEN
        self.cpu.outb(self.ctl, CTL_SRST | nien)
        self.alt_status()
        self.alt_status()
        self.cpu.outb(self.ctl, nien)
        self.wait_not_busy("SRST")
        return self.regs()

    # -- bus-master DMA ----------------------------------------------------------

    def _dma(self, what: str, cmd: int, lba: int, nsect: int, to_memory: bool,
             lba48: bool) -> int:
        cpu = self.cpu
        mem = cpu.memory
        nbytes = nsect * 512
        # PRD table: one entry per 64 KiB, EOT on the last
        entries = []
        pos = 0
        while pos < nbytes:
            n = min(nbytes - pos, 0x10000)
            entries.append((DMA_BUFFER + pos, n))
            pos += n
        table = b"".join(a.to_bytes(4, "little") + (n & 0xFFFF).to_bytes(2, "little")
                         + (0x8000 if i == len(entries) - 1 else 0).to_bytes(2, "little")
                         for i, (a, n) in enumerate(entries))
        mem.write(PRD_TABLE, table)
        cpu.outl(self.bm + 4, PRD_TABLE)
        cpu.outb(self.bm + 2, BM_STS_INTR | BM_STS_ERROR)     # write 1 to clear
        self.command(cmd, lba, nsect, lba48=lba48)
        cpu.outb(self.bm, BM_CMD_START | (BM_CMD_READ if to_memory else 0))
        for _ in range(MAX_POLLS):
            if self.use_irq:
                cpu.hlt()
            bst = cpu.inb(self.bm + 2)
            if bst & (BM_STS_ACTIVE | BM_STS_INTR) != BM_STS_ACTIVE:
                break
        else:
            raise AtaError("%s: DMA timeout" % what, self.alt_status(), 0)
        cpu.outb(self.bm, 0)
        st = self.status()
        if st & ERR or bst & BM_STS_ERROR:
            raise AtaError(what, st, cpu.inb(self.base + REG_ERROR))
        return st

    def read_dma(self, lba: int, nsect: int, lba48: bool = False) -> bytes:
        """READ DMA (EXT) into guest RAM at DMA_BUFFER; returns the data."""
        self._dma("READ DMA", CMD_READ_DMA_EXT if lba48 else CMD_READ_DMA, lba, nsect,
                  True, lba48)
        return self.cpu.memory.read(DMA_BUFFER, nsect * 512)

    def write_dma(self, lba: int, data: bytes, lba48: bool = False) -> None:
        """WRITE DMA (EXT) from guest RAM at DMA_BUFFER."""
        self._check_data(data)
        self.cpu.memory.write(DMA_BUFFER, data)
        self._dma("WRITE DMA", CMD_WRITE_DMA_EXT if lba48 else CMD_WRITE_DMA, lba,
                  len(data) // 512, False, lba48)


def sector_lba(data: bytes) -> int:
    """The LBA a self-describing scratch sector names (-1 if it is not one)."""
    if len(data) < 512:
        return -1
    lba = int.from_bytes(data[0:4], "little")
    if int.from_bytes(data[508:512], "little") != lba ^ 0xFFFFFFFF:
        return -1
    return lba


def read_sectors(cpu: Any, lba: int, count: int = 1) -> bytes:
    """Module-level shorthand: READ SECTORS on the primary master, polling."""
    return ATA(cpu).read_sectors(lba, count)
