"""The ``raw`` format: the image is the file, optionally a window of it
(``offset``/``size``).  When the format was probed rather than given, the
node works in 512-byte blocks and refuses a write to sector 0 that would
make another format's probe win (CVE-2008-2004).

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/raw_bsd.c (2.8; raw-format.c since 2.9, offset/size 2.9).
"""
from __future__ import annotations

import errno

from gqemu.block.blkdebug_events import BLKDBG_READ_AIO, BLKDBG_WRITE_AIO
from gqemu.block.driver import (BDRV_O_RDWR, BDRV_SECTOR_SIZE,
                                BLKDBG_EVENT, BlockDriver, BlockDriverState,
                                BlockError, bdrv_getlength, bdrv_probe_all,
                                bdrv_register, error_report, qemu_opt_size)
from gqemu.block.perms import bdrv_filter_default_perms
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwrite_zeroes, bdrv_co_pwritev
from gqemu.block.block_int import BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW
from gqemu.block.io_misc import bdrv_co_pdiscard
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_add, qemu_iovec_concat, qemu_iovec_to_buf
from gqemu.coroutine import coroutine_fn

__all__ = ["BdrvRaw", "raw_probe_warning"]



def raw_probe_warning(bs: BlockDriverState) -> None:
    """The warning raw_open prints for a probed image opened read-write
    (again whenever QEMU reopens the node, e.g. a snapshot fallback)."""
    error_report(
        "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
        "         Automatically detecting the format is dangerous for raw images, "
        "write operations on block 0 will be restricted.\n"
        "         Specify the 'raw' format explicitly to remove the restrictions."
        % bs.file.bs.filename)  # type: ignore[union-attr]


@bdrv_register
class BdrvRaw(BlockDriver):
    """QEMU: bdrv_raw (BDRVRawState is this instance)."""

    format_name = "raw"
    create_opts = (("size", "size", "Virtual disk size"),)
    has_variable_length = True
    is_filter = True

    def __init__(self) -> None:
        self.offset = 0
        self.size = 0
        self.has_size = False

    @staticmethod
    def raw_probe(buf: bytes, filename: str) -> int:
        """Anything is raw, with the lowest score.  QEMU: raw_probe."""
        return 1

    bdrv_probe = raw_probe

    def raw_open(self, bs: BlockDriverState, options: dict, flags: int) -> None:
        """Parse offset/size against the file's length.  Raises BlockError.
        QEMU: raw_open + raw_read_options."""
        assert bs.file is not None
        offset = qemu_opt_size(options, "offset", 0)
        size = qemu_opt_size(options, "size", None)
        real_size = bdrv_getlength(bs.file.bs)
        if real_size < 0:
            raise BlockError(-real_size, "Could not get image size")
        assert offset is not None
        if offset > real_size:
            raise BlockError(errno.EINVAL, "Offset (%d) cannot be greater than size "
                             "of the containing file (%d)" % (offset, real_size))
        if size is not None:
            if offset + size > real_size:
                raise BlockError(errno.EINVAL, "The sum of offset (%d) and size (%d) has "
                                 "to be smaller or equal to the  actual size of the "
                                 "containing file (%d)" % (offset, size, real_size))
            if size % BDRV_SECTOR_SIZE:
                raise BlockError(errno.EINVAL, "Specified size is not multiple of %d"
                                 % BDRV_SECTOR_SIZE)
            self.has_size = True
            self.size = size
        else:
            self.size = real_size - offset
        self.offset = offset
        bs.supported_write_flags = bs.file.bs.supported_write_flags
        bs.supported_zero_flags = bs.file.bs.supported_zero_flags
        if bs.probed and flags & BDRV_O_RDWR:
            raw_probe_warning(bs)

    bdrv_open = raw_open

    def raw_refresh_limits(self, bs: BlockDriverState) -> None:
        """A probed image works in whole sectors, so that sector 0 can be
        checked as a unit.  QEMU: raw_refresh_limits."""
        if bs.probed:
            bs.bl.request_alignment = max(BDRV_SECTOR_SIZE, bs.bl.request_alignment)

    bdrv_refresh_limits = raw_refresh_limits

    def raw_child_perm(self, bs: BlockDriverState, child: object, role: str,
                       perm: int, shared: int) -> tuple[int, int]:
        """Forward the parents' permissions.  QEMU: raw_child_perm."""
        return bdrv_filter_default_perms(bs, child, role, perm, shared)  # type: ignore[arg-type]

    bdrv_child_perm = raw_child_perm

    def raw_adjust_offset(self, offset: int, nbytes: int, is_write: bool) -> int:
        """Returns the file offset, or -ENOSPC for a write past ``size``.
        QEMU: raw_adjust_offset."""
        if self.has_size and (offset > self.size or nbytes > self.size - offset):
            if is_write:
                return -errno.ENOSPC
        return offset + self.offset

    @coroutine_fn
    def raw_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                      qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: raw_co_preadv (raw_bsd.c)."""
        offset += self.offset               # raw_adjust_offset: reads never fail
        BLKDBG_EVENT(bs.file, BLKDBG_READ_AIO)
        return bdrv_co_preadv(bs.file, offset, nbytes, qiov, flags)  # type: ignore[arg-type]

    bdrv_co_preadv = raw_co_preadv

    @coroutine_fn
    def raw_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                       qiov: QEMUIOVector, flags: int) -> int:
        """The probed-raw guard, then pass down.  Returns 0 or -errno
        (-EPERM if the new sector 0 probes as another format).
        QEMU: raw_co_pwritev (raw_bsd.c)."""
        if bs.probed and offset < BDRV_SECTOR_SIZE and qiov is not None:
            # io.py keeps probed images 512-aligned: offset is 0 here.
            assert offset == 0 and nbytes >= BDRV_SECTOR_SIZE
            buf = bytearray(BDRV_SECTOR_SIZE)
            qemu_iovec_to_buf(qiov, 0, buf, BDRV_SECTOR_SIZE)
            drv = bdrv_probe_all(bytes(buf), "")
            if drv is not type(self):
                return -errno.EPERM
            checked = QEMUIOVector()
            qemu_iovec_add(checked, buf)
            qemu_iovec_concat(checked, qiov, BDRV_SECTOR_SIZE, qiov.size - BDRV_SECTOR_SIZE)
            qiov = checked
        off = self.raw_adjust_offset(offset, nbytes, True)
        if off < 0:
            return off
        BLKDBG_EVENT(bs.file, BLKDBG_WRITE_AIO)
        return bdrv_co_pwritev(bs.file, off, nbytes, qiov, flags)  # type: ignore[arg-type]

    bdrv_co_pwritev = raw_co_pwritev

    @coroutine_fn
    def raw_co_pwrite_zeroes(self, bs: BlockDriverState, offset: int, nbytes: int,
                             flags: int) -> int:
        """QEMU: raw_co_pwrite_zeroes."""
        off = self.raw_adjust_offset(offset, nbytes, True)
        if off < 0:
            return off
        return bdrv_co_pwrite_zeroes(bs.file, off, nbytes, flags)  # type: ignore[arg-type]

    bdrv_co_pwrite_zeroes = raw_co_pwrite_zeroes

    @coroutine_fn
    def raw_co_pdiscard(self, bs: BlockDriverState, offset: int, nbytes: int) -> int:
        """QEMU: raw_co_pdiscard."""
        off = self.raw_adjust_offset(offset, nbytes, True)
        if off < 0:
            return off
        return bdrv_co_pdiscard(bs.file.bs, off, nbytes)  # type: ignore[union-attr]

    bdrv_co_pdiscard = raw_co_pdiscard

    @coroutine_fn
    def raw_co_get_block_status(self, bs: BlockDriverState, offset: int,
                                nbytes: int) -> tuple[int, int, int, object]:
        """RAW: ask the file at the shifted offset.
        QEMU: raw_co_block_status."""
        return (BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID, nbytes, offset + self.offset,
                bs.file.bs)  # type: ignore[union-attr]

    bdrv_co_get_block_status = raw_co_get_block_status

    def raw_getlength(self, bs: BlockDriverState) -> int:
        """The file's length minus ``offset`` (capped by ``size``).
        QEMU: raw_getlength."""
        fbs = bs.file.bs  # type: ignore[union-attr]
        fdrv = fbs.drv
        if fdrv is not None and not fdrv.has_variable_length:
            length = fbs.total_sectors * BDRV_SECTOR_SIZE   # bdrv_getlength(fbs)
        else:
            length = bdrv_getlength(fbs)
        if length < 0:
            return length
        if length < self.offset:
            self.size = 0
        elif self.has_size:
            self.size = min(self.size, length - self.offset)
        else:
            self.size = length - self.offset
        return self.size

    bdrv_getlength = raw_getlength

    def raw_get_info(self, bs: BlockDriverState) -> dict:
        return {"cluster_size": 0, "vm_state_offset": 0}

    bdrv_get_info = raw_get_info
