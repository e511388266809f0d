"""Rewriting cluster 0 of an open qcow2 image from its in-memory state:
the header fields, the extensions (backing format, feature table, the
unknown ones kept as read) and the backing file name.

Context: coroutine.  Returns 0 or -errno.
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2.c (qcow2_update_header, qcow2_change_backing_file).
"""
from __future__ import annotations

import copy
import errno
import struct
from typing import Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.qcow2_overlap import qcow2_co_flush_file, qcow2_co_pwrite_file
from gqemu.block.qcow2_header import (QCOW2_AUTOCLEAR_DATA_FILE_RAW, QCOW2_HEADER_SIZE,
                                      QCOW2_INCOMPAT_DIRTY,
                                      Qcow2OpenError, qcow2_build_header_cluster)
from gqemu.block.qcow2_state import Qcow2BDS


@coroutine_fn
def qcow2_update_header(bs: Qcow2BDS) -> int:
    """Write the whole header cluster.  QEMU: qcow2_update_header."""
    s = bs.opaque
    h = copy.copy(s.header)
    h.version = s.qcow_version
    h.size = s.size
    h.l1_size = s.l1_size
    h.l1_table_offset = s.l1_table_offset
    h.refcount_table_offset = s.refcount_table_offset
    h.refcount_table_clusters = s.refcount_table_size >> (s.cluster_bits - 3)
    h.nb_snapshots = s.nb_snapshots
    h.snapshots_offset = s.snapshots_offset
    extra = b""
    if s.qcow_version >= 3:
        h.incompatible_features = s.incompatible_features
        h.compatible_features = s.compatible_features
        h.autoclear_features = s.autoclear_features
        h.refcount_order = s.refcount_order
        extra = s.unknown_header_fields
        h.header_length = QCOW2_HEADER_SIZE + len(extra)
    unknown = list(s.ext.unknown) if s.ext is not None else []
    bitmaps = b""                       # the bitmaps extension (qcow2_bitmap.py)
    if s.nb_bitmaps:
        bitmaps = struct.pack(">IIQQ", s.nb_bitmaps, 0, s.bitmap_directory_size,
                              s.bitmap_directory_offset)
    try:
        buf = qcow2_build_header_cluster(h, s.cluster_size, s.backing_format, unknown,
                                         s.backing_file, extra, s.image_data_file, bitmaps)
    except Qcow2OpenError:
        return -errno.ENOSPC
    ret = qcow2_co_pwrite_file(bs, 0, buf.ljust(s.cluster_size, b"\0"))
    if ret < 0:
        return ret
    s.header = h
    return qcow2_co_flush_file(bs)


@coroutine_fn
def qcow2_change_backing_file(bs: Qcow2BDS, backing_file: Optional[str],
                              backing_fmt: Optional[str]) -> int:
    """Point the header at another backing file (None: none).
    QEMU: qcow2_change_backing_file."""
    s = bs.opaque
    if backing_file and s.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW:
        return -errno.EINVAL            # a raw data file alone would not be the image
    if backing_file and len(backing_file.encode()) > 1023:
        return -errno.EINVAL
    old = s.backing_file, s.backing_format
    s.backing_file = backing_file or None
    s.backing_format = backing_fmt if backing_file else None
    ret = qcow2_update_header(bs)
    if ret < 0:
        s.backing_file, s.backing_format = old
    return ret


@coroutine_fn
def qcow2_mark_clean(bs: Qcow2BDS) -> int:
    """Clear the dirty bit: the caches written back and the file flushed,
    then the whole header cluster rewritten (not just the feature field:
    the header cluster's blocks are all written, which ``disk size`` shows).
    QEMU: block/qcow2.c qcow2_mark_clean (qcow2_flush_caches,
    qcow2_update_header)."""
    from gqemu.block.qcow2_cache import qcow2_cache_write
    s = bs.opaque
    if not s.incompatible_features & QCOW2_INCOMPAT_DIRTY:
        return 0
    s.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY
    for c in (s.l2_table_cache, s.refcount_block_cache):
        ret = qcow2_cache_write(bs, c)
        if ret < 0:
            return ret
    ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret
    return qcow2_update_header(bs)
