"""``null-co``: a device of a given size that reads zeros (or leaves the
buffer alone with ``read-zeroes=off``) and discards writes.  For benchmarks
of the layers above file-posix.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/null.c.
"""
from __future__ import annotations

import errno
import os
import sys

from gqemu.block.driver import (BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO,
                                BlockDriver, BlockDriverState, BlockError,
                                bdrv_register, qemu_opt_bool, qemu_opt_size)
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_memset
from gqemu.coroutine import coroutine_fn

__all__ = ["BdrvNullCo"]


def _error_abort(msg: str) -> None:
    """QEMU's &error_abort: where the error was set, the message, abort().
    QEMU: util/error.c error_handle (parse_option_size, parse_option_number,
    qapi_bool_parse)."""
    if "expects 'on' or 'off'" in msg:
        where = "qapi_bool_parse() at ../../qapi/qapi-util.c:104"
    elif "expects a number" in msg:
        where = "parse_option_number() at ../../util/qemu-option.c:104"
    else:
        where = "parse_option_size() at ../../util/qemu-option.c:%d" % (
            140 if "out of range" in msg else 145)
    sys.stderr.write("Unexpected error in %s:\n%s: %s\n"
                     % (where, os.path.basename(sys.argv[0]), msg))
    sys.stderr.flush()
    os.abort()


@bdrv_register
class BdrvNullCo(BlockDriver):
    """QEMU: bdrv_null_co (BDRVNullState is this instance)."""

    format_name = "null-co"
    protocol_name = "null-co"

    def __init__(self) -> None:
        self.length = 1 << 30
        self.read_zeroes = False

    def null_file_open(self, bs: BlockDriverState, filename: str, options: dict,
                       flags: int) -> None:
        """Options: ``size`` (default 1 GiB), ``read-zeroes`` (default off,
        as in QEMU 7.2: a read leaves the buffer as it was, and block
        status answers neither data nor zero, i.e. unallocated).
        Raises BlockError.  QEMU: null_file_open."""
        options.pop("filename", None)
        if filename and filename not in ("null-co://", "null-co:"):
            raise BlockError(errno.EINVAL, "The only allowed filename for this "
                             "driver is 'null-co://'")
        # (QEMU absorbs the options with &error_abort: a bad value aborts)
        try:
            self.length = qemu_opt_size(options, "size", 1 << 30)  # type: ignore[assignment]
            latency = str(options.pop("latency-ns", "0"))
            try:                              # (qemu_strtou64, base 0)
                digits = latency.lstrip("-")
                base = 16 if digits[:2].lower() == "0x" else 8 if digits[:1] == "0" else 10
                lat = int(digits, base) * (-1 if latency.startswith("-") else 1)
            except ValueError:
                raise BlockError(errno.EINVAL, "Parameter 'latency-ns' expects a number") \
                    from None
            self.read_zeroes = qemu_opt_bool(options, "read-zeroes", False)
        except BlockError as e:
            _error_abort(e.msg)
        if lat < 0 or lat >= 1 << 63:      # (an int64_t)
            raise BlockError(errno.EINVAL, "latency-ns is invalid")

    bdrv_file_open = null_file_open

    def null_getlength(self, bs: BlockDriverState) -> int:
        """The size as QEMU's int64_t holds it: from 2^63 on it is negative
        (an "error" its callers cut to an int).  QEMU: null_getlength."""
        return self.length - (1 << 64) if self.length >= 1 << 63 else self.length

    bdrv_getlength = null_getlength

    @coroutine_fn
    def null_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                       qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: null_co_preadv."""
        if self.read_zeroes:
            qemu_iovec_memset(qiov, 0, 0, nbytes)
        return 0

    bdrv_co_preadv = null_co_preadv

    @coroutine_fn
    def null_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                        qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: null_co_pwritev."""
        return 0

    bdrv_co_pwritev = null_co_pwritev

    @coroutine_fn
    def null_co_flush(self, bs: BlockDriverState) -> int:
        return 0

    bdrv_co_flush = null_co_flush

    @coroutine_fn
    def null_co_get_block_status(self, bs: BlockDriverState, offset: int,
                                 nbytes: int) -> tuple[int, int, int, object]:
        """QEMU: null_co_block_status."""
        return (BDRV_BLOCK_OFFSET_VALID | (BDRV_BLOCK_ZERO if self.read_zeroes else 0),
                nbytes, offset, bs)

    bdrv_co_get_block_status = null_co_get_block_status
