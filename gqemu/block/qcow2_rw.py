"""qcow2 data-path helpers: reads from the backing file and from compressed
clusters, compressed cluster writes (with their byte-granular allocation),
the data write of an allocating request (zeroing new clusters instead of
copying zeroes, merging the COW into the data write), and the "already
zero" test used by zero writes.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2.c (qcow2_co_preadv_task, qcow2_co_preadv_compressed,
qcow2_co_pwritev_compressed_task, qcow2_co_pwritev_task, handle_alloc_space,
merge_cow, is_zero), block/qcow2-refcount.c (qcow2_alloc_bytes),
block/qcow2-threads.c (qcow2_co_decompress).
"""
from __future__ import annotations

from errno import EAGAIN, EIO, ENOTSUP


from gqemu.coroutine import coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock
from gqemu.block.driver import (BDRV_BLOCK_ZERO, BDRV_REQ_NO_FALLBACK,
                                BLKDBG_EVENT, bdrv_getlength)
from gqemu.block.blkdebug_events import (
    BLKDBG_CLUSTER_ALLOC_BYTES, BLKDBG_CLUSTER_ALLOC_SPACE, BLKDBG_L2_UPDATE_COMPRESSED,
    BLKDBG_READ_BACKING_AIO, BLKDBG_READ_COMPRESSED, BLKDBG_WRITE_AIO, BLKDBG_WRITE_COMPRESSED)
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwrite_zeroes, bdrv_co_pwritev
from gqemu.block.io_status import bdrv_co_block_status_above
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_add, qemu_iovec_from_buf,
                              qemu_iovec_memset, qemu_iovec_slice)
from gqemu.block.qcow2_link import qcow2_handle_l2meta
from gqemu.block.qcow2_cache import (
    qcow2_cache_entry_mark_dirty, qcow2_cache_put, qcow2_cache_set_dependency)
from gqemu.block.qcow2_cluster import get_cluster_table
from gqemu.block.qcow2_crypto import qcow2_encrypt_qiov
from gqemu.block.qcow2_l2 import get_l2_entry, set_l2_bitmap, set_l2_entry
from gqemu.block.qcow2_header import (L2E_OFFSET_MASK, QCOW_MAX_CLUSTER_OFFSET,
                                      QCOW_OFLAG_COMPRESSED)
from gqemu.block.qcow2_overlap import (
    qcow2_co_pread_file, qcow2_pre_write_overlap_check, qcow2_signal_corruption)
from gqemu.block.qcow2_refcount import (alloc_clusters_noref, qcow2_get_refcount,
                                        qcow2_parse_compressed_l2_entry, update_refcount)
from gqemu.block.qcow2_state import Qcow2BDS
from gqemu.block.qcow2_zstd import qcow2_decompress


@coroutine_fn
def qcow2_co_read_backing(bs: Qcow2BDS, offset: int, cur: int, qiov: QEMUIOVector, done: int) -> int:
    """Unallocated range: the backing file's data (zeroes past its end), or
    zeroes.  QEMU: qcow2_co_preadv_task (UNALLOCATED)."""
    if bs.backing is None:
        qemu_iovec_memset(qiov, done, 0, cur)
        return 0
    BLKDBG_EVENT(bs.file, BLKDBG_READ_BACKING_AIO)
    blen = bdrv_getlength(bs.backing.bs)
    if blen < 0:
        return blen
    n = max(0, min(cur, blen - offset))
    if n < cur:
        qemu_iovec_memset(qiov, done + n, 0, cur - n)
    if not n:
        return 0
    return bdrv_co_preadv(bs.backing, offset, n, qemu_iovec_slice(qiov, done, n), 0)


@coroutine_fn
def qcow2_co_preadv_compressed(bs: Qcow2BDS, l2_entry: int, offset: int, cur: int,
                               qiov: QEMUIOVector, done: int) -> int:
    """Read and inflate one compressed cluster (every time: QEMU 7.2 keeps
    no decompressed cluster, so each read reaches the file, its blkdebug
    rules and errors); it must give exactly one cluster.
    QEMU: qcow2_co_preadv_compressed."""
    s = bs.opaque
    cs = s.cluster_size
    coffset, csize = qcow2_parse_compressed_l2_entry(s, l2_entry)
    BLKDBG_EVENT(bs.file, BLKDBG_READ_COMPRESSED)
    ret, buf = qcow2_co_pread_file(bs, coffset, csize)
    if ret < 0:
        return ret
    out = qcow2_decompress(s.header.compression_type, bytes(buf), cs)
    if out is None:
        return -EIO
    oic = offset & (cs - 1)
    qemu_iovec_from_buf(qiov, done, memoryview(out)[oic:oic + cur], cur)
    return 0


@coroutine_fn
def qcow2_alloc_bytes(bs: Qcow2BDS, size: int) -> int:
    """Byte-granular allocation for compressed clusters.
    Returns: offset or -errno.  QEMU: qcow2_alloc_bytes."""
    s = bs.opaque
    cs = s.cluster_size
    BLKDBG_EVENT(bs.file, BLKDBG_CLUSTER_ALLOC_BYTES)
    offset = s.free_byte_offset
    if offset:
        ret, rc = qcow2_get_refcount(bs, offset >> s.cluster_bits)
        if ret < 0:
            return ret
        if rc == s.refcount_max:
            offset = 0
    free_in_cluster = cs - (offset & (cs - 1))
    while True:
        if not offset or free_in_cluster < size:
            new_cluster = alloc_clusters_noref(bs, cs, min(s.cluster_offset_mask,
                                                           QCOW_MAX_CLUSTER_OFFSET))
            if new_cluster < 0:
                return new_cluster
            if new_cluster == 0:
                qcow2_signal_corruption(bs, True, -1, -1, "Preventing invalid "
                                        "allocation of compressed cluster at offset 0")
                return -EIO
            if not offset or ((offset + cs - 1) & ~(cs - 1)) != new_cluster:
                offset = new_cluster
                free_in_cluster = cs
            else:
                free_in_cluster += cs
        ret = update_refcount(bs, offset, size, 1, False)
        if ret < 0:
            offset = 0
        if ret != -EAGAIN:
            break
    if ret < 0:
        return ret
    ret = qcow2_cache_set_dependency(bs, s.l2_table_cache, s.refcount_block_cache)
    if ret < 0:
        return ret
    s.free_byte_offset = offset + size
    if not s.free_byte_offset & (cs - 1):
        s.free_byte_offset = 0
    return offset


@coroutine_fn
def qcow2_co_write_compressed_cluster(bs: Qcow2BDS, offset: int, out: bytes) -> int:
    """Allocate bytes and set the compressed L2 entry (the cluster must
    have no host offset; a zero or unallocated one is fine, its subcluster
    bitmap becomes 0), then write the data.  As in QEMU the entry is in the
    L2 cache before the data write, so a failed write leaves it pointing at
    unwritten bytes.  QEMU: qcow2_alloc_compressed_cluster_offset +
    qcow2_co_pwritev_compressed_task."""
    s = bs.opaque
    qemu_co_mutex_lock(s.lock)
    try:
        ret, e, l2_index = get_cluster_table(bs, offset)
        if ret < 0:
            return ret
        if get_l2_entry(s, e.data, l2_index) & L2E_OFFSET_MASK:
            qcow2_cache_put(s.l2_table_cache, e)
            return -EIO
        coff = qcow2_alloc_bytes(bs, len(out))
        if coff < 0:
            qcow2_cache_put(s.l2_table_cache, e)
            return coff
        nb_csectors = ((coff + len(out) - 1) >> 9) - (coff >> 9)
        entry = QCOW_OFLAG_COMPRESSED | (nb_csectors << s.csize_shift) | coff
        BLKDBG_EVENT(bs.file, BLKDBG_L2_UPDATE_COMPRESSED)
        qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
        set_l2_entry(s, e.data, l2_index, entry)
        if s.extended_l2:
            set_l2_bitmap(s, e.data, l2_index, 0)
        qcow2_cache_put(s.l2_table_cache, e)
        ret = qcow2_pre_write_overlap_check(bs, 0, coff, len(out))
        if ret < 0:
            return ret
    finally:
        qemu_co_mutex_unlock(s.lock)
    BLKDBG_EVENT(bs.file, BLKDBG_WRITE_COMPRESSED)
    q = QEMUIOVector()
    qemu_iovec_add(q, out)
    ret = bdrv_co_pwritev(bs.file, coff, len(out), q, 0)
    return ret if ret < 0 else 0


@coroutine_fn
def _is_zero_fast(bs: Qcow2BDS, offset: int, nbytes: int) -> int:
    """1 if the range reads as zeroes by one block-status answer through
    the chain (zero clusters, unallocated without a backing file or past
    its end), asking for allocation only (a host file is data), else 0;
    or -errno.  QEMU: bdrv_co_is_zero_fast (want_zero false)."""
    if not nbytes:
        return 1
    ret, pnum = bdrv_co_block_status_above(bs, None, offset, nbytes, want_zero=False)
    if ret < 0:
        return ret
    return int(pnum == nbytes and bool(ret & BDRV_BLOCK_ZERO))


@coroutine_fn
def handle_alloc_space(bs: Qcow2BDS, metas: list) -> int:
    """Where the copy-on-write would only copy zeroes, zero the new clusters
    in the file instead (one write-zeroes request) and skip the COW.
    Returns 0 or -errno.  QEMU: handle_alloc_space."""
    s = bs.opaque
    data_child = bs.file if s.data_file is None else s.data_file
    if not data_child.bs.supported_zero_flags & BDRV_REQ_NO_FALLBACK:
        return 0
    if bs.opaque.crypt_method_header:       # zeroes would not decrypt to zeroes
        return 0
    for m in metas:
        (s_off, s_n), (e_off, e_n) = m.cow_start, m.cow_end
        if not s_n and not e_n:
            continue
        # QEMU: is_zero_cow
        ret = _is_zero_fast(bs, m.offset + s_off, s_n)
        if ret > 0:
            ret = _is_zero_fast(bs, m.offset + e_off, e_n)
        if ret < 0:
            return ret
        if not ret:
            continue
        start = m.alloc_offset + s_off
        nb = e_off + e_n - s_off
        ret = 0 if s.has_data_file else qcow2_pre_write_overlap_check(bs, 0, start, nb)
        if ret < 0:
            return ret
        BLKDBG_EVENT(bs.file, BLKDBG_CLUSTER_ALLOC_SPACE)
        ret = bdrv_co_pwrite_zeroes(data_child, start, nb, BDRV_REQ_NO_FALLBACK)
        if ret < 0:
            if ret not in (-ENOTSUP, -EAGAIN):
                return ret
            continue
        m.skip_cow = True
    return 0


def merge_cow(offset: int, nbytes: int, qiov: QEMUIOVector, metas: list) -> bool:
    """Hand the guest data to the allocation whose COW regions border it, so
    that data and COW go out as one request.  QEMU: merge_cow."""
    for m in metas:
        (s_off, s_n), (e_off, e_n) = m.cow_start, m.cow_end
        if (not s_n and not e_n) or m.skip_cow:
            continue
        if m.offset + s_off + s_n != offset:
            continue
        if m.offset + e_off != offset + nbytes:
            continue
        m.data_qiov = qiov
        return True
    return False


@coroutine_fn
def qcow2_co_pwritev_task(bs: Qcow2BDS, host_offset: int, offset: int, nbytes: int,
                          qiov: QEMUIOVector, metas: list) -> int:
    """Write one contiguous host range: zero new clusters or merge the COW,
    write the data, then link (or on failure free) the allocations.
    Context: coroutine.  Returns 0 or -errno.  QEMU: qcow2_co_pwritev_task."""
    s = bs.opaque
    if s.crypto is not None:
        qiov = qcow2_encrypt_qiov(s, offset, nbytes, qiov)
    ret = handle_alloc_space(bs, metas)
    if ret >= 0 and not merge_cow(offset, nbytes, qiov, metas):
        BLKDBG_EVENT(bs.file, BLKDBG_WRITE_AIO)
        child = bs.file if s.data_file is None else s.data_file
        ret = min(bdrv_co_pwritev(child, host_offset, nbytes, qiov, 0), 0)
    qemu_co_mutex_lock(s.lock)
    if ret >= 0:
        ret = qcow2_handle_l2meta(bs, metas, True)
    qcow2_handle_l2meta(bs, metas, False)
    qemu_co_mutex_unlock(s.lock)
    return ret


@coroutine_fn
def qcow2_is_zero(bs: Qcow2BDS, offset: int, nbytes: int) -> bool:
    """Whether the range already reads as zeroes, by the block status of
    the whole chain (clamped to the image).  QEMU: is_zero."""
    end = min(offset + nbytes, bs.total_sectors * 512)
    while offset < end:
        status, cur = bdrv_co_block_status_above(bs, None, offset, end - offset)
        if status < 0 or cur <= 0 or not status & BDRV_BLOCK_ZERO:
            return False
        offset += cur
    return True
