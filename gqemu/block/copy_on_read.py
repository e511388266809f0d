"""The ``copy-on-read`` filter: every read of its ``file`` child is made
with BDRV_REQ_COPY_ON_READ, so data read from the child's backing chain is
written into the child; everything else passes through.  It needs a
writable child (``Block node is read-only`` otherwise).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block/copy-on-read.c.
"""
from __future__ import annotations

import errno

from gqemu.block.block_int import (BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW, BDRV_REQ_COPY_ON_READ,
                                   BDRV_REQ_WRITE_COMPRESSED)
from gqemu.block.driver import (BDRV_O_RDWR, BlockDriver, BlockDriverState, BlockError,
                                bdrv_getlength, bdrv_register)
from gqemu.block.perms import bdrv_filter_default_perms
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwrite_zeroes, bdrv_co_pwritev
from gqemu.block.io_misc import bdrv_co_pdiscard
from gqemu.block.qiov import QEMUIOVector
from gqemu.coroutine import coroutine_fn


@bdrv_register
class BdrvCopyOnRead(BlockDriver):
    """QEMU: bdrv_copy_on_read."""

    format_name = "copy-on-read"
    has_variable_length = True
    is_filter = True

    def cor_open(self, bs: BlockDriverState, options: dict, flags: int) -> None:
        """QEMU: cor_open (the write permission it takes fails read-only)."""
        if not flags & BDRV_O_RDWR:
            raise BlockError(errno.EPERM, "Block node is read-only")
        bs.supported_write_flags = bs.file.bs.supported_write_flags  # type: ignore[union-attr]
        bs.supported_zero_flags = bs.file.bs.supported_zero_flags    # type: ignore[union-attr]

    bdrv_open = cor_open

    def cor_child_perm(self, bs: BlockDriverState, child: object, role: str,
                       perm: int, shared: int) -> tuple[int, int]:
        return bdrv_filter_default_perms(bs, child, role, perm, shared)  # type: ignore[arg-type]

    bdrv_child_perm = cor_child_perm

    def cor_getlength(self, bs: BlockDriverState) -> int:
        return bdrv_getlength(bs.file.bs)  # type: ignore[union-attr]

    bdrv_getlength = cor_getlength

    @coroutine_fn
    def cor_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                      qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: cor_co_preadv_part."""
        return bdrv_co_preadv(bs.file, offset, nbytes, qiov,  # type: ignore[arg-type]
                              flags | BDRV_REQ_COPY_ON_READ)

    bdrv_co_preadv = cor_co_preadv

    @coroutine_fn
    def cor_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                       qiov: QEMUIOVector, flags: int) -> int:
        return bdrv_co_pwritev(bs.file, offset, nbytes, qiov, flags)  # type: ignore[arg-type]

    bdrv_co_pwritev = cor_co_pwritev

    @coroutine_fn
    def cor_co_pwritev_compressed(self, bs: BlockDriverState, offset: int, nbytes: int,
                                  qiov: QEMUIOVector) -> int:
        """QEMU: cor_co_pwritev_compressed (the child compresses)."""
        return bdrv_co_pwritev(bs.file, offset, nbytes, qiov,  # type: ignore[arg-type]
                               BDRV_REQ_WRITE_COMPRESSED)

    bdrv_co_pwritev_compressed = cor_co_pwritev_compressed

    @coroutine_fn
    def cor_co_pwrite_zeroes(self, bs: BlockDriverState, offset: int, nbytes: int,
                             flags: int) -> int:
        return bdrv_co_pwrite_zeroes(bs.file, offset, nbytes, flags)  # type: ignore[arg-type]

    bdrv_co_pwrite_zeroes = cor_co_pwrite_zeroes

    @coroutine_fn
    def cor_co_pdiscard(self, bs: BlockDriverState, offset: int, nbytes: int) -> int:
        return bdrv_co_pdiscard(bs.file.bs, offset, nbytes)  # type: ignore[union-attr]

    bdrv_co_pdiscard = cor_co_pdiscard

    @coroutine_fn
    def cor_co_get_block_status(self, bs: BlockDriverState, offset: int,
                                nbytes: int) -> tuple[int, int, int, object]:
        """A filter: RAW, the node below at the same offset."""
        return (BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID, nbytes, offset,
                bs.file.bs)  # type: ignore[union-attr]

    bdrv_co_get_block_status = cor_co_get_block_status
