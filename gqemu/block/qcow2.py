"""The qcow2 format driver: open (every header check of reliability 2.1),
read, allocating write, compressed clusters, zero writes, discard, block
status, flush and close.

The driver instance is the node's state (QEMU's ``BDRVQcow2State``); all
metadata I/O goes through ``bdrv_co_preadv/pwritev(bs.file)``.  Image
creation lives in ``qcow2_create.py``, check and repair in ``qcow2_check.py``.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: block/qcow2.c.
"""
from __future__ import annotations

import errno
import os
import struct
import zlib
from typing import Any, Optional

from gqemu.coroutine import CoMutex, coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock
from gqemu.block.driver import (
    BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO, BDRV_O_CHECK,
    BDRV_O_NO_BACKING, BDRV_O_RDWR, BDRV_REQ_MAY_UNMAP, BlockDriver, BlockError,
    bdrv_attach_child, bdrv_getlength, bdrv_open, bdrv_register, error_report)
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwritev
from gqemu.block.io_misc import _run_co
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_add, qemu_iovec_concat,
                              qemu_iovec_from_buf, qemu_iovec_memset, qemu_iovec_slice,
                              qemu_iovec_to_buf)
from gqemu.block.qcow2_cache import (
    BLKDBG_EVENT, qcow2_cache_create, qcow2_cache_entry_mark_dirty, qcow2_cache_flush,
    qcow2_cache_put, qcow2_cache_set_dependency, qcow2_cache_depends_on_flush,
    qcow2_cache_write, qcow2_co_pread_file)
from gqemu.block.qcow2_cluster import (
    QCOW2_SUBCLUSTER_COMPRESSED, QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
    QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, QCOW2_SUBCLUSTER_ZERO_ALLOC, get_cluster_table,
    get_l2_bitmap, get_l2_entry, qcow2_alloc_cluster_abort, qcow2_alloc_cluster_done,
    qcow2_alloc_cluster_link_l2, qcow2_alloc_host_offset, qcow2_cluster_zeroize,
    qcow2_get_host_offset, set_l2_entry)
from gqemu.block.qcow2_header import (
    DEFAULT_CLUSTER_SIZE, INT_MAX, L1E_SIZE, QCOW2_AUTOCLEAR_MASK, QCOW2_HEADER_SIZE,
    QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DATA_FILE, QCOW2_INCOMPAT_DIRTY,
    QCOW2_INCOMPAT_EXTL2, QCOW2_INCOMPAT_MASK, QCOW2_COMPAT_LAZY_REFCOUNTS,
    QCOW_EXTL2_SUBCLUSTERS_PER_CLUSTER, QCOW_MAGIC_BYTES, QCOW_MAX_L1_SIZE,
    QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_SNAPSHOTS, QCOW_OFLAG_COMPRESSED, Qcow2OpenError,
    qcow2_check_header_fields, qcow2_header_unpack, qcow2_read_extensions,
    qcow2_validate_table, report_unsupported_feature, size_to_l1)
from gqemu.block.qcow2_refcount import (
    QCOW2_OL_CACHED, qcow2_alloc_bytes, qcow2_get_refcount, qcow2_parse_compressed_l2_entry,
    qcow2_pre_write_overlap_check, qcow2_refcount_init, qcow2_write_incompat)
from gqemu.block.qcow2_snapshot import qcow2_read_snapshots

EIO, ENOTSUP = errno.EIO, errno.ENOTSUP
BACKING_CHAIN_MAX = 16
DEFAULT_L2_CACHE_MAX_SIZE = 32 * 1024 * 1024
_CHAIN_KEY = "x-gqemu-backing-chain"


def qcow2_probe(buf: bytes, filename: str) -> int:
    """Score 100 for the magic and version >= 2.  QEMU: qcow2_probe."""
    if len(buf) >= 8 and buf[:4] == QCOW_MAGIC_BYTES and \
            struct.unpack(">I", buf[4:8])[0] >= 2:
        return 100
    return 0


@bdrv_register
class BDRVQcow2State(BlockDriver):
    """bdrv_qcow2: the vtable, and (as an instance) one image's state."""

    format_name = "qcow2"
    supports_backing = True
    create_opts = ("size", "compat", "backing_file", "backing_fmt", "cluster_size",
                   "preallocation", "lazy_refcounts", "refcount_bits", "extended_l2")

    bdrv_probe = staticmethod(qcow2_probe)

    def __init__(self) -> None:
        self.lock = CoMutex()
        self.cluster_allocs: list[Any] = []
        self.snapshots: list[Any] = []
        self.snapshots_offset = self.snapshots_size = self.nb_snapshots = 0
        self.l1_table: list[int] = []
        self.refcount_table: list[int] = []
        self.signaled_corruption = False
        self.disabled = False
        self.read_only = True
        self.free_cluster_index = 0
        self.free_byte_offset = 0
        self.overlap_check = QCOW2_OL_CACHED
        self.decompressed_offset = -1
        self.decompressed = b""
        self.header: Any = None
        self.ext: Any = None
        self.backing_file: Optional[str] = None
        self.backing_format: Optional[str] = None
        self.opened = False
        self.l2_table_cache: Any = None
        self.refcount_block_cache: Any = None

    # ------------------------------------------------------------- open

    def qcow2_open(self, bs: Any, options: dict, flags: int) -> None:
        """Open the image: validate, load L1/reftable/snapshots, open the
        backing chain, repair a dirty image.  Raises BlockError.
        Context: loop (drives the coroutine itself).  QEMU: qcow2_open."""
        chain = options.pop(_CHAIN_KEY, ())
        lazy_opt = options.pop("lazy-refcounts", None)
        ovl = options.pop("overlap-check", None)
        if ovl is not None:
            from gqemu.block.qcow2_refcount import QCOW2_OL_ALL, QCOW2_OL_CONSTANT
            modes = {"none": 0, "constant": QCOW2_OL_CONSTANT, "cached": QCOW2_OL_CACHED,
                     "all": QCOW2_OL_ALL}
            if ovl not in modes:
                raise BlockError(errno.EINVAL, "Unsupported value '%s' for qcow2 option "
                                 "'overlap-check'. Allowed are any of the following: "
                                 "none, constant, cached, all" % ovl)
            self.overlap_check = modes[ovl]
        self.read_only = not flags & BDRV_O_RDWR
        self.flags = flags
        ret = _run_co(bs, qcow2_do_open, bs, flags)
        if isinstance(ret, Qcow2OpenError):
            raise BlockError(ret.errno, ret.msg)
        if lazy_opt is not None:
            self.use_lazy_refcounts = str(lazy_opt) in ("on", "true")
        bs.total_sectors = self.size // 512
        if self.backing_file and not flags & BDRV_O_NO_BACKING:
            qcow2_open_backing(bs, self, flags, chain)
        if not self.read_only and self.incompatible_features & QCOW2_INCOMPAT_DIRTY \
                and not flags & BDRV_O_CHECK:
            from gqemu.block.qcow2_check import qcow2_co_check
            res = _run_co(bs, qcow2_co_check, bs, 3)
            if res.ret < 0 or res.check_errors:
                raise BlockError(errno.EIO, "Could not repair dirty image: %s"
                                 % os.strerror(-res.ret if res.ret < 0 else EIO))
        bs.supported_zero_flags = BDRV_REQ_MAY_UNMAP
        self.opened = True

    bdrv_open = qcow2_open

    def qcow2_close(self, bs: Any) -> None:
        """Write back the caches and clear the dirty bit.  QEMU: qcow2_close."""
        if self.opened and not self.read_only and not self.disabled:
            _run_co(bs, qcow2_inactivate, bs)

    bdrv_close = qcow2_close

    def qcow2_getlength(self, bs: Any) -> int:
        return bs.total_sectors * 512

    bdrv_getlength = qcow2_getlength

    def qcow2_refresh_limits(self, bs: Any) -> None:
        """QEMU: qcow2_refresh_limits."""
        bs.bl.request_alignment = 1
        bs.bl.pdiscard_alignment = self.cluster_size
        bs.bl.pwrite_zeroes_alignment = self.cluster_size

    bdrv_refresh_limits = qcow2_refresh_limits

    def qcow2_get_info(self, bs: Any) -> dict:
        """QEMU: qcow2_get_info."""
        return {"cluster_size": self.cluster_size,
                "vm_state_offset": self.l1_vm_state_index << (self.cluster_bits + self.l2_bits)}

    bdrv_get_info = qcow2_get_info

    def qcow2_get_specific_info(self, bs: Any) -> dict:
        """The "Format specific information" of qemu-img/qemu-io info, in
        QEMU's print order.  QEMU: qcow2_get_specific_info."""
        info: dict = {"compat": "0.10" if self.qcow_version < 3 else "1.1",
                      "compression type": "zlib"}
        if self.qcow_version >= 3:
            info["lazy refcounts"] = bool(self.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS)
        info["refcount bits"] = self.refcount_bits
        if self.qcow_version >= 3:
            info["corrupt"] = bool(self.incompatible_features & QCOW2_INCOMPAT_CORRUPT)
            info["extended l2"] = self.extended_l2
        return info

    bdrv_get_specific_info = qcow2_get_specific_info

    def qcow2_has_zero_init(self, bs: Any) -> int:
        return 0 if bs.backing is not None else 1

    bdrv_has_zero_init = qcow2_has_zero_init

    # ------------------------------------------------------------ reads

    @coroutine_fn
    def qcow2_co_preadv(self, bs: Any, offset: int, nbytes: int,
                        qiov: QEMUIOVector, flags: int) -> int:
        """Read guest data: map each run under the lock, then read it from
        the file, the backing file, a compressed cluster, or zeroes.
        Context: coroutine.  Returns: 0 or -errno.  QEMU: qcow2_co_preadv_part."""
        s = self
        done = 0
        while nbytes:
            if s.disabled:
                return -EIO
            qemu_co_mutex_lock(s.lock)
            ret, t, cur, host = qcow2_get_host_offset(bs, offset, nbytes)
            qemu_co_mutex_unlock(s.lock)
            if ret < 0:
                return ret
            if t == QCOW2_SUBCLUSTER_NORMAL:
                BLKDBG_EVENT(bs.file, "read_aio")
                ret = bdrv_co_preadv(bs.file, host, cur, qemu_iovec_slice(qiov, done, cur), 0)
            elif t in (QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC):
                ret = qcow2_co_read_backing(bs, offset, cur, qiov, done)
            elif t == QCOW2_SUBCLUSTER_COMPRESSED:
                ret = qcow2_co_preadv_compressed(bs, host, offset, cur, qiov, done)
            else:
                qemu_iovec_memset(qiov, done, 0, cur)
                ret = 0
            if ret < 0:
                return ret
            offset += cur
            nbytes -= cur
            done += cur
        return 0

    bdrv_co_preadv = qcow2_co_preadv

    # ----------------------------------------------------------- writes

    @coroutine_fn
    def qcow2_co_pwritev(self, bs: Any, offset: int, nbytes: int,
                         qiov: QEMUIOVector, flags: int) -> int:
        """Allocating write: map or allocate under the lock, write the data
        (with its copy-on-write head and tail in one request), then link
        the new clusters into L2.  Context: coroutine.  Returns: 0 or -errno.
        QEMU: qcow2_co_pwritev_part / qcow2_co_pwritev_task."""
        s = self
        done = 0
        while nbytes:
            if s.disabled:
                return -EIO
            qemu_co_mutex_lock(s.lock)
            ret, cur, host, m = qcow2_alloc_host_offset(bs, offset, nbytes)
            if ret >= 0:
                if m is None:
                    ret = qcow2_pre_write_overlap_check(bs, 0, host, cur)
                else:
                    ret = qcow2_pre_write_overlap_check(bs, 0, m.alloc_offset,
                                                        m.nb_clusters << s.cluster_bits)
                    if ret < 0:
                        qcow2_alloc_cluster_done(bs, m)
            qemu_co_mutex_unlock(s.lock)
            if ret < 0:
                return ret
            data = qemu_iovec_slice(qiov, done, cur)
            if m is None:
                BLKDBG_EVENT(bs.file, "write_aio")
                ret = bdrv_co_pwritev(bs.file, host, cur, data, 0)
            else:
                ret = qcow2_co_write_with_cow(bs, m, data)
                qemu_co_mutex_lock(s.lock)
                if ret >= 0:
                    ret = qcow2_alloc_cluster_link_l2(bs, m)
                if ret < 0:
                    qcow2_alloc_cluster_abort(bs, m)
                qcow2_alloc_cluster_done(bs, m)
                qemu_co_mutex_unlock(s.lock)
            if ret < 0:
                return ret
            offset += cur
            nbytes -= cur
            done += cur
        return 0

    bdrv_co_pwritev = qcow2_co_pwritev

    @coroutine_fn
    def qcow2_co_pwritev_compressed(self, bs: Any, offset: int, nbytes: int,
                                    qiov: QEMUIOVector) -> int:
        """Write whole clusters compressed (raw deflate, window bits -12);
        the target must be unallocated.  Context: coroutine.
        QEMU: qcow2_co_pwritev_compressed_part."""
        s = self
        cs = s.cluster_size
        if offset & (cs - 1):
            return -errno.EINVAL
        done = 0
        while done < nbytes:
            cur = min(cs, nbytes - done)
            if cur < cs and offset + cur != bs.total_sectors * 512:
                return -errno.EINVAL
            buf = bytearray(cs)
            qemu_iovec_to_buf(qiov, done, buf, cur)
            comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
            out = comp.compress(bytes(buf)) + comp.flush()
            if len(out) >= cs:
                ret = s.qcow2_co_pwritev(bs, offset, cur, qemu_iovec_slice(qiov, done, cur), 0)
            else:
                ret = qcow2_co_write_compressed_cluster(bs, offset, out)
            if ret < 0:
                return ret
            done += cur
            offset += cur
        return 0

    bdrv_co_pwritev_compressed = qcow2_co_pwritev_compressed

    @coroutine_fn
    def qcow2_co_pwrite_zeroes(self, bs: Any, offset: int, nbytes: int, flags: int) -> int:
        """v3: zero flags for whole (sub)clusters; anything else falls back
        to a normal write (-ENOTSUP).  QEMU: qcow2_co_pwrite_zeroes."""
        s = self
        if s.qcow_version < 3:
            return -ENOTSUP
        cs = s.cluster_size
        end = offset + nbytes
        if (offset | end) & (cs - 1):
            start = offset & ~(cs - 1)
            if end - start > cs:
                return -ENOTSUP
            if start == offset and end == bs.total_sectors * 512:
                nbytes = cs                       # the partial cluster at EOF
            elif qcow2_is_zero(bs, start, cs):
                return 0
            else:
                return -ENOTSUP
        qemu_co_mutex_lock(s.lock)
        ret = qcow2_cluster_zeroize(bs, offset, nbytes, False)
        qemu_co_mutex_unlock(s.lock)
        return ret

    bdrv_co_pwrite_zeroes = qcow2_co_pwrite_zeroes

    @coroutine_fn
    def qcow2_co_pdiscard(self, bs: Any, offset: int, nbytes: int) -> int:
        """Discard whole clusters.  QEMU: qcow2_co_pdiscard."""
        s = self
        cs = s.cluster_size
        start = (offset + cs - 1) & ~(cs - 1)
        end = (offset + nbytes) & ~(cs - 1)
        if offset + nbytes == bs.total_sectors * 512:
            end = (offset + nbytes + cs - 1) & ~(cs - 1)
        if end <= start:
            return 0
        qemu_co_mutex_lock(s.lock)
        ret = qcow2_cluster_zeroize(bs, start, end - start, True)
        qemu_co_mutex_unlock(s.lock)
        return ret

    bdrv_co_pdiscard = qcow2_co_pdiscard

    @coroutine_fn
    def qcow2_co_flush_to_os(self, bs: Any) -> int:
        """Write back the L2 cache, then the refcount cache (unless lazy).
        QEMU: qcow2_co_flush_to_os / qcow2_write_caches."""
        if self.disabled or self.read_only:
            return 0
        qemu_co_mutex_lock(self.lock)
        ret = qcow2_cache_write(bs, self.l2_table_cache)
        if ret >= 0 and not self.use_lazy_refcounts:
            ret = qcow2_cache_write(bs, self.refcount_block_cache)
        qemu_co_mutex_unlock(self.lock)
        return ret

    bdrv_co_flush_to_os = qcow2_co_flush_to_os

    @coroutine_fn
    def qcow2_co_get_block_status(self, bs: Any, offset: int, nbytes: int) -> tuple[int, int, Any]:
        """(BDRV_BLOCK_* | host offset, bytes, file node).
        QEMU: qcow2_co_block_status."""
        qemu_co_mutex_lock(self.lock)
        ret, t, cur, host = qcow2_get_host_offset(bs, offset, nbytes)
        qemu_co_mutex_unlock(self.lock)
        if ret < 0:
            return ret, 0, None
        status, f = 0, None
        if t in (QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_ZERO_ALLOC,
                 QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC):
            status |= BDRV_BLOCK_OFFSET_VALID | host
            f = bs.file.bs
        if t in (QCOW2_SUBCLUSTER_ZERO_ALLOC, 2):
            status |= BDRV_BLOCK_ZERO
        elif t in (QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_COMPRESSED):
            status |= BDRV_BLOCK_DATA
        return status, cur, f

    bdrv_co_get_block_status = qcow2_co_get_block_status


# ------------------------------------------------------------------ helpers


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
    BLKDBG_EVENT(bs.file, "read_backing_aio")
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
        BLKDBG_EVENT(bs.file, "read_compressed")
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
    BLKDBG_EVENT(bs.file, "write_compressed")
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
        BLKDBG_EVENT(bs.file, "l2_update_compressed")
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
        BLKDBG_EVENT(bs.file, "cow_read")
        ret = s.qcow2_co_preadv(bs, m.offset, start_n, QEMUIOVector([head]), 0)
        if ret < 0:
            return ret
        qemu_iovec_add(q, head)
    qemu_iovec_concat(q, data, 0, data.size)
    if end_n:
        tail = bytearray(end_n)
        BLKDBG_EVENT(bs.file, "cow_read")
        ret = s.qcow2_co_preadv(bs, m.offset + end_off, end_n, QEMUIOVector([tail]), 0)
        if ret < 0:
            return ret
        qemu_iovec_add(q, tail)
    BLKDBG_EVENT(bs.file, "cow_write" if start_n or end_n else "write_aio")
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


@coroutine_fn
def qcow2_inactivate(bs: Any) -> int:
    """Flush both caches and mark the image clean.  QEMU: qcow2_inactivate."""
    s = bs.opaque
    ret = qcow2_cache_flush(bs, s.l2_table_cache)
    if ret < 0:
        error_report("Failed to flush the L2 table cache: %s" % os.strerror(-ret))
        return ret
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret < 0:
        error_report("Failed to flush the refcount block cache: %s" % os.strerror(-ret))
        return ret
    return qcow2_mark_clean(bs)


@coroutine_fn
def qcow2_mark_clean(bs: Any) -> int:
    """Clear the dirty bit.  QEMU: qcow2_mark_clean."""
    s = bs.opaque
    if s.incompatible_features & QCOW2_INCOMPAT_DIRTY:
        s.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY
        return qcow2_write_incompat(bs)
    return 0


@coroutine_fn
def qcow2_do_open(bs: Any, flags: int) -> Optional[Qcow2OpenError]:
    """The checks and loads of qcow2_do_open, in QEMU's order.
    Returns: None, or the Qcow2OpenError to raise.  QEMU: qcow2_do_open."""
    try:
        _qcow2_do_open(bs, flags)
    except Qcow2OpenError as e:
        return e
    return None


@coroutine_fn
def _qcow2_do_open(bs: Any, flags: int) -> None:
    s = bs.opaque
    ret, buf = qcow2_co_pread_file(bs, 0, QCOW2_HEADER_SIZE)
    if ret < 0:
        raise Qcow2OpenError(-ret, "Could not read qcow2 header: %s" % os.strerror(-ret))
    h = qcow2_header_unpack(buf)
    qcow2_check_header_fields(h)
    s.header = h
    s.qcow_version = h.version
    s.cluster_bits = cb = h.cluster_bits
    s.cluster_size = cs = 1 << cb
    ext_end = h.backing_file_offset or cs
    ret, cluster0 = qcow2_co_pread_file(bs, 0, cs)
    if ret < 0:
        raise Qcow2OpenError(-ret, "Could not read qcow2 header: %s" % os.strerror(-ret))
    s.unknown_header_fields = bytes(cluster0[QCOW2_HEADER_SIZE:h.header_length]) \
        if h.header_length > QCOW2_HEADER_SIZE else b""
    s.incompatible_features = h.incompatible_features
    s.compatible_features = h.compatible_features
    s.autoclear_features = h.autoclear_features
    if s.incompatible_features & ~QCOW2_INCOMPAT_MASK:
        try:
            table = qcow2_read_extensions(cluster0, h.header_length, ext_end).feature_table
        except Qcow2OpenError:
            table = None
        raise Qcow2OpenError(ENOTSUP, report_unsupported_feature(
            table, s.incompatible_features & ~QCOW2_INCOMPAT_MASK))
    if s.incompatible_features & QCOW2_INCOMPAT_CORRUPT and flags & BDRV_O_RDWR \
            and not flags & BDRV_O_CHECK:
        raise Qcow2OpenError(errno.EACCES, "qcow2: Image is corrupt; cannot be opened read/write")
    s.extended_l2 = bool(s.incompatible_features & QCOW2_INCOMPAT_EXTL2)
    s.subclusters_per_cluster = QCOW_EXTL2_SUBCLUSTERS_PER_CLUSTER if s.extended_l2 else 1
    s.subcluster_size = cs // s.subclusters_per_cluster
    s.subcluster_bits = s.subcluster_size.bit_length() - 1
    if s.subcluster_size < 512:
        raise Qcow2OpenError(errno.EINVAL, "Unsupported subcluster size: %d" % s.subcluster_size)
    if h.refcount_order > 6:
        raise Qcow2OpenError(errno.EINVAL, "Reference count entry width too large; "
                             "may not exceed 64 bits")
    s.refcount_order = h.refcount_order
    s.refcount_bits = 1 << h.refcount_order
    s.refcount_max = (1 << s.refcount_bits) - 1
    if h.crypt_method:
        raise Qcow2OpenError(errno.EINVAL, "Unsupported encryption method %d" % h.crypt_method
                             if h.crypt_method > 2 else
                             "Parameter 'encrypt.key-secret' is required for cipher")
    s.l2_entry_size = 16 if s.extended_l2 else 8
    s.l2_bits = cb - (4 if s.extended_l2 else 3)
    s.l2_size = 1 << s.l2_bits
    s.refcount_block_bits = cb - (s.refcount_order - 3)
    s.refcount_block_size = 1 << s.refcount_block_bits
    s.size = h.size
    s.csize_shift = 62 - (cb - 8)
    s.csize_mask = (1 << (cb - 8)) - 1
    s.cluster_offset_mask = (1 << s.csize_shift) - 1
    s.refcount_table_offset = h.refcount_table_offset
    s.refcount_table_size = h.refcount_table_clusters << (cb - 3)
    if h.refcount_table_clusters == 0 and not flags & BDRV_O_CHECK:
        raise Qcow2OpenError(errno.EINVAL, "Image does not contain a reference count table")
    qcow2_validate_table(h.refcount_table_offset, h.refcount_table_clusters, cs,
                         QCOW_MAX_REFTABLE_SIZE, cs, "Reference count table")
    if not flags & BDRV_O_CHECK:
        qcow2_validate_table(h.snapshots_offset, h.nb_snapshots, 40, 40 * QCOW_MAX_SNAPSHOTS,
                             cs, "Snapshot table")
    qcow2_validate_table(h.l1_table_offset, h.l1_size, L1E_SIZE, QCOW_MAX_L1_SIZE, cs,
                         "Active L1 table")
    s.l1_size = h.l1_size
    s.l1_table_offset = h.l1_table_offset
    s.l1_vm_state_index = size_to_l1(cb, s.l2_bits, h.size)
    if s.l1_vm_state_index > INT_MAX:
        raise Qcow2OpenError(errno.EFBIG, "Image is too big")
    if s.l1_size < s.l1_vm_state_index:
        raise Qcow2OpenError(errno.EINVAL, "L1 table is too small")
    if s.l1_size:
        ret, l1 = qcow2_co_pread_file(bs, s.l1_table_offset, s.l1_size * 8)
        if ret < 0:
            raise Qcow2OpenError(-ret, "Could not read L1 table: %s" % os.strerror(-ret))
        s.l1_table = list(struct.unpack(">%dQ" % s.l1_size, l1))
    l2_cache = max(2, min(DEFAULT_L2_CACHE_MAX_SIZE // cs, s.l1_vm_state_index + 1))
    s.l2_table_cache = qcow2_cache_create(bs, l2_cache, cs, "l2")
    s.refcount_block_cache = qcow2_cache_create(bs, 4, cs, "refcount")
    ret = qcow2_refcount_init(bs)
    if ret < 0:
        raise Qcow2OpenError(-ret, "Could not initialize refcount handling: %s"
                             % os.strerror(-ret))
    s.ext = ext = qcow2_read_extensions(cluster0, h.header_length, ext_end)
    if s.incompatible_features & QCOW2_INCOMPAT_DATA_FILE:
        if ext.has_data_file:
            raise Qcow2OpenError(ENOTSUP, "External data files are not supported")
        raise Qcow2OpenError(errno.EINVAL, "'data-file' is required for this image")
    if ext.has_crypto:
        raise Qcow2OpenError(errno.EINVAL, "Parameter 'encrypt.key-secret' is required "
                             "for cipher")
    s.backing_format = ext.backing_format
    if h.backing_file_offset:
        n = h.backing_file_size
        if n > min(1023, cs - h.backing_file_offset):
            raise Qcow2OpenError(errno.EINVAL, "Backing file name too long")
        s.backing_file = bytes(cluster0[h.backing_file_offset:h.backing_file_offset + n]
                               ).decode("utf-8", "replace")
    s.nb_snapshots = h.nb_snapshots
    s.snapshots_offset = h.snapshots_offset
    s.snapshots = qcow2_read_snapshots(bs, h.nb_snapshots, h.snapshots_offset)
    s.use_lazy_refcounts = bool(s.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS)
    if s.autoclear_features & ~QCOW2_AUTOCLEAR_MASK and not s.read_only:
        s.autoclear_features &= QCOW2_AUTOCLEAR_MASK
        from gqemu.block.qcow2_cache import qcow2_co_pwrite_file, qcow2_co_flush_file
        if s.qcow_version >= 3:
            qcow2_co_pwrite_file(bs, 88, struct.pack(">Q", s.autoclear_features))
            qcow2_co_flush_file(bs)


def qcow2_open_backing(bs: Any, s: BDRVQcow2State, flags: int, chain: tuple) -> None:
    """Open the backing file read-only: its name relative to the image's
    folder, its format from the header extension; refuse loops, chains
    deeper than 16, and unnamed formats that would probe as raw.
    QEMU: bdrv_open_backing_file (block.c)."""
    name = s.backing_file or ""
    if name.startswith("json:") or ":" in name.split("/")[0]:
        raise BlockError(errno.EINVAL, "Backing file name '%s' is not a plain file name" % name)
    base_dir = os.path.dirname(bs.filename)
    path = name if os.path.isabs(name) or not base_dir else os.path.join(base_dir, name)
    me = os.path.realpath(bs.filename)
    target = os.path.realpath(path)
    chain = tuple(chain) + (me,)
    if target in chain:
        raise BlockError(errno.EINVAL, "Backing file '%s' creates an infinite loop" % name)
    if len(chain) > BACKING_CHAIN_MAX:
        raise BlockError(errno.EINVAL, "Backing chain of '%s' is longer than %d"
                         % (bs.filename, BACKING_CHAIN_MAX))
    fmt = s.backing_format
    opts: dict = {}
    if fmt is None:
        try:
            with open(path, "rb") as f:
                head = f.read(512)
        except OSError as e:
            raise BlockError(e.errno or errno.ENOENT, "Could not open backing file: "
                             "Could not open '%s': %s" % (path, e.strerror))
        if qcow2_probe(head, path) != 100:
            raise BlockError(errno.EINVAL, "Backing file '%s' has no backing format and "
                             "would be probed as raw; refusing (set backing_fmt)" % name)
        fmt = "qcow2"
    if fmt == "qcow2":
        opts[_CHAIN_KEY] = chain
    opts["format"] = fmt
    try:
        child = bdrv_open(path, opts, flags & ~BDRV_O_RDWR & ~BDRV_O_CHECK)
    except BlockError as e:
        raise BlockError(e.errno, "Could not open backing file: %s" % e.msg)
    bs.backing = bdrv_attach_child(bs, child, "backing")


def _unused() -> None:
    _ = (DEFAULT_CLUSTER_SIZE, qcow2_get_refcount, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC)
