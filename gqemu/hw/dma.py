"""Guest RAM access for devices, scatter/gather lists, and block DMA.

``dma_memory_read/write(as_, addr, buf, length)`` go through the address
space like any access, so they are bounds-checked by construction: the part
of a transfer that falls outside RAM reads 0 and its writes are dropped
(``MEMTX_DECODE_ERROR``), and nothing outside ``buf`` or the RAM
``bytearray`` is touched.

``dma_blk_read/dma_blk_write(blk, sg, offset, cb, opaque)`` move a
``QEMUSGList`` of guest memory to or from the disk through
``blk_aio_preadv/pwritev`` with a bounce buffer: guest RAM is gathered at
submission (writes) and scattered at completion (reads).  ``cb(opaque,
ret)`` runs once from the AioContext.  ``dma_blk_orphan(acb)`` detaches a
request whose device was reset: its completion then writes no guest memory
and calls nobody (the CVE-2023-5088 rule: a late completion must not act on
the reset device).

Must not import: gqemu.kvm or anything above hw.
QEMU: system/dma-helpers.c, include/sysemu/dma.h.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from gqemu.aio import AIOCBInfo, BlockAIOCB, bdrv_aio_cancel_async
from gqemu.block.block_backend import blk_aio_preadv, blk_aio_pwritev
from gqemu.block.qiov import qemu_iovec_init_buf
from gqemu.hw.memory import (MEMTX_DECODE_ERROR, AddressSpace, address_space_read,
                             address_space_write)

__all__ = ["DMA_DIRECTION_TO_DEVICE", "DMA_DIRECTION_FROM_DEVICE",
           "QEMUSGList", "qemu_sglist_init", "qemu_sglist_add",
           "qemu_sglist_destroy", "dma_memory_read", "dma_memory_write",
           "DMAAIOCB", "dma_blk_io", "dma_blk_read", "dma_blk_write",
           "dma_blk_orphan"]

DMA_DIRECTION_TO_DEVICE = 0     # guest memory -> device (a disk write)
DMA_DIRECTION_FROM_DEVICE = 1   # device -> guest memory (a disk read)


def dma_memory_read(as_: AddressSpace, addr: int, buf: Any, length: int) -> int:
    """Copy ``length`` bytes of guest memory at ``addr`` into ``buf``.

    Returns: MEMTX_OK, or MEMTX_DECODE_ERROR if part was not RAM (that part
    reads as the address space's holes do).  QEMU: dma_memory_read.
    """
    if addr < 0 or length < 0:
        return MEMTX_DECODE_ERROR
    return address_space_read(as_, addr, None, buf, length)


def dma_memory_write(as_: AddressSpace, addr: int, buf: Any, length: int) -> int:
    """Copy ``length`` bytes of ``buf`` to guest memory at ``addr``; writes
    outside RAM are dropped.  QEMU: dma_memory_write."""
    if addr < 0 or length < 0:
        return MEMTX_DECODE_ERROR
    return address_space_write(as_, addr, None, buf, length)


class QEMUSGList:
    """Guest-physical ``(base, len)`` pieces and their total ``size``."""

    __slots__ = ("sg", "size", "as_")

    def __init__(self, as_: Optional[AddressSpace]) -> None:
        self.sg: list[tuple[int, int]] = []
        self.size = 0
        self.as_ = as_

    @property
    def nsg(self) -> int:
        return len(self.sg)


def qemu_sglist_init(as_: Optional[AddressSpace], alloc_hint: int = 0) -> QEMUSGList:
    """QEMU: qemu_sglist_init."""
    return QEMUSGList(as_)


def qemu_sglist_add(qsg: QEMUSGList, base: int, length: int) -> None:
    """QEMU: qemu_sglist_add."""
    qsg.sg.append((base, length))
    qsg.size += length


def qemu_sglist_destroy(qsg: QEMUSGList) -> None:
    """QEMU: qemu_sglist_destroy."""
    qsg.sg = []
    qsg.size = 0


class DMAAIOCB(BlockAIOCB):
    """One block DMA request.  QEMU: DMAAIOCB."""

    __slots__ = ("sg", "direction", "bounce", "acb", "orphaned", "done")

    def __init__(self, info: AIOCBInfo, cb: Any, opaque: Any) -> None:
        super().__init__(info, cb, opaque)
        self.sg: Optional[QEMUSGList] = None
        self.direction = DMA_DIRECTION_FROM_DEVICE
        self.bounce: Optional[bytearray] = None
        self.acb: Any = None
        self.orphaned = False
        self.done = False


def dma_aio_cancel(acb: DMAAIOCB) -> None:
    """Cancel the inner request; the callback still runs once.  QEMU: dma_aio_cancel."""
    if acb.acb is not None:
        bdrv_aio_cancel_async(acb.acb)


dma_aiocb_info = AIOCBInfo(cancel_async=dma_aio_cancel)


def dma_blk_cb(opaque: DMAAIOCB, ret: int) -> None:
    """Completion of the block request.  Context: loop.  QEMU: dma_blk_cb."""
    dbs = opaque
    dbs.acb = None
    if dbs.done:
        return
    dbs.done = True
    if dbs.orphaned:
        dbs.bounce = None
        return
    sg = dbs.sg
    if ret >= 0 and dbs.direction == DMA_DIRECTION_FROM_DEVICE and sg is not None:
        mv = memoryview(dbs.bounce)  # type: ignore[arg-type]
        pos = 0
        for base, length in sg.sg:
            dma_memory_write(sg.as_, base, mv[pos:pos + length], length)  # type: ignore[arg-type]
            pos += length
    dbs.bounce = None
    if dbs.cb is not None:
        dbs.cb(dbs.opaque, ret)


def dma_blk_io(blk: Any, sg: QEMUSGList, offset: int,
               cb: Callable[[Any, int], None], opaque: Any,
               direction: int, io_func: Any = None,
               io_func_opaque: Any = None) -> DMAAIOCB:
    """Submit ``sg`` as one block request at byte ``offset``.

    ``io_func(offset, data, cb, cb_opaque, io_func_opaque) -> acb``, if
    given, replaces the write of a TO_DEVICE transfer (TRIM hands its range
    list over this way).
    Context: loop or vCPU (never a worker).  Returns the request handle.
    QEMU: dma_blk_io.
    """
    dbs = DMAAIOCB(dma_aiocb_info, cb, opaque)
    dbs.sg = sg
    dbs.direction = direction
    bounce = bytearray(sg.size)
    dbs.bounce = bounce
    qiov = qemu_iovec_init_buf(bounce)
    if direction == DMA_DIRECTION_TO_DEVICE:
        mv = memoryview(bounce)
        pos = 0
        for base, length in sg.sg:
            dma_memory_read(sg.as_, base, mv[pos:pos + length], length)  # type: ignore[arg-type]
            pos += length
        if io_func is not None:
            dbs.acb = io_func(offset, bounce, dma_blk_cb, dbs, io_func_opaque)
        else:
            dbs.acb = blk_aio_pwritev(blk, offset, qiov, 0, dma_blk_cb, dbs)
    else:
        dbs.acb = blk_aio_preadv(blk, offset, qiov, 0, dma_blk_cb, dbs)
    return dbs


def dma_blk_read(blk: Any, sg: QEMUSGList, offset: int, align: int,
                 cb: Callable[[Any, int], None], opaque: Any) -> DMAAIOCB:
    """Disk -> guest memory.  QEMU: dma_blk_read."""
    return dma_blk_io(blk, sg, offset, cb, opaque, DMA_DIRECTION_FROM_DEVICE)


def dma_blk_write(blk: Any, sg: QEMUSGList, offset: int, align: int,
                  cb: Callable[[Any, int], None], opaque: Any) -> DMAAIOCB:
    """Guest memory -> disk.  QEMU: dma_blk_write."""
    return dma_blk_io(blk, sg, offset, cb, opaque, DMA_DIRECTION_TO_DEVICE)


def dma_blk_orphan(acb: DMAAIOCB) -> None:
    """Detach ``acb``: its completion will write no guest memory and call
    nobody.  Used by device reset (CVE-2023-5088)."""
    acb.orphaned = True
    if acb.acb is not None:
        bdrv_aio_cancel_async(acb.acb)

