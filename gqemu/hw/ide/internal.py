"""IDE constants and state: ``IDEState`` (one drive), ``IDEBus`` (a channel),
``IDEDMA`` (the bus-master interface a controller plugs into a bus).

``IDEState`` holds the task file and the PIO state only; the request in
flight is tracked by ``pio_aiocb`` and by ``gen``, a counter that every reset
bumps so that a completion of an older generation is discarded.

Must not import: gqemu.kvm or anything above hw.
QEMU: include/hw/ide/internal.h.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

__all__ = ["IDEState", "IDEBus", "IDEDMA", "IDEBufferedRequest"]

# status register
ERR_STAT = 0x01
INDEX_STAT = 0x02
ECC_STAT = 0x04
DRQ_STAT = 0x08
SEEK_STAT = 0x10
SRV_STAT = 0x10
WRERR_STAT = 0x20
READY_STAT = 0x40
BUSY_STAT = 0x80

# error register
MARK_ERR = 0x01
TRK0_ERR = 0x02
ABRT_ERR = 0x04
MCR_ERR = 0x08
ID_ERR = 0x10
MC_ERR = 0x20
ECC_ERR = 0x40
BBD_ERR = 0x80

# device control register
IDE_CTRL_HOB = 0x80
IDE_CTRL_RESET = 0x04
IDE_CTRL_DISABLE_IRQ = 0x02

# device/head register
ATA_DEV_ALWAYS_ON = 0xA0
ATA_DEV_LBA = 0x40
ATA_DEV_SELECT = 0x10
ATA_DEV_HS = 0x0F
ATA_DEV_LBA_MSB = 0x0F

# drive kinds
IDE_HD = 0
IDE_CD = 1
IDE_CFATA = 2

MAX_MULT_SECTORS = 16
IDE_DMA_BUF_SECTORS = 256
BDRV_SECTOR_SIZE = 512
BDRV_SECTOR_BITS = 9
MAX_BUFFERED_REQS = 16

# DMA commands
IDE_DMA_READ = 0
IDE_DMA_WRITE = 1
IDE_DMA_TRIM = 2
IDE_DMA_CMD_STR = {IDE_DMA_READ: "DMA READ", IDE_DMA_WRITE: "DMA WRITE",
                   IDE_DMA_TRIM: "DMA TRIM"}

# bus->error_status: what to retry once the VM runs again
IDE_RETRY_DMA = 0x08
IDE_RETRY_PIO = 0x10
IDE_RETRY_READ = 0x20
IDE_RETRY_FLUSH = 0x40
IDE_RETRY_TRIM = 0x80

# opcodes (ACS-2 table B.2), as QEMU's include/hw/ide/internal.h names them
WIN_NOP = 0x00
CFA_REQ_EXT_ERROR_CODE = 0x03
WIN_DSM = 0x06
WIN_DEVICE_RESET = 0x08
WIN_RECAL = 0x10
WIN_READ = 0x20
WIN_READ_ONCE = 0x21
WIN_READ_EXT = 0x24
WIN_READDMA_EXT = 0x25
WIN_READ_NATIVE_MAX_EXT = 0x27
WIN_MULTREAD_EXT = 0x29
WIN_WRITE = 0x30
WIN_WRITE_ONCE = 0x31
WIN_WRITE_EXT = 0x34
WIN_WRITEDMA_EXT = 0x35
WIN_MULTWRITE_EXT = 0x39
WIN_WRITE_VERIFY = 0x3C
WIN_VERIFY = 0x40
WIN_VERIFY_ONCE = 0x41
WIN_VERIFY_EXT = 0x42
WIN_SEEK = 0x70
WIN_DIAGNOSE = 0x90
WIN_SPECIFY = 0x91
WIN_STANDBYNOW2 = 0x94
WIN_IDLEIMMEDIATE2 = 0x95
WIN_STANDBY2 = 0x96
WIN_SETIDLE2 = 0x97
WIN_CHECKPOWERMODE2 = 0x98
WIN_SLEEPNOW2 = 0x99
WIN_PACKETCMD = 0xA0
WIN_PIDENTIFY = 0xA1
WIN_SMART = 0xB0
CFA_WEAR_LEVEL = 0xF5
WIN_MULTREAD = 0xC4
WIN_MULTWRITE = 0xC5
WIN_SETMULT = 0xC6
WIN_READDMA = 0xC8
WIN_READDMA_ONCE = 0xC9
WIN_WRITEDMA = 0xCA
WIN_WRITEDMA_ONCE = 0xCB
WIN_STANDBYNOW1 = 0xE0
WIN_IDLEIMMEDIATE = 0xE1
WIN_STANDBY = 0xE2
WIN_SETIDLE1 = 0xE3
WIN_CHECKPOWERMODE1 = 0xE5
WIN_SLEEPNOW1 = 0xE6
WIN_FLUSH_CACHE = 0xE7
WIN_FLUSH_CACHE_EXT = 0xEA
WIN_IDENTIFY = 0xEC
WIN_SETFEATURES = 0xEF
WIN_READ_NATIVE_MAX = 0xF8

EndTransferFunc = Callable[["IDEState"], None]


class IDEDMA:
    """The bus-master interface of a channel (QEMU's IDEDMA + IDEDMAOps).

    The default does nothing: a channel without a DMA engine (ISA IDE).
    ``aiocb`` is the block DMA request in flight, if any.
    """

    def __init__(self) -> None:
        self.aiocb: Any = None

    def start_dma(self, s: "IDEState", dma_cb: Callable[["IDEState", int], None]) -> None:
        pass

    def prepare_buf(self, limit: int) -> int:
        return 0

    def set_inactive(self, more: bool) -> None:
        pass

    def restart_dma(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def cmd_done(self) -> None:
        pass


class IDEBufferedRequest:
    """A PIO read in flight into a private bounce buffer.

    ``orphaned`` requests (cancelled by a reset) never copy into
    ``io_buffer`` and never call back.  QEMU: IDEBufferedRequest.
    """

    __slots__ = ("s", "original_buf", "original_cb", "original_opaque",
                 "buf", "orphaned")

    def __init__(self, s: "IDEState", original_buf: memoryview,
                 cb: Callable[[Any, int], None], opaque: Any) -> None:
        self.s = s
        self.original_buf = original_buf
        self.original_cb = cb
        self.original_opaque = opaque
        self.buf = bytearray(len(original_buf))
        self.orphaned = False


class IDEState:
    """One drive on a channel: task file, identify data and PIO state."""

    __slots__ = (
        "bus", "unit", "blk", "drive_kind", "drive_serial", "drive_serial_str",
        "drive_model_str", "version", "cylinders", "heads", "sectors",
        "drive_heads", "drive_sectors", "chs_trans", "reset_reverts",
        "nb_sectors", "identify_data", "identify_set",
        "feature", "error", "nsector", "sector", "lcyl", "hcyl",
        "hob_feature", "hob_nsector", "hob_sector", "hob_lcyl", "hob_hcyl",
        "select", "status", "lba48", "mult_sectors", "req_nb_sectors",
        "io_buffer", "io_buffer_total_len", "data_ptr", "data_end",
        "end_transfer_func", "pio_aiocb", "buffered_requests", "gen",
        "io_buffer_size", "io_buffer_index", "io_buffer_offset", "dma_cmd",
        "sg", "smart_enabled", "smart_autosave", "smart_errors",
        "smart_selftest_count", "smart_selftest_data", "media_changed",
        "discard_granularity", "readahead_max", "ra", "pio_read", "__weakref__")

    def __init__(self, bus: "IDEBus", unit: int) -> None:
        self.bus = bus
        self.unit = unit
        self.blk: Any = None
        self.drive_kind = IDE_HD
        self.drive_serial = 0
        self.drive_serial_str = ""
        self.drive_model_str = ""
        self.version = ""
        self.cylinders = self.heads = self.sectors = 0
        self.drive_heads = self.drive_sectors = 0   # the geometry before SPECIFY
        self.chs_trans = "none"     # the BIOS translation QEMU's CMOS gives the disk
        self.reset_reverts = False
        self.nb_sectors = 0
        self.identify_data = bytearray(512)
        self.identify_set = False
        self.feature = self.error = self.nsector = self.sector = 0
        self.lcyl = self.hcyl = 0
        self.hob_feature = self.hob_nsector = self.hob_sector = 0
        self.hob_lcyl = self.hob_hcyl = 0
        self.select = ATA_DEV_ALWAYS_ON
        self.status = 0
        self.lba48 = False
        self.mult_sectors = MAX_MULT_SECTORS
        self.req_nb_sectors = 0
        self.io_buffer_total_len = IDE_DMA_BUF_SECTORS * 512 + 4
        self.io_buffer = bytearray(self.io_buffer_total_len)
        self.data_ptr = 0
        self.data_end = 0
        self.end_transfer_func: EndTransferFunc = _unset_transfer_func
        self.pio_aiocb: Any = None
        self.buffered_requests: list[IDEBufferedRequest] = []
        self.gen = 0
        self.io_buffer_size = 0
        self.io_buffer_index = 0
        self.io_buffer_offset = 0
        self.dma_cmd = IDE_DMA_READ
        self.sg: Any = None
        self.smart_enabled = True
        self.smart_autosave = True
        self.smart_errors = 0
        self.smart_selftest_count = 0
        self.smart_selftest_data = bytearray(512)
        self.media_changed = 0
        self.discard_granularity = 512
        self.readahead_max = 0          # gqemu option: PIO read-ahead (sectors)
        # ide_sector_read's submit when read-ahead is on (hw/ide/readahead.py)
        self.pio_read: Optional[Callable[["IDEState", int, int], None]] = None
        self.ra: Any = None             # its window (ide/readahead.py)

    def __repr__(self) -> str:
        return "<IDEState bus %d unit %d status 0x%02x>" % (
            self.bus.bus_id, self.unit, self.status)


def _unset_transfer_func(s: IDEState) -> None:
    pass


class IDEBus:
    """One channel: two drives sharing the task file lines, the device
    control register ``cmd``, the selected ``unit`` and the IRQ line.

    ``ctx`` is the AioContext that runs the SRST bottom half.
    """

    __slots__ = ("bus_id", "ifs", "unit", "cmd", "irq", "dma", "ctx",
                 "error_status", "retry_unit", "retry_sector_num",
                 "retry_nsector", "srst_pending", "__weakref__")

    def __init__(self, bus_id: int, ctx: Any, irq: Any = None) -> None:
        self.bus_id = bus_id
        self.ifs = (IDEState(self, 0), IDEState(self, 1))
        self.unit = 0
        self.cmd = 0
        self.irq = irq
        self.dma: IDEDMA = IDEDMA()
        self.ctx = ctx
        self.error_status = 0
        self.retry_unit = -1
        self.retry_sector_num = 0
        self.retry_nsector = 0
        self.srst_pending = False

    def __repr__(self) -> str:
        return "<IDEBus %d>" % self.bus_id
