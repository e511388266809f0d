"""Block status of one node, as QEMU 7.2 answers it: the request is rounded
out to the node's request_alignment for the driver and the answer clamped
back; a driver's BDRV_BLOCK_RAW answer is asked again of the node below at
the mapped offset; data or zero means allocated, and an unallocated range
of a format without a backing file (or past the end of it) reads as zero.

The answer is ``(ret, pnum, map, file)``: BDRV_BLOCK_* flags (or -errno),
the bytes they cover (0 only at or past the end of the node, with
BDRV_BLOCK_EOF), the offset in ``file`` where the data is (valid with
BDRV_BLOCK_OFFSET_VALID) and that node.  Drivers' ``bdrv_co_get_block_status``
callbacks answer the same four values for an aligned request; the offset is
kept apart from the flags, so it may be unaligned (a raw file's length need
not be a multiple of 512).

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/io.c bdrv_co_block_status (7.2).
"""
from __future__ import annotations

import errno
from typing import Optional

from gqemu.block.block_int import (BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA, BDRV_BLOCK_EOF,
                                   BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW,
                                   BDRV_BLOCK_RECURSE, BDRV_BLOCK_ZERO)
from gqemu.block.driver import BlockDriverState, bdrv_getlength
from gqemu.coroutine import coroutine_fn

__all__ = ["bdrv_co_get_block_status"]

Status = tuple[int, int, int, Optional[BlockDriverState]]
_HOST_FILES = ("file", "host_device", "host_cdrom")      # file-posix's drivers


@coroutine_fn
def bdrv_co_get_block_status(bs: BlockDriverState, offset: int, nbytes: int,
                             want_zero: bool = True) -> Status:
    """Status of ``[offset, offset + nbytes)`` in ``bs`` from ``offset`` on:
    ``(ret, pnum, map, file)`` as the module says.  ``want_zero=False``
    asks only for allocation: a host file answers data without looking for
    holes, and no zero is worked out below or past a backing file.
    Context: coroutine.  QEMU: bdrv_co_block_status."""
    total = bdrv_getlength(bs)
    if total < 0:
        return total, 0, 0, None
    if offset >= total:
        return BDRV_BLOCK_EOF, 0, 0, None
    nbytes = min(nbytes, total - offset)
    if nbytes <= 0:
        return 0, 0, 0, None
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM, 0, 0, None
    if drv.bdrv_co_get_block_status is None:
        if drv.is_filter and bs.file is not None:
            return _below(bs.file.bs, offset, nbytes, total, want_zero)
        ret = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED
        if offset + nbytes == total:
            ret |= BDRV_BLOCK_EOF
        if drv.protocol_name:
            return ret | BDRV_BLOCK_OFFSET_VALID, nbytes, offset, bs
        return ret, nbytes, 0, None
    align = max(1, bs.bl.request_alignment)
    aligned_offset = offset // align * align
    aligned_end = -(-(offset + nbytes) // align) * align
    local_file: Optional[BlockDriverState]
    if not want_zero and drv.protocol_name in _HOST_FILES:
        # QEMU: raw_co_block_status (file-posix), !want_zero
        ret, pnum, local_map, local_file = (BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID,
                                            aligned_end - aligned_offset,
                                            aligned_offset, bs)
    else:
        ret, pnum, local_map, local_file = drv.bdrv_co_get_block_status(
            bs, aligned_offset, aligned_end - aligned_offset)
    if ret < 0:
        return ret, 0, 0, None
    if pnum <= 0:
        return -errno.EIO, 0, 0, None        # a driver bug: never loop on it
    pnum = min(pnum - (offset - aligned_offset), nbytes)
    if pnum <= 0:
        return -errno.EIO, 0, 0, None
    if ret & BDRV_BLOCK_OFFSET_VALID:
        local_map += offset - aligned_offset
    if ret & BDRV_BLOCK_RAW:
        if local_file is None or not ret & BDRV_BLOCK_OFFSET_VALID:
            return -errno.EIO, 0, 0, None
        ret, pnum2, local_map, local_file = bdrv_co_get_block_status(
            local_file, local_map, pnum, want_zero)
        if ret < 0:
            return ret, 0, 0, None
        # (the node below may end first: then nothing is left here, pnum 0,
        # and qemu-io's map says "Unexpected end of image")
        pnum = pnum2
        return _eof(ret, offset, pnum, total), pnum, local_map, local_file
    if ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO):
        ret |= BDRV_BLOCK_ALLOCATED
    elif drv.supports_backing:
        if bs.backing is None:
            ret |= BDRV_BLOCK_ZERO
        elif want_zero:
            size2 = bdrv_getlength(bs.backing.bs)
            if 0 <= size2 <= offset:
                ret |= BDRV_BLOCK_ZERO
    if ret & BDRV_BLOCK_RECURSE:
        ret &= ~BDRV_BLOCK_RECURSE
        if (want_zero and local_file is not None and local_file is not bs and ret & BDRV_BLOCK_DATA
                and not ret & BDRV_BLOCK_ZERO and ret & BDRV_BLOCK_OFFSET_VALID):
            ret, pnum = _recurse_into_file(ret, pnum, local_map, local_file)
    return _eof(ret, offset, pnum, total), pnum, local_map, local_file


def _eof(ret: int, offset: int, pnum: int, total: int) -> int:
    return ret | BDRV_BLOCK_EOF if ret >= 0 and offset + pnum == total else ret


@coroutine_fn
def _below(file: BlockDriverState, offset: int, nbytes: int, total: int,
           want_zero: bool = True) -> Status:
    """A filter without its own answer: the node below's, at the same
    offset.  QEMU: bdrv_co_block_status (default code for filters)."""
    ret, pnum, local_map, local_file = bdrv_co_get_block_status(file, offset, nbytes,
                                                                want_zero)
    if ret >= 0 and not pnum:
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED, nbytes, 0, None
    if ret >= 0:
        ret = _eof(ret & ~BDRV_BLOCK_EOF, offset, pnum, total)
    return ret, pnum, local_map, local_file


@coroutine_fn
def _recurse_into_file(ret: int, pnum: int, host: int,
                       file: BlockDriverState) -> tuple[int, int]:
    """The driver asked (BDRV_BLOCK_RECURSE, e.g. a metadata-preallocated
    qcow2) whether the data it maps is a hole in the protocol node: errors
    are ignored, this only adds information; past the node's end everything
    reads as zero.  QEMU: bdrv_co_block_status."""
    ret2, file_pnum, _, _ = bdrv_co_get_block_status(file, host, pnum)
    if ret2 >= 0:
        if ret2 & BDRV_BLOCK_EOF and (not file_pnum or ret2 & BDRV_BLOCK_ZERO):
            ret |= BDRV_BLOCK_ZERO
        else:
            pnum = file_pnum
            ret |= ret2 & BDRV_BLOCK_ZERO
    return ret, pnum


@coroutine_fn
def bdrv_co_block_status_above(bs: BlockDriverState, base: Optional[BlockDriverState],
                               offset: int, nbytes: int,
                               want_zero: bool = True) -> tuple[int, int]:
    """The status of ``[offset, offset + nbytes)`` as seen through the
    backing chain from ``bs`` down to (not including) ``base``; a layer
    shorter than the range reads as allocated zeroes.  Context: coroutine.
    Returns: (status or -errno, bytes it covers).
    QEMU: bdrv_co_common_block_status_above (include_base = false)."""
    if bs is base:
        return 0, nbytes
    ret, pnum, _, _ = bdrv_co_get_block_status(bs, offset, nbytes, want_zero)
    if ret < 0 or pnum == 0 or ret & BDRV_BLOCK_ALLOCATED:
        return ret, pnum
    eof = offset + pnum if ret & BDRV_BLOCK_EOF else -1
    nbytes = pnum
    p: Optional[BlockDriverState] = bs.backing.bs if bs.backing is not None else None
    while p is not None and p is not base:
        ret, pnum, _, _ = bdrv_co_get_block_status(p, offset, nbytes, want_zero)
        if ret < 0:
            return ret, pnum
        if pnum == 0:
            ret, pnum = BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED, nbytes
            break
        if ret & BDRV_BLOCK_ALLOCATED:
            ret &= ~BDRV_BLOCK_EOF
            break
        nbytes = pnum
        p = p.backing.bs if p.backing is not None else None
    if offset + pnum == eof:
        ret |= BDRV_BLOCK_EOF
    return ret, pnum
