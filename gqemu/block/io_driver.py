"""The driver end of a node's request path: the calls into the driver's
slots (``bdrv_driver_preadv``, ``bdrv_driver_pwritev`` with FUA emulated
by a flush, ``bdrv_driver_pwritev_compressed``), zero writes with a
bounce-buffer fallback (``bdrv_co_do_pwrite_zeroes``), copy-on-read
(``bdrv_co_do_copy_on_readv``), and the request checks and buffers that
io.py uses (``bdrv_check_byte_request``, ``qemu_blockalign``).

io.py (padding, read-modify-write, serialising, ``max_transfer``
splitting) sits above this module and re-exports its names.
Must not import: gqemu.block.io, gqemu.block.io_misc, gqemu.hw, gqemu.kvm
or anything above the block layer.
QEMU: block/io.c (2.8).
"""
from __future__ import annotations

import errno
import mmap
from typing import Any, Optional

from gqemu.block.blkdebug_events import BLKDBG_COR_WRITE
from gqemu.block.block_int import BDRV_MAX_LENGTH
from gqemu.block.driver import (BDRV_BLOCK_ALLOCATED, BDRV_O_INACTIVE, BDRV_REQ_FUA,
                                BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK,
                                BDRV_REQ_ZERO_WRITE, BDRV_REQUEST_MAX_BYTES, INT_MAX,
                                BlockDriverState, bdrv_debug_event)
from gqemu.block.io_flush import bdrv_co_flush
from gqemu.block.io_status import bdrv_co_get_block_status
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_concat, qemu_iovec_from_buf,
                              qemu_iovec_init_buf, qemu_iovec_is_zero)
from gqemu.block.trace_events import trace_bdrv_co_do_copy_on_readv
from gqemu.coroutine import coroutine_fn

__all__ = [
    "bdrv_driver_preadv", "bdrv_driver_pwritev", "bdrv_driver_pwritev_compressed",
    "bdrv_co_do_pwrite_zeroes", "bdrv_co_do_copy_on_readv", "bdrv_co_is_allocated",
    "bdrv_get_cluster_size", "bdrv_check_byte_request", "qemu_blockalign",
    "MAX_WRITE_ZEROES_BOUNCE_BUFFER", "MAX_BOUNCE_BUFFER", "NOT_DONE",
]


MAX_WRITE_ZEROES_BOUNCE_BUFFER = 32768 << 9       # 16 MiB, as QEMU
MAX_BOUNCE_BUFFER = MAX_WRITE_ZEROES_BOUNCE_BUFFER  # the copy-on-read chunk
NOT_DONE = 0x7fffffff


def qemu_blockalign(bs: Optional[BlockDriverState], size: int) -> Any:
    """A zeroed buffer; page-aligned when the node needs aligned memory
    (O_DIRECT).  QEMU: qemu_blockalign."""
    if bs is not None and bs.bl.min_mem_alignment > 1 and size:
        return memoryview(mmap.mmap(-1, size))
    return bytearray(size)


def bdrv_check_byte_request(bs: BlockDriverState, offset: int, size: int) -> int:
    """QEMU: bdrv_check_byte_request (no EOF check at this level)."""
    if size > BDRV_REQUEST_MAX_BYTES or size < 0:
        return -errno.EIO
    if bs.drv is None:
        return -errno.ENOMEDIUM
    if offset < 0 or offset > BDRV_MAX_LENGTH - size:
        return -errno.EIO
    return 0



# -------------------------------------------------------------------- read


@coroutine_fn
def bdrv_driver_preadv(bs: BlockDriverState, offset: int, nbytes: int,
                       qiov: QEMUIOVector, flags: int) -> int:
    """Context: coroutine.  Returns: >= 0 or -errno.
    QEMU: bdrv_driver_preadv."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM
    return drv.bdrv_co_preadv(bs, offset, nbytes, qiov, flags)  # type: ignore[misc]


def bdrv_get_cluster_size(bs: BlockDriverState) -> int:
    """The driver's cluster size, else request_alignment.
    QEMU: bdrv_get_cluster_size."""
    drv = bs.drv
    info = drv.bdrv_get_info(bs) if drv is not None and drv.bdrv_get_info is not None else None
    cs = (info or {}).get("cluster_size") or 0
    return max(cs, bs.bl.request_alignment)


@coroutine_fn
def bdrv_co_is_allocated(bs: BlockDriverState, offset: int, nbytes: int) -> tuple[int, int]:
    """``(allocated, pnum)``: whether this node itself holds the first
    ``pnum`` bytes of the range (1), or they come from below (0); -errno.
    pnum is 0 at or past the end.  QEMU: bdrv_is_allocated."""
    status, pnum, _, _ = bdrv_co_get_block_status(bs, offset, nbytes)
    if status < 0:
        return status, 0
    return (1 if status & BDRV_BLOCK_ALLOCATED else 0), pnum


@coroutine_fn
def bdrv_co_do_copy_on_readv(bs: BlockDriverState, offset: int, nbytes: int,
                             qiov: QEMUIOVector) -> int:
    """Walk the request's clusters in chunks of one allocation status:
    read allocated chunks straight into ``qiov``; read the others (at most
    MAX_BOUNCE_BUFFER at a time) into a bounce buffer, write them into this
    node (as zeroes when they are) and hand the caller its slice.  Stops at
    the end of the node.  Context: coroutine.  Returns: 0 or -errno.
    QEMU: bdrv_co_do_copy_on_readv."""
    drv = bs.drv
    assert drv is not None
    max_transfer = min(bs.bl.max_transfer or BDRV_REQUEST_MAX_BYTES, BDRV_REQUEST_MAX_BYTES)
    cs = bdrv_get_cluster_size(bs)
    c_off = offset // cs * cs
    c_bytes = -(-(offset + nbytes) // cs) * cs - c_off
    skip = offset - c_off
    trace_bdrv_co_do_copy_on_readv(bs, offset, nbytes, c_off, c_bytes)
    skip_write = bool(bs.open_flags & BDRV_O_INACTIVE)
    bounce: Any = None
    progress = 0
    while c_bytes:
        if skip_write:
            ret, pnum = 1, min(c_bytes, max_transfer)
        else:
            ret, pnum = bdrv_co_is_allocated(bs, c_off, min(c_bytes, max_transfer))
            if ret < 0:                 # the read will say what is wrong
                pnum = min(c_bytes, max_transfer)
            if ret == 0 and pnum == 0:  # the node ends inside the cluster
                assert progress >= nbytes
                break
            # QEMU 7.2 asserts skip < pnum here and aborts when a status
            # run (a subcluster's, with extended L2) ends before the request
            # starts; gqemu copies that run up like the rest and goes on
        if ret <= 0:
            pnum = min(pnum, MAX_BOUNCE_BUFFER)
            if bounce is None:
                bounce = qemu_blockalign(bs, min(max(pnum, c_bytes - pnum),
                                                 max_transfer, MAX_BOUNCE_BUFFER))
            local = qemu_iovec_init_buf(memoryview(bounce)[:pnum])
            ret = bdrv_driver_preadv(bs, c_off, pnum, local, 0)
            if ret < 0:
                return ret
            bdrv_debug_event(bs, BLKDBG_COR_WRITE)
            if drv.bdrv_co_pwrite_zeroes is not None and qemu_iovec_is_zero(local):
                ret = bdrv_co_do_pwrite_zeroes(bs, c_off, pnum, 0)
            else:
                ret = bdrv_driver_pwritev(bs, c_off, pnum, local, 0)
            if ret < 0:
                return ret
            if pnum > skip:
                qemu_iovec_from_buf(qiov, progress, memoryview(bounce)[skip:pnum],
                                    min(pnum - skip, nbytes - progress))
        elif pnum > skip:
            num = min(pnum - skip, nbytes - progress)
            part = QEMUIOVector()
            qemu_iovec_concat(part, qiov, progress, num)
            ret = bdrv_driver_preadv(bs, offset + progress, num, part, 0)
            if ret < 0:
                return ret
        c_off += pnum
        c_bytes -= pnum
        if pnum > skip:
            progress += pnum - skip
            skip = 0
        else:
            skip -= pnum
    return 0


# ------------------------------------------------------------------- write


@coroutine_fn
def bdrv_driver_pwritev(bs: BlockDriverState, offset: int, nbytes: int,
                        qiov: QEMUIOVector, flags: int) -> int:
    """Pass the supported flags down; emulate FUA with a flush.
    Context: coroutine.  Returns: >= 0 or -errno.
    QEMU: bdrv_driver_pwritev."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM
    supported = bs.supported_write_flags
    ret = drv.bdrv_co_pwritev(bs, offset, nbytes, qiov, flags & supported)  # type: ignore[misc]
    if ret >= 0 and flags & BDRV_REQ_FUA & ~supported:
        ret = bdrv_co_flush(bs)
    return ret


@coroutine_fn
def bdrv_driver_pwritev_compressed(bs: BlockDriverState, offset: int, nbytes: int,
                                   qiov: QEMUIOVector) -> int:
    """Context: coroutine.  Returns: 0, -ENOTSUP without driver support, or
    -errno.  QEMU: bdrv_driver_pwritev_compressed."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM
    if drv.bdrv_co_pwritev_compressed is None:
        return -errno.ENOTSUP
    return drv.bdrv_co_pwritev_compressed(bs, offset, nbytes, qiov)


@coroutine_fn
def bdrv_co_do_pwrite_zeroes(bs: BlockDriverState, offset: int, count: int,
                             flags: int) -> int:
    """Ask the driver to zero the range; on -ENOTSUP write a zeroed bounce
    buffer.  Context: coroutine.  Returns: 0 or -errno.
    QEMU: bdrv_co_do_pwrite_zeroes."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM
    bl = bs.bl
    alignment = max(bl.pwrite_zeroes_alignment, bl.request_alignment)
    max_write_zeroes = min(bl.max_pwrite_zeroes or INT_MAX, INT_MAX)
    max_write_zeroes = max_write_zeroes // alignment * alignment
    max_transfer = min(bl.max_transfer or MAX_WRITE_ZEROES_BOUNCE_BUFFER,
                       MAX_WRITE_ZEROES_BOUNCE_BUFFER)
    head = offset % alignment
    tail = (offset + count) % alignment
    need_flush = False
    buf = None
    ret = 0
    while count > 0:
        num = count
        if head:
            num = min(count, max_transfer, alignment - head)
            head = (head + num) % alignment
        elif tail and num > alignment:
            num -= tail
        if num > max_write_zeroes:
            num = max_write_zeroes
        ret = -errno.ENOTSUP
        if drv.bdrv_co_pwrite_zeroes is not None:
            ret = drv.bdrv_co_pwrite_zeroes(bs, offset, num, flags & bs.supported_zero_flags)
            if ret != -errno.ENOTSUP and flags & BDRV_REQ_FUA and \
                    not bs.supported_zero_flags & BDRV_REQ_FUA:
                need_flush = True
        if ret == -errno.ENOTSUP and flags & BDRV_REQ_NO_FALLBACK:
            return ret                     # the caller asked not to write zeroes
        if ret == -errno.ENOTSUP:
            write_flags = flags & ~(BDRV_REQ_ZERO_WRITE | BDRV_REQ_MAY_UNMAP)
            if flags & BDRV_REQ_FUA and not bs.supported_write_flags & BDRV_REQ_FUA:
                write_flags &= ~BDRV_REQ_FUA
                need_flush = True
            num = min(num, max_transfer)
            if buf is None or len(buf) < num:
                buf = qemu_blockalign(bs, num)
            ret = bdrv_driver_pwritev(bs, offset, num,
                                      qemu_iovec_init_buf(memoryview(buf)[:num]), write_flags)
        if ret < 0:
            return ret
        offset += num
        count -= num
    if need_flush:
        return bdrv_co_flush(bs)
    return 0
