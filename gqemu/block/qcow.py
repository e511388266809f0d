"""The ``qcow`` format (version 1, QEMU's original copy-on-write format):
probed and opened as QEMU does, so that a version-1 header is never taken
for a raw disk (which would hand its metadata to the guest).

Layout (big-endian, 48 bytes packed): magic "QFI\\xfb", version 1, backing
file offset (u64) and size (u32), mtime (u32), size in bytes (u64),
cluster_bits (u8), l2_bits (u8), padding (u16), crypt_method (u32), the L1
table offset (u64).  An L1 entry is an L2 table's offset (0: none); an L2
entry a cluster's offset (0: unallocated), or with bit 63 set a compressed
cluster: its offset in the low 63 - cluster_bits bits, its compressed size
(in bytes) above them, raw deflate data.

Open checks the header with QEMU's messages (cluster_bits 9..16, l2_bits
6..13, size at least 2, the L1 table at most INT_MAX bytes, a backing name
of at most 1023 bytes).  Writes allocate as QEMU does: a new L2 table or
data cluster at the end of the file rounded up to a cluster; a partial
write to a compressed cluster first copies the decompressed cluster.
Encrypted (AES) qcow images are not supported: they are refused with one
line.  qemu-img creates qcow images (gqemu/cli/qemu_img_create_qcow.py);
commit empties one (qcow_empty.py).

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/qcow.c (7.2).
"""
from __future__ import annotations

import errno
import os
import struct
import zlib
from typing import Any, Optional

from gqemu.block.driver import (BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_O_NO_BACKING,
                                BDRV_SECTOR_SIZE, BlockDriver, BlockDriverState,
                                BlockError, bdrv_getlength, bdrv_register)
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwritev
from gqemu.block.io_flush import bdrv_co_flush
from gqemu.block.io_misc import bdrv_pread
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_from_buf, qemu_iovec_init_buf,
                              qemu_iovec_to_buf)
from gqemu.coroutine import CoMutex, coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock

__all__ = ["BDRVQcowState", "qcow_probe"]

QCOW_MAGIC = 0x514649FB
QCOW_VERSION = 1
QCOW_CRYPT_AES = 1
QCOW_OFLAG_COMPRESSED = 1 << 63
HEADER = struct.Struct(">IIQIIQBBHIQ")          # QCowHeader, 48 bytes
INT_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
U64 = (1 << 64) - 1


def qcow_probe(buf: bytes, filename: str) -> int:
    """100 for a version-1 qcow header.  QEMU: qcow_probe."""
    if len(buf) < HEADER.size:
        return 0
    magic, version = struct.unpack_from(">II", buf)
    return 100 if magic == QCOW_MAGIC and version == QCOW_VERSION else 0


def _inflate(data: bytes, out_size: int) -> Optional[bytes]:
    """Raw deflate of a whole cluster, or None (QEMU: decompress_buffer:
    the output must fill the cluster exactly)."""
    d = zlib.decompressobj(-12)
    try:
        out = d.decompress(data, out_size)
    except zlib.error:
        return None
    return out if len(out) == out_size else None


def _could_not_open(bs: BlockDriverState, ret: int) -> str:
    """bdrv_open's message for a driver error that set none (QEMU's
    qcow_open leaves its preads' errors to it)."""
    return "Could not open '%s': %s" % (bs.filename, os.strerror(-ret))


@bdrv_register
class BDRVQcowState(BlockDriver):
    """bdrv_qcow: the vtable, and (as an instance) one image's state."""

    format_name = "qcow"
    supports_backing = True
    # QEMU 7.2's qcow_create_opts (qemu-img create -f qcow -o help)
    create_opts = (
        ("size", "size", "Virtual disk size"),
        ("backing_file", "str", "File name of a base image"),
        ("backing_fmt", "str", "Format of the backing image"),
        ("encryption", "bool", "Encrypt the image with format 'aes'. (Deprecated in favor "
         "of encrypt.format=aes)"),
        ("encrypt.format", "str", "Encrypt the image, format choices: 'aes'"),
        ("encrypt.key-secret", "str", "ID of the secret that provides the AES encryption key"),
    )
    bdrv_probe = staticmethod(qcow_probe)

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

    # ------------------------------------------------------------- open

    def qcow_open(self, bs: BlockDriverState, options: dict, flags: int) -> None:
        """Read and check the header, load the L1 table, open the backing
        file.  Raises BlockError with QEMU's messages.  QEMU: qcow_open."""
        from gqemu.block.qcow2_open import QCOW2_CHAIN_KEY, qcow2_open_backing
        chain = options.pop(QCOW2_CHAIN_KEY, ())
        backing_opts = {k[len("backing."):]: options.pop(k)
                        for k in [k for k in options if k.startswith("backing.")]}
        encrypt = {k: options.pop(k) for k in [k for k in options if k.startswith("encrypt.")]}
        assert bs.file is not None
        raw = bytearray(HEADER.size)
        ret = bdrv_pread(bs.file, 0, raw, HEADER.size)
        if ret < 0:
            raise BlockError(-ret, _could_not_open(bs, ret))
        (magic, version, backing_offset, backing_size, _mtime, size, cluster_bits, l2_bits,
         _pad, crypt_method, l1_offset) = HEADER.unpack(raw)
        if magic != QCOW_MAGIC:
            raise BlockError(errno.EINVAL, "Image not in qcow format")
        if version != QCOW_VERSION:
            raise BlockError(errno.ENOTSUP, "qcow (v%d) does not support qcow version %d"
                             % (QCOW_VERSION, version),
                             "Try the 'qcow2' driver instead.\n" if version in (2, 3) else "")
        if size <= 1:
            raise BlockError(errno.EINVAL, "Image size is too small (must be at least 2 bytes)")
        if not 9 <= cluster_bits <= 16:
            raise BlockError(errno.EINVAL, "Cluster size must be between 512 and 64k")
        if not 9 - 3 <= l2_bits <= 16 - 3:
            raise BlockError(errno.EINVAL, "L2 table size must be between 512 and 64k")
        if crypt_method:
            if crypt_method != QCOW_CRYPT_AES:
                raise BlockError(errno.EINVAL, "invalid encryption method in qcow header")
            raise BlockError(errno.ENOTSUP, "AES-encrypted qcow images are not supported")
        if encrypt.get("encrypt.format") is not None:
            raise BlockError(errno.EINVAL, "No encryption in image header, but options "
                             "specified format '%s'" % encrypt["encrypt.format"])
        self.cluster_bits, self.cluster_size = cluster_bits, 1 << cluster_bits
        self.l2_bits, self.l2_size = l2_bits, 1 << l2_bits
        bs.total_sectors = size // BDRV_SECTOR_SIZE
        self.cluster_offset_mask = (1 << (63 - cluster_bits)) - 1
        shift = cluster_bits + l2_bits
        if size > U64 - (1 << shift):
            raise BlockError(errno.EINVAL, "Image too large")
        l1_size = (size + (1 << shift) - 1) >> shift
        if l1_size > INT_MAX // 8:
            raise BlockError(errno.EINVAL, "Image too large")
        buf = bytearray(l1_size * 8)
        ret = bdrv_pread(bs.file, l1_offset, buf, len(buf))
        if ret < 0:
            raise BlockError(-ret, _could_not_open(bs, ret))
        self.l1_table = list(struct.unpack(">%dQ" % l1_size, buf))
        self.l1_table_offset = l1_offset
        if backing_offset:
            if backing_size > 1023:
                raise BlockError(errno.EINVAL, "Backing file name too long")
            name = bytearray(backing_size)
            ret = bdrv_pread(bs.file, backing_offset, name, backing_size)
            if ret < 0:
                raise BlockError(-ret, _could_not_open(bs, ret))
            self.backing_file = bytes(name).split(b"\0")[0].decode("utf-8", "replace")
        if self.backing_file and not flags & BDRV_O_NO_BACKING:
            qcow2_open_backing(bs, self, flags, chain, backing_opts)   # type: ignore[arg-type]
        else:
            options.update(("backing." + k, v) for k, v in backing_opts.items())
        options.pop("filename", None)

    bdrv_open = qcow_open

    def qcow_refresh_limits(self, bs: BlockDriverState) -> None:
        """QEMU: qcow_refresh_limits (512 for every image)."""
        bs.bl.request_alignment = BDRV_SECTOR_SIZE

    bdrv_refresh_limits = qcow_refresh_limits

    def qcow_getlength(self, bs: BlockDriverState) -> int:
        return bs.total_sectors * BDRV_SECTOR_SIZE

    bdrv_getlength = qcow_getlength

    def qcow_get_info(self, bs: BlockDriverState) -> dict:
        """QEMU: qcow_get_info."""
        return {"cluster_size": self.cluster_size, "vm_state_offset": 0}

    bdrv_get_info = qcow_get_info

    def qcow_has_zero_init(self, bs: BlockDriverState) -> int:
        return 1

    bdrv_has_zero_init = qcow_has_zero_init

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

    # -------------------------------------------------------------- I/O

    @coroutine_fn
    def qcow_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                       qiov: QEMUIOVector, flags: int) -> int:
        """Cluster by cluster.  QEMU: qcow_co_preadv."""
        done = 0
        qemu_co_mutex_lock(self.lock)
        try:
            while done < nbytes:
                pos = offset + done
                ret, entry = self.get_cluster_offset(bs, pos, False)
                if ret < 0:
                    return ret
                in_cluster = pos & (self.cluster_size - 1)
                n = min(self.cluster_size - in_cluster, nbytes - done)
                buf = bytearray(n)
                if not entry:
                    if bs.backing is not None:
                        qemu_co_mutex_unlock(self.lock)
                        ret = bdrv_co_preadv(bs.backing, pos, n, qemu_iovec_init_buf(buf), 0)
                        qemu_co_mutex_lock(self.lock)
                        if ret < 0:
                            return ret
                elif entry & QCOW_OFLAG_COMPRESSED:
                    if self.decompress_cluster(bs, entry) < 0:
                        return -errno.EIO
                    assert self.cluster_cache is not None
                    buf[:] = self.cluster_cache[in_cluster:in_cluster + n]
                else:
                    if entry & 511:
                        return -errno.EIO
                    qemu_co_mutex_unlock(self.lock)
                    ret = self._file_io(bs, entry + in_cluster, buf, False)
                    qemu_co_mutex_lock(self.lock)
                    if ret < 0:
                        return ret
                qemu_iovec_from_buf(qiov, done, buf, n)
                done += n
            return 0
        finally:
            qemu_co_mutex_unlock(self.lock)

    bdrv_co_preadv = qcow_co_preadv

    @coroutine_fn
    def qcow_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                        qiov: QEMUIOVector, flags: int) -> int:
        """Cluster by cluster, allocating as it goes.  QEMU: qcow_co_pwritev."""
        self.cluster_cache_offset = -1
        done = 0
        qemu_co_mutex_lock(self.lock)
        try:
            while done < nbytes:
                pos = offset + done
                in_cluster = pos & (self.cluster_size - 1)
                n = min(self.cluster_size - in_cluster, nbytes - done)
                ret, entry = self.get_cluster_offset(bs, pos, True, in_cluster, in_cluster + n)
                if ret < 0:
                    return ret
                if not entry or entry & 511:
                    return -errno.EIO
                buf = bytearray(n)
                qemu_iovec_to_buf(qiov, done, buf, n)
                qemu_co_mutex_unlock(self.lock)
                ret = self._file_io(bs, entry + in_cluster, buf, True)
                qemu_co_mutex_lock(self.lock)
                if ret < 0:
                    return ret
                done += n
            return 0
        finally:
            qemu_co_mutex_unlock(self.lock)

    bdrv_co_pwritev = qcow_co_pwritev

    @coroutine_fn
    def qcow_co_pwritev_compressed(self, bs: BlockDriverState, offset: int, nbytes: int,
                                   qiov: QEMUIOVector) -> int:
        """One cluster (or the image's short last one, zero-padded), raw
        deflate with a 4 KiB window; data that does not shrink is written
        as a normal cluster.  QEMU: qcow_co_pwritev_compressed."""
        cs = self.cluster_size
        if nbytes != cs and (nbytes > cs or offset + nbytes != bs.total_sectors * 512):
            return -errno.EINVAL
        buf = bytearray(cs)
        qemu_iovec_to_buf(qiov, 0, buf, nbytes)
        z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9,
                             zlib.Z_DEFAULT_STRATEGY)
        out = z.compress(bytes(buf)) + z.flush(zlib.Z_FINISH)
        if len(out) >= cs:                  # could not compress
            return self.qcow_co_pwritev(bs, offset, nbytes, qiov, 0)
        self.cluster_cache_offset = -1
        qemu_co_mutex_lock(self.lock)
        try:
            ret, entry = self.get_cluster_offset(bs, offset, 2, compressed_size=len(out))
        finally:
            qemu_co_mutex_unlock(self.lock)
        if ret < 0:
            return ret
        if not entry:
            return -errno.EIO
        return self._file_io(bs, entry & self.cluster_offset_mask, bytearray(out), True)

    bdrv_co_pwritev_compressed = qcow_co_pwritev_compressed

    @coroutine_fn
    def qcow_co_get_block_status(self, bs: BlockDriverState, offset: int,
                                 nbytes: int) -> tuple[int, int, int, Any]:
        """One cluster at a time.  QEMU: qcow_co_block_status."""
        qemu_co_mutex_lock(self.lock)
        try:
            ret, entry = self.get_cluster_offset(bs, offset, False)
        finally:
            qemu_co_mutex_unlock(self.lock)
        if ret < 0:
            return ret, 0, 0, None
        in_cluster = offset & (self.cluster_size - 1)
        n = min(self.cluster_size - in_cluster, nbytes)
        if not entry:
            return 0, n, 0, None
        if entry & QCOW_OFLAG_COMPRESSED:
            return BDRV_BLOCK_DATA, n, 0, None
        assert bs.file is not None
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, n, entry | in_cluster, bs.file.bs

    bdrv_co_get_block_status = qcow_co_get_block_status
