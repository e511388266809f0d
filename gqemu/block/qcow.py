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

The header constants, the image's fields (``QcowState``, which this
driver class derives from) and the cluster lookup (``get_cluster_offset``,
``decompress_cluster``) are qcow_cluster.py's, below this module.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/qcow.c (7.2).
"""
from __future__ import annotations

import errno
import os
import struct
import zlib
from typing import Any

from gqemu.block.driver import (BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_O_NO_BACKING,
                                BDRV_SECTOR_SIZE, BlockDriverState, BlockError, bdrv_register)
from gqemu.block.io import bdrv_co_preadv
from gqemu.block.io_misc import bdrv_pread
from gqemu.block.qcow_cluster import (HEADER, INT_MAX, QCOW_CRYPT_AES, QCOW_MAGIC,
                                      QCOW_OFLAG_COMPRESSED, QCOW_VERSION, U64, QcowState)
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_from_buf, qemu_iovec_init_buf,
                              qemu_iovec_to_buf)
from gqemu.coroutine import coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock

__all__ = ["BDRVQcowState", "qcow_probe"]


def qcow_probe(buf: bytes, filename: str) -> int:
    """100 for a version-1 qcow header.  QEMU: qcow_probe."""
    if len(buf) < HEADER.size:
        return 0
    magic, version = struct.unpack_from(">II", buf)
    return 100 if magic == QCOW_MAGIC and version == QCOW_VERSION else 0


def _could_not_open(bs: BlockDriverState, ret: int) -> str:
    """bdrv_open's message for a driver error that set none (QEMU's
    qcow_open leaves its preads' errors to it)."""
    return "Could not open '%s': %s" % (bs.filename, os.strerror(-ret))


@bdrv_register
class BDRVQcowState(QcowState):
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

    # ------------------------------------------------------------- open

    def qcow_open(self, bs: BlockDriverState, options: dict, flags: int) -> None:
        """Read and check the header, load the L1 table, open the backing
        file.  Raises BlockError with QEMU's messages.  QEMU: qcow_open."""
        from gqemu.block.qcow2_open import (QCOW2_CHAIN_KEY, backing_reference_error,
                                            qcow2_open_backing)
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
        backing_reference_error(options, backing_opts, flags)
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
