"""The ``qcow`` format's per-image state and cluster lookup: the header
constants, ``QcowState`` (the fields of one open image, its L2 table cache
and one-cluster decompression cache) with ``get_cluster_offset`` (which
allocates L2 tables and clusters at the end of the file) and
``decompress_cluster``.  The driver (``qcow.BDRVQcowState``: open, the
vtable, reads and writes) derives from ``QcowState`` and sits above this
module.

Must not import: gqemu.block.qcow, gqemu.hw, gqemu.kvm or anything above
the block layer.
QEMU: block/qcow.c (7.2): BDRVQcowState, get_cluster_offset,
decompress_cluster, decompress_buffer.
"""
from __future__ import annotations

import errno
import struct
import zlib
from typing import Any, Optional

from gqemu.block.driver import BlockDriver, BlockDriverState, bdrv_getlength
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwritev
from gqemu.block.io_flush import bdrv_co_flush
from gqemu.block.qiov import qemu_iovec_init_buf
from gqemu.coroutine import CoMutex, coroutine_fn

QCOW_MAGIC = 0x514649FB
QCOW_VERSION = 1
QCOW_CRYPT_AES = 1
QCOW_OFLAG_COMPRESSED = 1 << 63
HEADER = struct.Struct(">IIQIIQBBHIQ")          # QCowHeader, 48 bytes
INT_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
U64 = (1 << 64) - 1


def _inflate(data: bytes, out_size: int) -> Optional[bytes]:
    """Raw deflate of a whole cluster, or None (QEMU: decompress_buffer:
    the output must fill the cluster exactly)."""
    d = zlib.decompressobj(-12)
    try:
        out = d.decompress(data, out_size)
    except zlib.error:
        return None
    return out if len(out) == out_size else None


class QcowState(BlockDriver):
    """The fields of one open qcow image.  QEMU: BDRVQcowState."""

    def __init__(self) -> None:
        self.cluster_bits = self.cluster_size = self.l2_bits = self.l2_size = 0
        self.l1_table: list[int] = []
        self.l1_table_offset = 0
        self.cluster_offset_mask = 0
        self.l2_cache: dict[int, list[int]] = {}
        self.cluster_cache: Optional[bytes] = None
        self.cluster_cache_offset = -1
        self.backing_file: Optional[str] = None
        self.backing_format: Optional[str] = None
        self.lock = CoMutex()

    # ----------------------------------------------------------- lookup

    @coroutine_fn
    def _file_end(self, bs: BlockDriverState) -> int:
        """The file's end rounded up to a cluster, or -errno."""
        end = bdrv_getlength(bs.file.bs)  # type: ignore[union-attr]
        if end < 0:
            return end
        end = -(-end // self.cluster_size) * self.cluster_size
        return end if end + self.cluster_size <= INT64_MAX else -errno.E2BIG

    @coroutine_fn
    def _file_io(self, bs: BlockDriverState, offset: int, buf: Any, is_write: bool) -> int:
        if offset < 0 or offset + len(buf) > INT64_MAX:
            return -errno.EIO
        qiov = qemu_iovec_init_buf(buf)
        fn = bdrv_co_pwritev if is_write else bdrv_co_preadv
        ret = fn(bs.file, offset, len(buf), qiov, 0)  # type: ignore[arg-type]
        return min(ret, 0)

    @coroutine_fn
    def _l2_table(self, bs: BlockDriverState, l2_offset: int, new: bool) -> tuple[int, list]:
        table = self.l2_cache.get(l2_offset)
        if table is not None:
            return 0, table
        buf = bytearray(self.l2_size * 8)
        ret = self._file_io(bs, l2_offset, buf, new)
        if ret < 0:
            return ret, []
        table = list(struct.unpack(">%dQ" % self.l2_size, buf))
        if len(self.l2_cache) >= 16:            # QEMU: L2_CACHE_SIZE tables
            self.l2_cache.pop(next(iter(self.l2_cache)))
        self.l2_cache[l2_offset] = table
        return 0, table

    @coroutine_fn
    def get_cluster_offset(self, bs: BlockDriverState, offset: int, allocate: int,
                           n_start: int = 0, n_end: int = 0,
                           compressed_size: int = 0) -> tuple[int, int]:
        """(ret, cluster entry): ret 0 not allocated, 1 found, -errno.
        ``allocate`` 1: an L2 table or cluster is added at the end of the
        file; 2: a compressed cluster of ``compressed_size`` bytes is put at
        the (unaligned) end of the file.  QEMU: get_cluster_offset."""
        l1_index = offset >> (self.l2_bits + self.cluster_bits)
        l2_offset = self.l1_table[l1_index]
        new = False
        if not l2_offset:
            if not allocate:
                return 0, 0
            l2_offset = self._file_end(bs)
            if l2_offset < 0:
                return l2_offset, 0
            self.l1_table[l1_index] = l2_offset
            ret = self._file_io(bs, self.l1_table_offset + 8 * l1_index,
                                struct.pack(">Q", l2_offset), True)
            if ret == 0:
                ret = bdrv_co_flush(bs.file.bs)  # type: ignore[union-attr]
            if ret < 0:
                return ret, 0
            new = True
        ret, table = self._l2_table(bs, l2_offset, new)
        if ret < 0:
            return ret, 0
        l2_index = (offset >> self.cluster_bits) & (self.l2_size - 1)
        entry = table[l2_index]
        if entry and not (entry & QCOW_OFLAG_COMPRESSED and allocate == 1):
            return 1, entry
        if not allocate:
            return 0, 0
        if allocate == 2:
            end = bdrv_getlength(bs.file.bs)  # type: ignore[union-attr]
            if end < 0:
                return end, 0
            new_off = (end | QCOW_OFLAG_COMPRESSED
                       | compressed_size << (63 - self.cluster_bits)) & U64
            ret = 0
        elif entry & QCOW_OFLAG_COMPRESSED and n_end - n_start < self.cluster_size:
            if self.decompress_cluster(bs, entry) < 0:
                return -errno.EIO, 0
            new_off = self._file_end(bs)
            if new_off < 0:
                return new_off, 0
            ret = self._file_io(bs, new_off, bytearray(self.cluster_cache or b""), True)
        else:
            new_off = self._file_end(bs)
            if new_off < 0:
                return new_off, 0
            from gqemu.block.io_truncate import bdrv_co_truncate
            ret, _msg = bdrv_co_truncate(bs.file.bs, new_off + self.cluster_size,  # type: ignore
                                         exact=False)
        if ret < 0:
            return ret, 0
        table[l2_index] = new_off
        ret = self._file_io(bs, l2_offset + 8 * l2_index, struct.pack(">Q", new_off), True)
        if ret == 0:
            ret = bdrv_co_flush(bs.file.bs)  # type: ignore[union-attr]
        return (ret, 0) if ret < 0 else (1, new_off)

    @coroutine_fn
    def decompress_cluster(self, bs: BlockDriverState, entry: int) -> int:
        """Fill the one-cluster cache.  QEMU: decompress_cluster."""
        coffset = entry & self.cluster_offset_mask
        if self.cluster_cache_offset == coffset:
            return 0
        csize = (entry >> (63 - self.cluster_bits)) & (self.cluster_size - 1)
        buf = bytearray(csize)
        if self._file_io(bs, coffset, buf, False) < 0:
            return -1
        data = _inflate(bytes(buf), self.cluster_size)
        if data is None:
            return -1
        self.cluster_cache, self.cluster_cache_offset = data, coffset
        return 0
