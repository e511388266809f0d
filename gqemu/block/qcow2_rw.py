"""qcow2 data-path helpers: reads from the backing file and from compressed
clusters, compressed cluster writes, the copy-on-write merged into an
allocating write, and the "already zero" test used by zero writes.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2.c (qcow2_co_preadv_task, qcow2_co_preadv_compressed,
qcow2_co_pwritev_compressed_task, is_zero), block/qcow2-cluster.c
(perform_cow), block/qcow2-threads.c (qcow2_co_decompress).
"""
from __future__ import annotations

from errno import EIO
import zlib
from typing import Any

from gqemu.coroutine import coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock
from gqemu.block.driver import BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, BLKDBG_EVENT, bdrv_getlength
from gqemu.block.blkdebug_events import (
    BLKDBG_COW_READ, BLKDBG_COW_WRITE, BLKDBG_L2_UPDATE_COMPRESSED, BLKDBG_READ_BACKING_AIO,
    BLKDBG_READ_COMPRESSED, BLKDBG_WRITE_AIO, BLKDBG_WRITE_COMPRESSED)
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwritev
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_add, qemu_iovec_concat,
                              qemu_iovec_from_buf, qemu_iovec_memset, qemu_iovec_slice)
from gqemu.block.qcow2_cache import (
    qcow2_cache_depends_on_flush, qcow2_cache_entry_mark_dirty,
    qcow2_cache_put, qcow2_cache_set_dependency, qcow2_co_pread_file)
from gqemu.block.qcow2_cluster import get_cluster_table
from gqemu.block.qcow2_l2 import get_l2_bitmap, get_l2_entry, set_l2_entry
from gqemu.block.qcow2_header import QCOW_OFLAG_COMPRESSED
from gqemu.block.qcow2_overlap import qcow2_pre_write_overlap_check
from gqemu.block.qcow2_refcount import qcow2_alloc_bytes, qcow2_parse_compressed_l2_entry


@coroutine_fn
def qcow2_co_read_backing(bs: Any, offset: int, cur: int, qiov: QEMUIOVector, done: int) -> int:
    """Unallocated range: the backing file's data (zeroes past its end), or
    zeroes.  QEMU: qcow2_co_preadv_task (UNALLOCATED)."""
    if bs.backing is None:
        qemu_iovec_memset(qiov, done, 0, cur)
        return 0
    blen = bdrv_getlength(bs.backing.bs)
    if blen < 0:
        return blen
    n = max(0, min(cur, blen - offset))
    if n < cur:
        qemu_iovec_memset(qiov, done + n, 0, cur - n)
    if not n:
        return 0
    BLKDBG_EVENT(bs.file, BLKDBG_READ_BACKING_AIO)
    return bdrv_co_preadv(bs.backing, offset, n, qemu_iovec_slice(qiov, done, n), 0)


@coroutine_fn
def qcow2_co_preadv_compressed(bs: Any, l2_entry: int, offset: int, cur: int,
                               qiov: QEMUIOVector, done: int) -> int:
    """Inflate one compressed cluster; it must give exactly one cluster.
    QEMU: qcow2_co_preadv_compressed."""
    s = bs.opaque
    cs = s.cluster_size
    if s.decompressed_offset != l2_entry:
        coffset, csize = qcow2_parse_compressed_l2_entry(s, l2_entry)
        BLKDBG_EVENT(bs.file, BLKDBG_READ_COMPRESSED)
        ret, buf = qcow2_co_pread_file(bs, coffset, csize)
        if ret < 0:
            return ret
        try:
            d = zlib.decompressobj(-12)
            out = d.decompress(bytes(buf), cs)
        except zlib.error:
            return -EIO
        if len(out) != cs:
            return -EIO
        s.decompressed, s.decompressed_offset = out, l2_entry
    oic = offset & (cs - 1)
    qemu_iovec_from_buf(qiov, done, memoryview(s.decompressed)[oic:oic + cur], cur)
    return 0


@coroutine_fn
def qcow2_co_write_compressed_cluster(bs: Any, offset: int, out: bytes) -> int:
    """Allocate bytes, set the compressed L2 entry, write the data.
    QEMU: qcow2_alloc_compressed_cluster_offset + the write."""
    s = bs.opaque
    qemu_co_mutex_lock(s.lock)
    try:
        ret, e, l2_index = get_cluster_table(bs, offset)
        if ret < 0:
            return ret
        old = get_l2_entry(s, e.data, l2_index)
        if old or get_l2_bitmap(s, e.data, l2_index):
            qcow2_cache_put(s.l2_table_cache, e)
            return -EIO
        qcow2_cache_put(s.l2_table_cache, e)
        coff = qcow2_alloc_bytes(bs, len(out))
        if coff < 0:
            return coff
        ret = qcow2_pre_write_overlap_check(bs, 0, coff, len(out))
        if ret < 0:
            return ret
    finally:
        qemu_co_mutex_unlock(s.lock)
    BLKDBG_EVENT(bs.file, BLKDBG_WRITE_COMPRESSED)
    q = QEMUIOVector()
    qemu_iovec_add(q, out)
    ret = bdrv_co_pwritev(bs.file, coff, len(out), q, 0)
    if ret < 0:
        return ret
    qemu_co_mutex_lock(s.lock)
    try:
        nb_csectors = ((coff + len(out) - 1) >> 9) - (coff >> 9)
        entry = QCOW_OFLAG_COMPRESSED | (nb_csectors << s.csize_shift) | coff
        qcow2_cache_depends_on_flush(s.l2_table_cache)
        ret = qcow2_cache_set_dependency(bs, s.l2_table_cache, s.refcount_block_cache)
        if ret < 0:
            return ret
        ret, e, l2_index = get_cluster_table(bs, offset)
        if ret < 0:
            return ret
        BLKDBG_EVENT(bs.file, BLKDBG_L2_UPDATE_COMPRESSED)
        set_l2_entry(s, e.data, l2_index, entry)
        qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
        qcow2_cache_put(s.l2_table_cache, e)
        return 0
    finally:
        qemu_co_mutex_unlock(s.lock)


@coroutine_fn
def qcow2_co_write_with_cow(bs: Any, m: Any, data: QEMUIOVector) -> int:
    """Write the guest data of a new run together with the old contents of
    the rest of its first and last clusters (read through this image), as
    one request.  QEMU: perform_cow merged into the data write."""
    s = bs.opaque
    q = QEMUIOVector()
    start_off, start_n = m.cow_start
    end_off, end_n = m.cow_end
    if start_n:
        head = bytearray(start_n)
        BLKDBG_EVENT(bs.file, BLKDBG_COW_READ)
        ret = s.qcow2_co_preadv(bs, m.offset, start_n, QEMUIOVector([head]), 0)
        if ret < 0:
            return ret
        qemu_iovec_add(q, head)
    qemu_iovec_concat(q, data, 0, data.size)
    if end_n:
        tail = bytearray(end_n)
        BLKDBG_EVENT(bs.file, BLKDBG_COW_READ)
        ret = s.qcow2_co_preadv(bs, m.offset + end_off, end_n, QEMUIOVector([tail]), 0)
        if ret < 0:
            return ret
        qemu_iovec_add(q, tail)
    BLKDBG_EVENT(bs.file, BLKDBG_COW_WRITE if start_n or end_n else BLKDBG_WRITE_AIO)
    return bdrv_co_pwritev(bs.file, m.alloc_offset, q.size, q, 0)


@coroutine_fn
def qcow2_is_zero(bs: Any, offset: int, nbytes: int) -> bool:
    """Whether the range already reads as zeroes (by metadata).
    QEMU: is_zero."""
    s = bs.opaque
    end = min(offset + nbytes, bs.total_sectors * 512)
    while offset < end:
        status, cur, _ = s.qcow2_co_get_block_status(bs, offset, end - offset)
        if status < 0 or cur <= 0:
            return False
        if not status & BDRV_BLOCK_ZERO:
            if status & BDRV_BLOCK_DATA or bs.backing is not None:
                return False
        offset += cur
    return True
