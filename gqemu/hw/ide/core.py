"""IDE core: addressing, the PIO state machine, errors and reset.

The PIO read of the seed runs here::

    cmd_read_pio -> ide_sector_read -> ide_buffered_readv -> blk_aio_preadv
    ... loop ... -> ide_buffered_readv_cb -> ide_sector_read_cb
                 -> ide_transfer_start (DRQ) + ide_set_irq

and the guest's data-port reads drain ``io_buffer`` until
``end_transfer_func`` (``ide_sector_read`` again) starts the next block.
Writes mirror it (``ide_sector_write`` -> ``blk_aio_pwritev`` ->
``ide_sector_write_cb``).  Every error a request returns goes through
``ide_handle_rw_error``, which applies the drive's rerror/werror policy.

Reset safety (CVE-2023-5088): ``ide_reset`` bumps ``s.gen`` and orphans the
request in flight; every completion checks its generation (or its orphaned
flag) first and, if stale, returns without touching the state, the buffer
or the disk.  Nothing a guest writes raises: guest values are range-checked,
never asserted.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c.
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from gqemu.aio import aio_bh_schedule_oneshot
from gqemu.block.blk_error import (BLOCK_ERROR_ACTION_IGNORE,
                                   BLOCK_ERROR_ACTION_REPORT,
                                   BLOCK_ERROR_ACTION_STOP, blk_error_action,
                                   blk_get_error_action)
from gqemu.block.block_backend import (blk_aio_flush, blk_aio_preadv,
                                       blk_aio_pwritev)
from gqemu.block.qiov import qemu_iovec_init_buf
from gqemu.hw.dma import qemu_sglist_destroy
from gqemu.hw.ide.internal import (ABRT_ERR, ATA_DEV_HS,
                                   ATA_DEV_LBA, ATA_DEV_LBA_MSB, BUSY_STAT,
                                   DRQ_STAT, ERR_STAT, IDE_CTRL_DISABLE_IRQ,
                                   IDE_CTRL_HOB, IDE_RETRY_DMA,
                                   IDE_RETRY_FLUSH, IDE_RETRY_PIO,
                                   IDE_RETRY_READ, MAX_BUFFERED_REQS,
                                   READY_STAT, SEEK_STAT,
                                   IDEBufferedRequest, IDEBus, IDEState)
from gqemu.hw.irq import qemu_irq_raise
from gqemu.hw.trace_events import (trace_ide_sector_read,
                                   trace_ide_sector_write)

__all__ = [
    "ide_set_irq", "idebus_active_if", "ide_get_sector", "ide_set_sector",
    "ide_sect_range_ok", "ide_abort_command", "ide_transfer_start",
    "ide_transfer_stop", "ide_transfer_halt", "ide_sector_read",
    "ide_sector_read_cb", "ide_buffered_readv", "ide_buffered_readv_cb",
    "ide_sector_write", "ide_sector_write_cb", "ide_flush_cache",
    "ide_flush_cb", "ide_handle_rw_error", "ide_set_signature",
    "ide_cmd_lba48_transform", "ide_dummy_transfer_stop",
    "ide_is_pio_out", "ide_clear_hob", "ide_set_retry", "ide_clear_retry",
]

ECANCELED = errno.ECANCELED
EIO = errno.EIO


class _PioReq:
    """The opaque of a PIO write or flush: the drive and its generation."""

    __slots__ = ("s", "gen")

    def __init__(self, s: IDEState) -> None:
        self.s = s
        self.gen = s.gen


def idebus_active_if(bus: IDEBus) -> IDEState:
    """The selected drive.  QEMU: idebus_active_if."""
    return bus.ifs[bus.unit]


def ide_set_irq(bus: IDEBus) -> None:
    """Raise the channel's IRQ unless nIEN is set.  QEMU: ide_set_irq."""
    if not (bus.cmd & IDE_CTRL_DISABLE_IRQ):
        qemu_irq_raise(bus.irq)


def ide_clear_hob(bus: IDEBus) -> None:
    """Any task-file write clears HOB.  QEMU: ide_clear_hob."""
    bus.cmd &= ~IDE_CTRL_HOB


def ide_set_signature(s: IDEState) -> None:
    """The ATA signature: count 1, sector 1, cylinder 0 (0xffff: no medium).
    QEMU: ide_set_signature."""
    s.select &= ~ATA_DEV_HS & 0xff
    s.nsector = 1
    s.sector = 1
    if s.blk is not None:
        s.lcyl = 0
        s.hcyl = 0
    else:
        s.lcyl = 0xFF
        s.hcyl = 0xFF


def ide_sect_range_ok(s: IDEState, sector: int, nb_sectors: int) -> bool:
    """Whether ``[sector, sector + nb_sectors)`` lies on the disk (a negative
    CHS-derived sector is out of range, as its uint64 wrap is in C).
    QEMU: ide_sect_range_ok."""
    total = s.nb_sectors
    return 0 <= sector <= total and nb_sectors <= total - sector


def ide_set_retry(s: IDEState) -> None:
    """QEMU: ide_set_retry."""
    bus = s.bus
    bus.retry_unit = s.unit
    bus.retry_sector_num = ide_get_sector(s)
    bus.retry_nsector = s.nsector


def ide_clear_retry(s: IDEState) -> None:
    """QEMU: ide_clear_retry."""
    bus = s.bus
    bus.retry_unit = -1
    bus.retry_sector_num = 0
    bus.retry_nsector = 0


def ide_transfer_start(s: IDEState, buf: int, size: int,
                       end_transfer_func: Callable[[IDEState], None]) -> None:
    """Offer ``size`` bytes of ``io_buffer`` from ``buf`` to the data port
    (DRQ unless ERR) and call ``end_transfer_func`` once they are moved.
    QEMU: ide_transfer_start (PIIX has no ``pio_transfer`` op)."""
    s.data_ptr = buf
    s.data_end = buf + size
    ide_set_retry(s)
    if not (s.status & ERR_STAT):
        s.status |= DRQ_STAT
    s.end_transfer_func = end_transfer_func


def ide_cmd_done(s: IDEState) -> None:
    """QEMU: ide_cmd_done."""
    s.bus.dma.cmd_done()


def ide_transfer_halt(s: IDEState) -> None:
    """QEMU: ide_transfer_halt."""
    s.end_transfer_func = ide_transfer_stop
    s.data_ptr = 0
    s.data_end = 0
    s.status &= ~DRQ_STAT


def ide_transfer_stop(s: IDEState) -> None:
    """End the data phase.  QEMU: ide_transfer_stop."""
    ide_transfer_halt(s)
    ide_cmd_done(s)


def ide_dummy_transfer_stop(s: IDEState) -> None:
    """After reset: no data, reads return 0.  QEMU: ide_dummy_transfer_stop."""
    s.data_ptr = 0
    s.data_end = 0
    s.io_buffer[0:4] = b"\xff\xff\xff\xff"


def ide_is_pio_out(s: IDEState) -> bool:
    """Whether the data phase moves data device -> host.  QEMU: ide_is_pio_out."""
    return s.end_transfer_func is not ide_sector_write


def ide_abort_command(s: IDEState) -> None:
    """ABRT: status DRDY|ERR, error 0x04, data phase over (status first, as
    the 7.2 stable fix orders it).  QEMU: ide_abort_command."""
    s.status = READY_STAT | ERR_STAT
    s.error = ABRT_ERR
    ide_transfer_stop(s)


def ide_get_sector(s: IDEState) -> int:
    """The address in the task file (LBA28, LBA48 or CHS).  QEMU: ide_get_sector."""
    if s.select & ATA_DEV_LBA:
        if s.lba48:
            return ((s.hob_hcyl << 40) | (s.hob_lcyl << 32) | (s.hob_sector << 24)
                    | (s.hcyl << 16) | (s.lcyl << 8) | s.sector)
        return (((s.select & ATA_DEV_LBA_MSB) << 24) | (s.hcyl << 16)
                | (s.lcyl << 8) | s.sector)
    return (((s.hcyl << 8) | s.lcyl) * s.heads * s.sectors
            + (s.select & ATA_DEV_HS) * s.sectors + (s.sector - 1))


def ide_set_sector(s: IDEState, sector_num: int) -> None:
    """Write an address back in the task file's encoding.  QEMU: ide_set_sector."""
    if s.select & ATA_DEV_LBA:
        if s.lba48:
            s.sector = sector_num & 0xFF
            s.lcyl = (sector_num >> 8) & 0xFF
            s.hcyl = (sector_num >> 16) & 0xFF
            s.hob_sector = (sector_num >> 24) & 0xFF
            s.hob_lcyl = (sector_num >> 32) & 0xFF
            s.hob_hcyl = (sector_num >> 40) & 0xFF
        else:
            s.select = (s.select & ~ATA_DEV_LBA_MSB & 0xFF) | ((sector_num >> 24) & ATA_DEV_LBA_MSB)
            s.hcyl = (sector_num >> 16) & 0xFF
            s.lcyl = (sector_num >> 8) & 0xFF
            s.sector = sector_num & 0xFF
    else:
        track = s.heads * s.sectors
        if track <= 0 or sector_num < 0:
            return
        cyl, r = divmod(sector_num, track)
        s.hcyl = (cyl >> 8) & 0xFF
        s.lcyl = cyl & 0xFF
        s.select = (s.select & ~ATA_DEV_HS & 0xFF) | ((r // s.sectors) & ATA_DEV_HS)
        s.sector = ((r % s.sectors) + 1) & 0xFF


def ide_cmd_lba48_transform(s: IDEState, lba48: bool) -> None:
    """Count 0 means 256 (65536 for EXT commands).  An EXT command ORs the
    whole of ``nsector`` (uint32_t, which may still hold a count above 255
    that an earlier command left) under ``hob_nsector << 8``, as QEMU does:
    tests/data/bmdma case 17.  QEMU: ide_cmd_lba48_transform."""
    s.lba48 = lba48
    if not lba48:
        if not s.nsector:
            s.nsector = 256
    elif not s.nsector and not s.hob_nsector:
        s.nsector = 65536
    else:
        s.nsector = ((s.hob_nsector << 8) | s.nsector) & 0xFFFFFFFF


def ide_rw_error(s: IDEState) -> None:
    """QEMU: ide_rw_error."""
    ide_abort_command(s)
    ide_set_irq(s.bus)


# ------------------------------------------------------------- PIO read

def ide_buffered_readv_cb(opaque: IDEBufferedRequest, ret: int) -> None:
    """Copy the bounce buffer into ``io_buffer`` unless orphaned.
    Context: loop.  QEMU: ide_buffered_readv_cb."""
    req = opaque
    s = req.s
    if req in s.buffered_requests:
        s.buffered_requests.remove(req)
    if req.orphaned:
        return
    if ret >= 0:
        req.original_buf[:] = req.buf
    req.original_cb(req.original_opaque, ret)


def _ide_buffered_readv_abort(req: IDEBufferedRequest) -> None:
    ide_buffered_readv_cb(req, -EIO)


def ide_buffered_readv(s: IDEState, sector_num: int, buf: memoryview,
                       nb_sectors: int, cb: Callable[[Any, int], None],
                       opaque: Any) -> Any:
    """Read into a private buffer so a cancelled request can never write
    ``io_buffer``.  Returns the block request.  QEMU: ide_buffered_readv."""
    req = IDEBufferedRequest(s, buf, cb, opaque)
    too_many = len(s.buffered_requests) > MAX_BUFFERED_REQS
    s.buffered_requests.append(req)
    if too_many:
        # QEMU: blk_abort_aio_request(-EIO), delivered from a bottom half
        aio_bh_schedule_oneshot(s.bus.ctx, _ide_buffered_readv_abort, req)
        return None
    return blk_aio_preadv(s.blk, sector_num << 9, qemu_iovec_init_buf(req.buf), 0,
                          ide_buffered_readv_cb, req)


def ide_sector_read_cb(opaque: IDEState, ret: int) -> None:
    """A PIO block arrived: advance the registers, then offer it (DRQ) and
    raise the IRQ.  Context: loop.  QEMU: ide_sector_read_cb."""
    s = opaque
    s.pio_aiocb = None
    s.status &= ~BUSY_STAT
    # QEMU 7.x has no -ECANCELED shortcut here (2.x had one): a read that
    # ide_cancel_dma_sync orphans goes through the error policy like any error
    if ret < 0:
        if ide_handle_rw_error(s, -ret, IDE_RETRY_PIO | IDE_RETRY_READ):
            return
    n = s.nsector
    if n > s.req_nb_sectors:
        n = s.req_nb_sectors
    ide_set_sector(s, ide_get_sector(s) + n)
    s.nsector -= n
    ide_transfer_start(s, 0, n * 512, ide_sector_read)
    ide_set_irq(s.bus)


def ide_sector_read(s: IDEState) -> None:
    """Start reading the next PIO block (or end the command).
    QEMU: ide_sector_read."""
    s.status = READY_STAT | SEEK_STAT
    s.error = 0
    sector_num = ide_get_sector(s)
    n = s.nsector
    if n == 0:
        ide_transfer_stop(s)
        return
    s.status |= BUSY_STAT
    if n > s.req_nb_sectors:
        n = s.req_nb_sectors
    if trace_ide_sector_read.enabled:
        trace_ide_sector_read(sector_num, n)
    if not ide_sect_range_ok(s, sector_num, n):
        ide_rw_error(s)
        return
    if s.pio_read is not None:            # gqemu's opt-in read-ahead
        s.pio_read(s, sector_num, n)
        return
    s.pio_aiocb = ide_buffered_readv(s, sector_num,
                                     memoryview(s.io_buffer)[:n * 512], n,
                                     ide_sector_read_cb, s)




# ------------------------------------------------------------ PIO write

def ide_sector_write_cb(opaque: _PioReq, ret: int) -> None:
    """A PIO block is on disk: advance, then ask for the next block or stop.
    Context: loop.  QEMU: ide_sector_write_cb."""
    s = opaque.s
    if opaque.gen != s.gen:
        return                      # the drive was reset meanwhile
    s.pio_aiocb = None
    s.status &= ~BUSY_STAT
    if ret < 0:
        if ide_handle_rw_error(s, -ret, IDE_RETRY_PIO):
            return
    n = s.nsector
    if n > s.req_nb_sectors:
        n = s.req_nb_sectors
    s.nsector -= n
    ide_set_sector(s, ide_get_sector(s) + n)
    if s.nsector == 0:
        ide_transfer_stop(s)
    else:
        n1 = s.nsector
        if n1 > s.req_nb_sectors:
            n1 = s.req_nb_sectors
        ide_transfer_start(s, 0, n1 * 512, ide_sector_write)
    ide_set_irq(s.bus)


def ide_sector_write(s: IDEState) -> None:
    """The guest filled a block: write it.  QEMU: ide_sector_write."""
    s.status = READY_STAT | SEEK_STAT | BUSY_STAT
    sector_num = ide_get_sector(s)
    n = s.nsector
    if n > s.req_nb_sectors:
        n = s.req_nb_sectors
    if trace_ide_sector_write.enabled:
        trace_ide_sector_write(sector_num, n)
    if not ide_sect_range_ok(s, sector_num, n):
        ide_rw_error(s)
        return
    qiov = qemu_iovec_init_buf(memoryview(s.io_buffer)[:n * 512])
    s.pio_aiocb = blk_aio_pwritev(s.blk, sector_num << 9, qiov, 0,
                                  ide_sector_write_cb, _PioReq(s))


# ---------------------------------------------------------------- flush

def ide_flush_cb(opaque: _PioReq, ret: int) -> None:
    """QEMU: ide_flush_cb."""
    s = opaque.s
    if opaque.gen != s.gen:
        return                      # the drive was reset meanwhile
    s.pio_aiocb = None
    if ret < 0:
        if ide_handle_rw_error(s, -ret, IDE_RETRY_FLUSH):
            return
    s.status = READY_STAT | SEEK_STAT
    ide_cmd_done(s)
    ide_set_irq(s.bus)


def ide_flush_cache(s: IDEState) -> None:
    """BSY (status 0xC0) while ``blk_aio_flush`` runs.  QEMU: ide_flush_cache."""
    if s.blk is None:
        ide_flush_cb(_PioReq(s), 0)
        return
    s.status |= BUSY_STAT
    ide_set_retry(s)
    s.pio_aiocb = blk_aio_flush(s.blk, ide_flush_cb, _PioReq(s))


# --------------------------------------------------------------- errors

def dma_buf_commit(s: IDEState, tx_bytes: int) -> None:
    """QEMU: dma_buf_commit."""
    s.io_buffer_offset += tx_bytes
    if s.sg is not None:
        qemu_sglist_destroy(s.sg)


def ide_set_inactive(s: IDEState, more: bool) -> None:
    """QEMU: ide_set_inactive."""
    s.bus.dma.aiocb = None
    ide_clear_retry(s)
    s.bus.dma.set_inactive(more)
    ide_cmd_done(s)


def ide_dma_error(s: IDEState) -> None:
    """QEMU: ide_dma_error."""
    dma_buf_commit(s, 0)
    ide_abort_command(s)
    ide_set_inactive(s, False)
    ide_set_irq(s.bus)


def ide_handle_rw_error(s: IDEState, error: int, op: int) -> bool:
    """Apply the drive's rerror/werror policy to errno ``error``.

    REPORT: ABRT + IRQ (DMA: also stop the engine); STOP: remember ``op``
    in ``bus.error_status`` for ``ide_restart_bh``; IGNORE: carry on.
    Returns: whether the caller must stop (anything but IGNORE).
    QEMU: ide_handle_rw_error.
    """
    is_read = bool(op & IDE_RETRY_READ)
    action = blk_get_error_action(s.blk, is_read, error)
    if action == BLOCK_ERROR_ACTION_STOP:
        s.bus.error_status = op
    elif action == BLOCK_ERROR_ACTION_REPORT:
        if op & IDE_RETRY_DMA:
            ide_dma_error(s)
        else:
            ide_rw_error(s)
    blk_error_action(s.blk, action, is_read, error)
    return action != BLOCK_ERROR_ACTION_IGNORE
