"""DATA SET MANAGEMENT / TRIM (0x06, feature 1) for the hard disk.

The guest sends a DMA payload of 8-byte ranges (48-bit LBA, 16-bit count);
``ide_issue_trim`` discards them one by one with ``blk_aio_pdiscard`` and
completes once, from a bottom half, with 0 or -EINVAL for a range off the
disk (which ``ide_dma_cb`` turns into ABRT).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (TrimAIOCB, ide_issue_trim, ide_issue_trim_cb, ide_trim_bh_cb).
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from gqemu.aio import AIOCBInfo, BlockAIOCB, aio_bh_schedule_oneshot, bdrv_aio_cancel_async
from gqemu.block.block_backend import blk_aio_pdiscard
from gqemu.hw.ide.core import ide_sect_range_ok
from gqemu.hw.ide.internal import IDEState

__all__ = ["ide_issue_trim", "TrimAIOCB"]


class TrimAIOCB(BlockAIOCB):
    """QEMU: TrimAIOCB."""

    __slots__ = ("s", "ret", "data", "i", "aiocb")

    def __init__(self, info: AIOCBInfo, cb: Any, opaque: Any) -> None:
        super().__init__(info, cb, opaque)
        self.s: Any = None
        self.ret = 0
        self.data = b""
        self.i = -1
        self.aiocb: Any = None


def trim_aio_cancel(acb: TrimAIOCB) -> None:
    """Stop after the range in flight.  QEMU: trim_aio_cancel."""
    acb.i = len(acb.data) // 8
    acb.ret = -errno.ECANCELED
    if acb.aiocb is not None:
        bdrv_aio_cancel_async(acb.aiocb)
        acb.aiocb = None


trim_aiocb_info = AIOCBInfo(cancel_async=trim_aio_cancel)


def ide_trim_bh_cb(iocb: TrimAIOCB) -> None:
    """QEMU: ide_trim_bh_cb."""
    if iocb.cb is not None:
        iocb.cb(iocb.opaque, iocb.ret)


def ide_issue_trim_cb(opaque: TrimAIOCB, ret: int) -> None:
    """Discard the next non-empty range, or finish.  QEMU: ide_issue_trim_cb."""
    iocb = opaque
    s = iocb.s
    iocb.aiocb = None
    if ret >= 0:
        n = len(iocb.data) // 8
        while iocb.i + 1 < n:
            iocb.i += 1
            entry = int.from_bytes(iocb.data[iocb.i * 8:iocb.i * 8 + 8], "little")
            sector = entry & 0x0000FFFFFFFFFFFF
            count = entry >> 48
            if count == 0:
                continue
            if not ide_sect_range_ok(s, sector, count):
                iocb.ret = -errno.EINVAL
                break
            iocb.aiocb = blk_aio_pdiscard(s.blk, sector << 9, count << 9,
                                          ide_issue_trim_cb, iocb)
            return
    else:
        iocb.ret = ret
    aio_bh_schedule_oneshot(s.bus.ctx, ide_trim_bh_cb, iocb)


def ide_issue_trim(offset: int, data: bytes, cb: Callable[[Any, int], None],
                   cb_opaque: Any, opaque: IDEState) -> TrimAIOCB:
    """Start discarding the ranges in ``data`` for drive ``opaque``.
    QEMU: ide_issue_trim."""
    s = opaque
    iocb = TrimAIOCB(trim_aiocb_info, cb, cb_opaque)
    iocb.s = s
    iocb.data = bytes(data)
    ide_issue_trim_cb(iocb, 0)
    return iocb
