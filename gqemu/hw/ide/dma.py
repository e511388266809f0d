"""IDE DMA commands: ``ide_dma_cb`` drives READ/WRITE DMA chunk by chunk.

Each round commits the chunk that finished (advancing the task file), then
asks the bus's DMA engine to ``prepare_buf`` the next one from the guest's
PRD table and submits it with ``dma_blk_read/write``.  QEMU 7.2's edge
cases: PRDs shorter than the transfer end the command with status 0x50, no
IRQ and the engine inactive; PRDs longer than needed complete it with the
engine left active; an out-of-range LBA is ABRT (``ide_dma_error``).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (ide_dma_cb, ide_sector_start_dma, ide_start_dma;
``ide_set_inactive`` and ``dma_buf_commit`` live in core.py with
``ide_dma_error``, which needs them).
"""
from __future__ import annotations

import errno
from typing import Callable

from gqemu.hw.dma import DMA_DIRECTION_TO_DEVICE, dma_blk_io, dma_blk_read, dma_blk_write
from gqemu.hw.ide.core import (dma_buf_commit, ide_dma_error, ide_get_sector,
                               ide_handle_rw_error, ide_sect_range_ok,
                               ide_set_inactive, ide_set_irq, ide_set_retry,
                               ide_set_sector)
from gqemu.hw.ide.internal import (DRQ_STAT, IDE_DMA_CMD_STR, IDE_DMA_READ, IDE_DMA_TRIM,
                                   IDE_DMA_WRITE, IDE_RETRY_DMA, IDE_RETRY_TRIM,
                                   IDE_RETRY_READ, READY_STAT, SEEK_STAT,
                                   IDEState)
from gqemu.hw.ide.trim import ide_issue_trim
from gqemu.hw.trace_events import trace_ide_dma_cb

__all__ = ["ide_dma_cb", "ide_sector_start_dma", "ide_start_dma",
           "ide_set_inactive", "dma_buf_commit", "ide_dma_cmd_to_retry"]


def ide_dma_cmd_to_retry(dma_cmd: int) -> int:
    """QEMU: ide_dma_cmd_to_retry."""
    if dma_cmd == IDE_DMA_READ:
        return IDE_RETRY_DMA | IDE_RETRY_READ
    if dma_cmd == IDE_DMA_TRIM:
        return IDE_RETRY_DMA | IDE_RETRY_TRIM
    return IDE_RETRY_DMA


def ide_dma_cb(opaque: IDEState, ret: int) -> None:
    """One DMA round: commit the finished chunk, then start the next.

    Context: loop (block completion) or vCPU (the BM START edge).
    QEMU: ide_dma_cb.
    """
    s = opaque
    dma = s.bus.dma
    stay_active = False
    if ret == -errno.EINVAL:
        ide_dma_error(s)
        return
    if ret < 0:
        if ide_handle_rw_error(s, -ret, ide_dma_cmd_to_retry(s.dma_cmd)):
            dma.aiocb = None
            dma_buf_commit(s, 0)
            return
    if s.io_buffer_size > s.nsector * 512:
        n = s.nsector              # PRDs longer than needed: stay active
        stay_active = True
    else:
        n = s.io_buffer_size >> 9
    sector_num = ide_get_sector(s)
    if n > 0:
        dma_buf_commit(s, s.sg.size if s.sg is not None else 0)
        sector_num += n
        ide_set_sector(s, sector_num)
        s.nsector -= n
    if s.nsector == 0:
        s.status = READY_STAT | SEEK_STAT
        ide_set_irq(s.bus)
        ide_set_inactive(s, stay_active)
        return
    n = s.nsector
    s.io_buffer_index = 0
    s.io_buffer_size = n * 512
    prep_size = dma.prepare_buf(s.io_buffer_size)
    if prep_size < n * 512:
        # PRDs too short: an error condition; no IRQ, engine inactive
        s.status = READY_STAT | SEEK_STAT
        dma_buf_commit(s, 0)
        ide_set_inactive(s, stay_active)
        return
    if trace_ide_dma_cb.enabled:
        trace_ide_dma_cb(s, sector_num, n, IDE_DMA_CMD_STR.get(s.dma_cmd, "DMA UNKNOWN CMD"))
    if s.dma_cmd in (IDE_DMA_READ, IDE_DMA_WRITE) and not ide_sect_range_ok(s, sector_num, n):
        ide_dma_error(s)
        return
    offset = sector_num << 9
    if s.dma_cmd == IDE_DMA_READ:
        dma.aiocb = dma_blk_read(s.blk, s.sg, offset, 512, ide_dma_cb, s)
    elif s.dma_cmd == IDE_DMA_WRITE:
        dma.aiocb = dma_blk_write(s.blk, s.sg, offset, 512, ide_dma_cb, s)
    elif s.dma_cmd == IDE_DMA_TRIM:
        dma.aiocb = dma_blk_io(s.blk, s.sg, offset, ide_dma_cb, s, DMA_DIRECTION_TO_DEVICE,
                               ide_issue_trim, s)
    else:
        ide_dma_error(s)


def ide_start_dma(s: IDEState, cb: Callable[[IDEState, int], None]) -> None:
    """QEMU: ide_start_dma."""
    s.io_buffer_index = 0
    ide_set_retry(s)
    s.bus.dma.start_dma(s, cb)


def ide_sector_start_dma(s: IDEState, dma_cmd: int) -> None:
    """Status 0x58 and wait for (or run) the bus master.
    QEMU: ide_sector_start_dma."""
    s.status = READY_STAT | SEEK_STAT | DRQ_STAT
    s.io_buffer_size = 0
    s.dma_cmd = dma_cmd
    ide_start_dma(s, ide_dma_cb)
