"""The ``compress`` filter: every write to its ``file`` child is made with
BDRV_REQ_WRITE_COMPRESSED, so a format that can compress (qcow2) stores
whole compressed clusters; the node's request_alignment is the child's
cluster size, so the generic path pads partial clusters (read-modify-write)
before they reach the child.  Reads, zero writes and discards pass through.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block/filter-compress.c.
"""
from __future__ import annotations

import errno

from gqemu.block.block_int import (BDRV_REQ_FUA, BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK,
                                   BDRV_REQ_WRITE_COMPRESSED)
from gqemu.block.driver import (BlockDriver, BlockDriverState, BlockError, bdrv_getlength,
                                bdrv_register)
from gqemu.block.perms import bdrv_filter_default_perms
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwrite_zeroes, bdrv_co_pwritev
from gqemu.block.io_misc import bdrv_co_pdiscard
from gqemu.block.qiov import QEMUIOVector
from gqemu.coroutine import coroutine_fn


@bdrv_register
class BdrvCompress(BlockDriver):
    """QEMU: bdrv_compress."""

    format_name = "compress"
    has_variable_length = True
    is_filter = True

    def compress_open(self, bs: BlockDriverState, options: dict, flags: int) -> None:
        """Refuse a child whose driver cannot write compressed clusters.
        QEMU: compress_open."""
        child = bs.file.bs  # type: ignore[union-attr]
        if child.drv is None or child.drv.bdrv_co_pwritev_compressed is None:
            raise BlockError(errno.ENOTSUP, "Compression is not supported for underlying "
                             "format: %s" % (child.drv.format_name if child.drv
                                             else "(no format)"))
        bs.supported_write_flags = BDRV_REQ_WRITE_COMPRESSED | (
            BDRV_REQ_FUA & child.supported_write_flags)
        bs.supported_zero_flags = (BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) \
            & child.supported_zero_flags

    bdrv_open = compress_open

    def compress_child_perm(self, bs: BlockDriverState, child: object, role: str,
                            perm: int, shared: int) -> tuple[int, int]:
        return bdrv_filter_default_perms(bs, child, role, perm, shared)  # type: ignore[arg-type]

    bdrv_child_perm = compress_child_perm

    def compress_refresh_limits(self, bs: BlockDriverState) -> None:
        """Requests in whole clusters of the child.  QEMU: compress_refresh_limits."""
        child = bs.file.bs  # type: ignore[union-attr]
        drv = child.drv
        info = drv.bdrv_get_info(child) if drv is not None and drv.bdrv_get_info else None
        cs = (info or {}).get("cluster_size") or 0
        if cs:
            bs.bl.request_alignment = cs

    bdrv_refresh_limits = compress_refresh_limits

    def compress_getlength(self, bs: BlockDriverState) -> int:
        return bdrv_getlength(bs.file.bs)  # type: ignore[union-attr]

    bdrv_getlength = compress_getlength

    @coroutine_fn
    def compress_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                           qiov: QEMUIOVector, flags: int) -> int:
        return bdrv_co_preadv(bs.file, offset, nbytes, qiov, flags)  # type: ignore[arg-type]

    bdrv_co_preadv = compress_co_preadv

    @coroutine_fn
    def compress_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                            qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: compress_co_pwritev_part."""
        return bdrv_co_pwritev(bs.file, offset, nbytes, qiov,  # type: ignore[arg-type]
                               flags | BDRV_REQ_WRITE_COMPRESSED)

    bdrv_co_pwritev = compress_co_pwritev

    @coroutine_fn
    def compress_co_pwrite_zeroes(self, bs: BlockDriverState, offset: int, nbytes: int,
                                  flags: int) -> int:
        return bdrv_co_pwrite_zeroes(bs.file, offset, nbytes, flags)  # type: ignore[arg-type]

    bdrv_co_pwrite_zeroes = compress_co_pwrite_zeroes

    @coroutine_fn
    def compress_co_pdiscard(self, bs: BlockDriverState, offset: int, nbytes: int) -> int:
        return bdrv_co_pdiscard(bs.file.bs, offset, nbytes)  # type: ignore[union-attr]

    bdrv_co_pdiscard = compress_co_pdiscard
