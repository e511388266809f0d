"""IDE reset and retry: SRST/bus reset cancelling what is in flight, and the
reissue of a request a ``stop`` error policy parked.

Reset safety (CVE-2023-5088): ``ide_reset`` bumps ``s.gen`` and orphans the
request in flight; every completion checks its generation (or its orphaned
flag) first and, if stale, returns without touching the state, the buffer,
guest RAM or the disk.  A bus reset detaches the DMA request before it resets
the registers.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (ide_cancel_dma_sync, ide_reset, ide_bus_reset,
ide_restart_bh).
"""
from __future__ import annotations

from gqemu import plant
from gqemu.aio import BlockAIOCB, bdrv_aio_cancel_async
from gqemu.hw.dma import dma_blk_orphan
from gqemu.hw.ide.core import (ECANCELED, ide_clear_hob, ide_dummy_transfer_stop,
                               ide_flush_cache, ide_sector_read,
                               ide_sector_read_cb, ide_sector_write,
                               ide_set_sector, ide_set_signature,
                               idebus_active_if)
from gqemu.hw.ide.internal import (ATA_DEV_ALWAYS_ON, IDE_DMA_READ,
                                   IDE_DMA_TRIM, IDE_DMA_WRITE, IDE_RETRY_DMA,
                                   IDE_RETRY_FLUSH, IDE_RETRY_PIO,
                                   IDE_RETRY_READ, IDE_RETRY_TRIM,
                                   MAX_MULT_SECTORS, READY_STAT, SEEK_STAT,
                                   IDEBus, IDEState)
from gqemu.hw.trace_events import (trace_ide_bus_reset_aio,
                                   trace_ide_cancel_dma_sync_buffered,
                                   trace_ide_reset)

__all__ = ["ide_cancel_dma_sync", "ide_reset", "ide_bus_reset", "ide_restart_bh"]


# ---------------------------------------------------------------- reset

def _orphan(acb: object) -> None:
    """Detach a DMA request from the device being reset -- unless the
    stress tests planted the CVE-2023-5088 bug (``plant.reset_keeps_completion``),
    which lets its completion act on the reset registers."""
    if not plant.reset_keeps_completion:
        dma_blk_orphan(acb)  # type: ignore[arg-type]


def ide_cancel_dma_sync(s: IDEState, orphan_dma: bool = True) -> None:
    """Orphan every buffered read (its callback gets -ECANCELED now) and,
    with ``orphan_dma``, detach the DMA request in flight, whose completion
    is then discarded (a reset must not be acted on by a late completion).
    QEMU: ide_cancel_dma_sync (which drains the DMA instead)."""
    for req in list(s.buffered_requests):
        if not req.orphaned:
            if trace_ide_cancel_dma_sync_buffered.enabled:
                trace_ide_cancel_dma_sync_buffered(req.original_cb, req)
            req.orphaned = True
            req.original_cb(req.original_opaque, -ECANCELED)
    ra = s.ra
    if ra is not None and ra.want >= 0:     # a read-ahead block in flight
        s.ra = None
        ide_sector_read_cb(s, -ECANCELED)
    dma = s.bus.dma
    if orphan_dma and dma.aiocb is not None:
        _orphan(dma.aiocb)
        dma.aiocb = None
        dma.set_inactive(False)


def ide_reset(s: IDEState) -> None:
    """Power-on register state; the request in flight is orphaned first.
    QEMU: ide_reset."""
    if trace_ide_reset.enabled:
        trace_ide_reset(s)
    s.gen += 1
    s.ra = None
    for req in s.buffered_requests:
        req.orphaned = True
    if isinstance(s.pio_aiocb, BlockAIOCB):
        bdrv_aio_cancel_async(s.pio_aiocb)
    s.pio_aiocb = None
    if s.reset_reverts:
        s.reset_reverts = False
        s.heads = s.drive_heads
        s.sectors = s.drive_sectors
    s.mult_sectors = MAX_MULT_SECTORS
    s.feature = s.error = s.nsector = s.sector = s.lcyl = s.hcyl = 0
    s.hob_feature = s.hob_sector = s.hob_nsector = s.hob_lcyl = s.hob_hcyl = 0
    s.select = ATA_DEV_ALWAYS_ON
    s.status = READY_STAT | SEEK_STAT
    s.lba48 = False
    s.io_buffer_index = 0
    s.io_buffer_size = 0
    s.req_nb_sectors = 0
    ide_set_signature(s)
    s.end_transfer_func = ide_dummy_transfer_stop
    ide_dummy_transfer_stop(s)
    s.media_changed = 0


def ide_bus_reset(bus: IDEBus) -> None:
    """Machine reset of a channel: cancel the DMA request first, then reset
    the drives and the DMA engine (the CVE-2023-5088 order).
    QEMU: ide_bus_reset."""
    if bus.dma.aiocb is not None:
        trace_ide_bus_reset_aio()
        _orphan(bus.dma.aiocb)
        bus.dma.aiocb = None
    bus.unit = 0
    bus.cmd = 0
    bus.srst_pending = False
    ide_reset(bus.ifs[0])
    ide_reset(bus.ifs[1])
    ide_clear_hob(bus)
    bus.dma.reset()



# ---------------------------------------------------------------- retry

def ide_restart_bh(opaque: IDEBus) -> None:
    """Reissue the request a ``stop`` error parked, once the VM runs again
    (registered with ``blk_add_resume_handler``).  Context: loop (a BH).
    QEMU: ide_restart_bh."""
    bus = opaque
    error_status = bus.error_status
    if error_status == 0:
        return
    s = idebus_active_if(bus)
    is_read = bool(error_status & IDE_RETRY_READ)
    bus.error_status = 0
    if error_status & IDE_RETRY_DMA:
        from gqemu.hw.ide.dma import ide_dma_cb, ide_start_dma
        ide_set_sector(s, bus.retry_sector_num)
        s.nsector = bus.retry_nsector
        bus.dma.restart_dma()
        s.io_buffer_size = 0
        if error_status & IDE_RETRY_TRIM:
            s.dma_cmd = IDE_DMA_TRIM
        else:
            s.dma_cmd = IDE_DMA_READ if is_read else IDE_DMA_WRITE
        ide_start_dma(s, ide_dma_cb)
    elif error_status & IDE_RETRY_PIO:
        if is_read:
            ide_sector_read(s)
        else:
            ide_sector_write(s)
    elif error_status & IDE_RETRY_FLUSH:
        ide_flush_cache(s)
