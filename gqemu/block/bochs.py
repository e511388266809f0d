"""The ``bochs`` format: Bochs' "growing" redolog images, read-only.

Layout (little-endian): a header whose first 512 bytes hold the magic
"Bochs Virtual HD Image" (32 bytes), type "Redolog" (16), subtype
"Growing" (16), the version (0x00020000, or 0x00010000 for v1), the header
size, the catalog entry count, the bitmap size and the extent size (each a
u32), then the disk size (u64; v2 has a reserved u32 before it).  The
catalog (u32 per extent) starts at the header size; entry 0xffffffff marks
an extent that was never written.  Extent ``n`` of the catalog lives at
``data_offset + 512 * n * (bitmap_blocks + extent_blocks)``: its bitmap
(one bit a sector) and then its sectors; a sector whose bit is clear reads
as zeroes.

Bounds: the catalog has at most 0x100000 entries (4 MiB, what bximage
needs for its largest image), the extent size is a power of two in
[512, 8 MiB] and the catalog must cover the disk, all checked at open with
QEMU's messages; reads past the end of the file read as zeroes (the file
node's rule) and an offset past what a file can hold fails with EIO.  The
arithmetic is done at QEMU's widths (u32 fields, u64 offsets).

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/bochs.c (7.2).
"""
from __future__ import annotations

import errno
import os
import struct

from gqemu.block.driver import (BDRV_O_RDWR, BDRV_SECTOR_SIZE, BlockDriver,
                                BlockDriverState, BlockError, bdrv_register)
from gqemu.block.io import bdrv_co_preadv
from gqemu.block.io_misc import bdrv_pread
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_concat, qemu_iovec_init_buf,
                              qemu_iovec_memset)
from gqemu.coroutine import coroutine_fn

__all__ = ["BdrvBochs", "bochs_probe"]

HEADER_MAGIC = b"Bochs Virtual HD Image"
HEADER_VERSION = 0x00020000
HEADER_V1 = 0x00010000
HEADER_SIZE = 512
REDOLOG_TYPE = b"Redolog"
GROWING_TYPE = b"Growing"
NOT_ALLOCATED = 0xFFFFFFFF
MAX_CATALOG = 0x100000
MAX_EXTENT = 0x800000
MAX_OFFSET = (1 << 63) - (1 << 30)     # BDRV_MAX_LENGTH

U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1


def _cstr_is(field: bytes, text: bytes) -> bool:
    """strcmp(field, text) == 0 for a NUL-terminated C string in ``field``."""
    return field[:len(text) + 1] == text + b"\0"


def _header_ok(buf: bytes) -> bool:
    version = struct.unpack_from("<I", buf, 64)[0]
    return (_cstr_is(buf[0:32], HEADER_MAGIC) and _cstr_is(buf[32:48], REDOLOG_TYPE)
            and _cstr_is(buf[48:64], GROWING_TYPE)
            and version in (HEADER_VERSION, HEADER_V1))


def bochs_probe(buf: bytes, filename: str) -> int:
    """100 for a growing redolog image.  QEMU: bochs_probe."""
    if len(buf) < HEADER_SIZE:
        return 0
    return 100 if _header_ok(buf) else 0


@bdrv_register
class BdrvBochs(BlockDriver):
    """QEMU: bdrv_bochs (BDRVBochsState is this instance)."""

    format_name = "bochs"
    bdrv_probe = staticmethod(bochs_probe)

    def __init__(self) -> None:
        self.catalog: tuple[int, ...] = ()
        self.data_offset = 0
        self.bitmap_blocks = 0
        self.extent_blocks = 0
        self.extent_size = 0

    def bochs_open(self, bs: BlockDriverState, options: dict, flags: int) -> None:
        """Read and check the header and the catalog.  Raises BlockError
        with QEMU's messages.  QEMU: bochs_open."""
        if flags & BDRV_O_RDWR:
            raise BlockError(errno.EACCES, "Image is read-only")
        assert bs.file is not None          # bdrv_open_child made it
        hdr = bytearray(HEADER_SIZE)
        ret = bdrv_pread(bs.file, 0, hdr, HEADER_SIZE)
        if ret < 0:
            raise BlockError(-ret, "Could not read bochs header: %s" % os.strerror(-ret))
        if not _header_ok(bytes(hdr)):
            raise BlockError(errno.EINVAL, "Image not in Bochs format")
        version, header, catalog, bitmap, extent = struct.unpack_from("<5I", hdr, 64)
        disk = struct.unpack_from("<Q", hdr, 84 if version == HEADER_V1 else 88)[0]
        bs.total_sectors = disk // BDRV_SECTOR_SIZE
        if catalog > MAX_CATALOG:
            raise BlockError(errno.EFBIG, "Catalog size is too large")
        raw = bytearray(catalog * 4)
        if catalog:
            ret = bdrv_pread(bs.file, header, raw, catalog * 4)
            if ret < 0:
                raise BlockError(-ret, "Could not read bochs catalog: %s" % os.strerror(-ret))
        self.catalog = struct.unpack("<%dI" % catalog, raw)
        self.data_offset = (header + catalog * 4) & U32
        self.bitmap_blocks = (1 + ((bitmap - 1) & U32) // 512) & U32
        self.extent_blocks = (1 + ((extent - 1) & U32) // 512) & U32
        self.extent_size = extent
        if extent < BDRV_SECTOR_SIZE:
            raise BlockError(errno.EINVAL, "Extent size must be at least 512")
        if extent & (extent - 1):
            raise BlockError(errno.EINVAL, "Extent size %d is not a power of two" % extent)
        if extent > MAX_EXTENT:
            raise BlockError(errno.EINVAL, "Extent size %d is too large" % extent)
        per_extent = extent // BDRV_SECTOR_SIZE
        if catalog < -(-bs.total_sectors // per_extent):
            raise BlockError(errno.EINVAL, "Catalog size is too small for this disk size")
        options.pop("filename", None)

    bdrv_open = bochs_open

    def bochs_refresh_limits(self, bs: BlockDriverState) -> None:
        """No sub-sector I/O.  QEMU: bochs_refresh_limits."""
        bs.bl.request_alignment = BDRV_SECTOR_SIZE

    bdrv_refresh_limits = bochs_refresh_limits

    def bochs_getlength(self, bs: BlockDriverState) -> int:
        return bs.total_sectors * BDRV_SECTOR_SIZE

    bdrv_getlength = bochs_getlength

    @coroutine_fn
    def bochs_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                        qiov: QEMUIOVector, flags: int) -> int:
        """Sector by sector as QEMU does (a run of sectors of one extent
        whose bitmap bits are set is read at once; the bitmap of the run is
        read in one piece).  Returns 0 or -errno.  QEMU: bochs_co_preadv."""
        assert offset % BDRV_SECTOR_SIZE == 0 and nbytes % BDRV_SECTOR_SIZE == 0
        done = 0
        while done < nbytes:
            pos = offset + done
            extent_index = pos // self.extent_size
            first = (pos % self.extent_size) // BDRV_SECTOR_SIZE
            count = min((nbytes - done) // BDRV_SECTOR_SIZE,
                        self.extent_size // BDRV_SECTOR_SIZE - first)
            entry = self.catalog[extent_index] if extent_index < len(self.catalog) \
                else NOT_ALLOCATED
            if entry == NOT_ALLOCATED:
                qemu_iovec_memset(qiov, done, 0, count * BDRV_SECTOR_SIZE)
                done += count * BDRV_SECTOR_SIZE
                continue
            blocks = (self.extent_blocks + self.bitmap_blocks) & U32
            bitmap_offset = (self.data_offset + 512 * entry * blocks) & U64
            ret, bits = self._read_bitmap(bs, bitmap_offset, first, count)
            if ret < 0:
                return ret
            i = 0
            while i < count:
                j = i
                while j < count and bits[j]:
                    j += 1
                if j > i:                            # allocated sectors i..j-1
                    block = (bitmap_offset + 512 * (self.bitmap_blocks + first + i)) & U64
                    ret = self._read_file(bs, block, qiov, done + i * 512, (j - i) * 512)
                    if ret < 0:
                        return ret
                    i = j
                else:
                    while j < count and not bits[j]:
                        j += 1
                    qemu_iovec_memset(qiov, done + i * 512, 0, (j - i) * 512)
                    i = j
            done += count * BDRV_SECTOR_SIZE
        return 0

    bdrv_co_preadv = bochs_co_preadv

    @coroutine_fn
    def _read_bitmap(self, bs: BlockDriverState, bitmap_offset: int, first: int,
                     count: int) -> tuple[int, list[bool]]:
        """The bitmap bits of sectors first..first+count-1 of an extent."""
        lo, hi = first // 8, (first + count - 1) // 8 + 1
        buf = bytearray(hi - lo)
        ret = self._read_file(bs, bitmap_offset + lo, qemu_iovec_init_buf(buf), 0, len(buf))
        if ret < 0:
            return ret, []
        return 0, [bool(buf[(s // 8) - lo] >> (s % 8) & 1) for s in range(first, first + count)]

    @coroutine_fn
    def _read_file(self, bs: BlockDriverState, file_offset: int, qiov: QEMUIOVector,
                   qiov_offset: int, nbytes: int) -> int:
        """Read from the file node into part of ``qiov``; an offset no file
        can hold fails with EIO.  Returns 0 or -errno."""
        if file_offset > MAX_OFFSET or nbytes > MAX_OFFSET - file_offset:
            return -errno.EIO
        local = QEMUIOVector()
        qemu_iovec_concat(local, qiov, qiov_offset, nbytes)
        ret = bdrv_co_preadv(bs.file, file_offset, nbytes, local, 0)  # type: ignore[arg-type]
        return min(ret, 0)
