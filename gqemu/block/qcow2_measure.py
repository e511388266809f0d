"""``qemu-img measure``: the file size a new raw or qcow2 image needs.

qcow2 counts every piece of metadata a fully allocated image of the
(cluster-rounded) virtual size would have -- header cluster, L2 tables,
L1 table, refcount table and blocks -- and adds either all data clusters
("fully allocated") or only those the source image has data in
("required"); preallocation=falloc/full make them the same.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: block/qcow2.c (qcow2_measure, qcow2_calc_prealloc_size),
block/raw-format.c raw_measure.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from gqemu.block.block_int import BlockError
from gqemu.block.qcow2_header import QCOW_MAX_L1_SIZE
from gqemu.block.qcow2_refcount_ro import qcow2_refcount_metadata_size

UINT64_MASK = (1 << 64) - 1
BDRV_SECTOR_SIZE = 512
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21


@dataclass
class BlockMeasureInfo:
    """QEMU: the QAPI type BlockMeasureInfo (``bitmaps`` only when set)."""

    required: int
    fully_allocated: int
    bitmaps: Optional[int] = None


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def qcow2_calc_prealloc_size(total_size: int, cluster_size: int, refcount_order: int,
                             extended_l2: bool) -> int:
    """Bytes a fully allocated image of ``total_size`` takes: its data, a
    header cluster, whole L2 and L1 tables, and the refcount metadata that
    counts all of that.  QEMU: qcow2_calc_prealloc_size."""
    l2e_size = 16 if extended_l2 else 8
    aligned = _round_up(total_size, cluster_size)
    meta = cluster_size                                   # the header
    nl2e = _round_up(aligned // cluster_size, cluster_size // l2e_size)
    meta += nl2e * l2e_size                               # L2 tables
    nl1e = _round_up(nl2e * l2e_size // cluster_size, cluster_size // 8)
    meta += nl1e * 8                                      # L1 table
    refcount, _ = qcow2_refcount_metadata_size((meta + aligned) // cluster_size, cluster_size,
                                               refcount_order, False)
    return meta + refcount + aligned


def qcow2_validate_cluster_size(cluster_size: int, extended_l2: bool) -> None:
    """Raises BlockError with QEMU's message.  QEMU: validate_cluster_size."""
    bits = (cluster_size & -cluster_size).bit_length() - 1 if cluster_size else 32
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS or (1 << bits) != cluster_size:
        raise BlockError(errno.EINVAL, "Cluster size must be a power of two between %d and "
                         "%dk" % (1 << MIN_CLUSTER_BITS, 1 << (MAX_CLUSTER_BITS - 10)))
    min_extl2 = (1 << MIN_CLUSTER_BITS) * 32
    if extended_l2 and cluster_size < min_extl2:
        raise BlockError(errno.EINVAL, "Extended L2 entries are only supported with cluster "
                         "sizes of at least %d bytes" % min_extl2)


def qcow2_measure(opts: dict[str, Any], in_bs: Any,
                  block_status: Callable[[Any, int, int], tuple[int, int]]) -> BlockMeasureInfo:
    """Measure a qcow2 image made with the create options ``opts`` (typed
    QemuOpts values: sizes and numbers as int, bools as bool) from the node
    ``in_bs``, or empty of ``opts['size']`` bytes when ``in_bs`` is None.
    ``block_status(bs, offset, nbytes)`` is the caller's
    bdrv_block_status_above (the loop's way of running it).
    Raises BlockError.  QEMU: qcow2_measure."""
    from gqemu.block.block_int import (BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA,
                                       BDRV_BLOCK_ZERO)
    from gqemu.block.driver import bdrv_getlength
    extended_l2 = bool(opts.get("extended_l2", False))
    cluster_size = opts.get("cluster_size", 65536)
    qcow2_validate_cluster_size(cluster_size, extended_l2)
    compat = opts.get("compat")
    if compat is None or compat == "1.1":
        version = 3
    elif compat == "0.10":
        version = 2
    else:
        raise BlockError(errno.EINVAL, "Invalid compatibility level: '%s'" % compat)
    refcount_bits = opts.get("refcount_bits", 16) & UINT64_MASK
    if refcount_bits > 64 or refcount_bits & (refcount_bits - 1) or not refcount_bits:
        raise BlockError(errno.EINVAL, "Refcount width must be a power of two and may not "
                         "exceed 64 bits")
    if version < 3 and refcount_bits != 16:
        raise BlockError(errno.EINVAL, "Different refcount widths than 16 bits require "
                         "compatibility level 1.1 or above (use compat=1.1 or greater)")
    prealloc = opts.get("preallocation", "off")
    if prealloc not in ("off", "metadata", "falloc", "full"):
        raise BlockError(errno.EINVAL, "invalid parameter value: %s" % prealloc)
    has_backing_file = opts.get("backing_file") is not None
    required = 0
    if in_bs is not None:
        ssize = bdrv_getlength(in_bs)
        if ssize < 0:
            raise BlockError(-ssize, "Unable to get image virtual_size: %s"
                             % os.strerror(-ssize))
        virtual_size = _round_up(ssize, cluster_size)
        if has_backing_file:
            required = virtual_size     # the new backing file may share nothing
        else:
            offset = 0
            while offset < ssize:
                ret, pnum = block_status(in_bs, offset, ssize - offset)
                if ret < 0:
                    raise BlockError(-ret, "Unable to get block status: %s"
                                     % os.strerror(-ret))
                if ret & BDRV_BLOCK_ZERO:
                    pass
                elif ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED) == \
                        BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED:
                    pnum = _round_up(offset + pnum, cluster_size) - offset
                    required += offset % cluster_size + pnum
                offset += pnum
    else:
        virtual_size = _round_up(opts.get("size", 0), cluster_size)
    l2e_size = 16 if extended_l2 else 8
    l2_tables = -(-(virtual_size // cluster_size) // (cluster_size // l2e_size))
    if l2_tables * 8 > QCOW_MAX_L1_SIZE:
        raise BlockError(errno.EFBIG, "The image size is too large (try using a larger "
                         "cluster size)")
    if prealloc in ("full", "falloc"):
        required = virtual_size
    full = qcow2_calc_prealloc_size(virtual_size, cluster_size,
                                    refcount_bits.bit_length() - 1, extended_l2)
    info = BlockMeasureInfo(required=(full - virtual_size + required) & UINT64_MASK,
                            fully_allocated=full & UINT64_MASK)
    if version >= 3 and in_bs is not None and _supports_persistent_dirty_bitmap(in_bs):
        from gqemu.block.qcow2_bitmap import qcow2_get_persistent_dirty_bitmap_size
        info.bitmaps = qcow2_get_persistent_dirty_bitmap_size(in_bs, cluster_size)
    return info


def _supports_persistent_dirty_bitmap(bs: Any) -> bool:
    """A v3 qcow2 node.  QEMU: qcow2_supports_persistent_dirty_bitmap."""
    drv = getattr(bs, "drv", None)
    return drv is not None and drv.format_name == "qcow2" and bs.opaque.qcow_version >= 3


def raw_measure(opts: dict[str, Any], in_bs: Any) -> BlockMeasureInfo:
    """Raw: the virtual size (sector-rounded for a new image), allocated
    or not.  Raises BlockError.  QEMU: raw_measure."""
    from gqemu.block.driver import bdrv_getlength
    if in_bs is not None:
        required = bdrv_getlength(in_bs)
        if required < 0:
            raise BlockError(-required, "Unable to get image size: %s"
                             % os.strerror(-required))
    else:
        required = _round_up(opts.get("size", 0), BDRV_SECTOR_SIZE) & UINT64_MASK
    return BlockMeasureInfo(required=required, fully_allocated=required)
