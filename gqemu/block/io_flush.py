"""The flush with write generations (bdrv_co_flush) and the in-flight
counter it shares with the read/write path: below both io.py, whose FUA
emulation and zero writes flush, and io_misc.py, so neither imports the
other in a circle.

Must not import: gqemu.block.io, gqemu.block.io_misc, gqemu.hw, gqemu.kvm or
anything above the block layer.
QEMU: block/io.c (2.8): bdrv_co_flush, bdrv_inc_in_flight,
bdrv_dec_in_flight; block/coroutines.h (CoroutineIOCompletion).
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from gqemu.aio import aio_co_wake, aio_notify
from gqemu.block.blkdebug_events import BLKDBG_FLUSH_TO_DISK, BLKDBG_FLUSH_TO_OS
from gqemu.block.driver import (BDRV_O_NO_FLUSH, BLK_PERM_WRITE, BLK_PERM_WRITE_UNCHANGED,
                                BlockDriverState, bdrv_debug_event)
from gqemu.coroutine import (coroutine_fn, qemu_co_queue_next, qemu_co_queue_wait,
                             qemu_coroutine_self, qemu_coroutine_yield)

__all__ = ["CoroutineIOCompletion", "bdrv_co_io_em_complete", "bdrv_co_flush",
           "bdrv_inc_in_flight", "bdrv_dec_in_flight"]


def bdrv_inc_in_flight(bs: BlockDriverState) -> None:
    bs.in_flight += 1


def bdrv_dec_in_flight(bs: BlockDriverState) -> None:
    """QEMU: bdrv_dec_in_flight -> bdrv_wakeup."""
    bs.in_flight -= 1
    if bs.in_flight == 0 and bs.quiesce_counter:
        aio_notify(bs.aio_context)


class CoroutineIOCompletion:
    """QEMU: CoroutineIOCompletion."""

    __slots__ = ("coroutine", "ret")

    def __init__(self, co: Any) -> None:
        self.coroutine = co
        self.ret = -errno.EINPROGRESS


def bdrv_co_io_em_complete(co: CoroutineIOCompletion, ret: int) -> None:
    """Completion of an AIO-style driver call made from a coroutine.
    QEMU: bdrv_co_io_em_complete."""
    co.ret = ret
    aio_co_wake(co.coroutine)


@coroutine_fn
def bdrv_co_flush(bs: Optional[BlockDriverState]) -> int:
    """Flush ``bs`` and then the children it writes to, one flush at a time
    per node, and skip the disk flush when nothing was written since the
    last one.
    Context: coroutine.  Returns: 0 or -errno.  QEMU: bdrv_co_flush."""
    if bs is None or bs.drv is None or bs.read_only:
        return 0
    bs.in_flight += 1
    current_gen = bs.write_gen
    while bs.active_flush_req:
        qemu_co_queue_wait(bs.flush_queue)
    bs.active_flush_req = True
    drv = bs.drv
    ret = 0
    try:
        if drv.bdrv_co_flush is not None:
            ret = drv.bdrv_co_flush(bs)
            return ret
        if bs.file is not None:
            bdrv_debug_event(bs.file.bs, BLKDBG_FLUSH_TO_OS)
        if drv.bdrv_co_flush_to_os is not None:
            ret = drv.bdrv_co_flush_to_os(bs)
            if ret < 0:
                return ret
        if not bs.open_flags & BDRV_O_NO_FLUSH and bs.flushed_gen != current_gen:
            if bs.file is not None:
                bdrv_debug_event(bs.file.bs, BLKDBG_FLUSH_TO_DISK)
            if drv.bdrv_co_flush_to_disk is not None:
                ret = drv.bdrv_co_flush_to_disk(bs)
            elif drv.bdrv_aio_flush is not None:
                co = CoroutineIOCompletion(qemu_coroutine_self())
                acb = drv.bdrv_aio_flush(bs, bdrv_co_io_em_complete, co)
                if acb is None:
                    ret = -errno.EIO
                else:
                    qemu_coroutine_yield()
                    ret = co.ret
            if ret < 0:
                return ret
        # then every child written through (a qcow2 data file too), in
        # QEMU's list order (the newest child first); the first error counts
        ret = 0
        for child in reversed(bs.children):
            if child is bs.file or child.perm & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED):
                r = bdrv_co_flush(child.bs)
                ret = ret or r
        return ret
    finally:
        if ret == 0:
            bs.flushed_gen = current_gen
        bs.active_flush_req = False
        qemu_co_queue_next(bs.flush_queue)
        bdrv_dec_in_flight(bs)
