"""qcow2 preallocation when an image grows (create and resize).

``metadata``: clusters are allocated and linked range by range, each L2
table just before the data it maps, and the file is extended to the end of
the last allocation.  ``falloc``/``full``: refcount structures for the
whole new area are made first (a new refcount table at the old end of the
file), then all new data clusters in one run after them, which the file
driver preallocates; the L2 tables are allocated as the entries are
linked, wherever the allocator finds room.  Either way the entries are
marked preallocated: with extended L2 their subclusters stay unallocated.

Context: coroutine, s->lock held.  Returns (0 or -errno, message).
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2.c (preallocate_co, qcow2_co_truncate's falloc/full case).
"""
from __future__ import annotations

import os
import sys

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import bdrv_getlength
from gqemu.block.qcow2_alloc import QCowL2Meta, qcow2_alloc_host_offset
from gqemu.block.qcow2_link import qcow2_alloc_cluster_link_l2, qcow2_handle_l2meta
from gqemu.block.qcow2_overlap import qcow2_file_length
from gqemu.block.qcow2_refcount import (qcow2_alloc_clusters_at, qcow2_free_clusters,
                                        qcow2_get_refcount, qcow2_refcount_area)
from gqemu.block.qcow2_state import Qcow2BDS

INT_MAX = (1 << 31) - 1


def _err(ret: int, what: str) -> tuple[int, str]:
    return ret, "%s: %s" % (what, os.strerror(-ret))


@coroutine_fn
def qcow2_get_last_cluster(bs: Qcow2BDS, size: int) -> int:
    """Index of the last cluster that starts below ``size`` with a non-zero
    refcount, or -1 (or -errno).  QEMU: qcow2_get_last_cluster."""
    s = bs.opaque
    i = -(-size >> s.cluster_bits) - 1
    while i >= 0:
        ret, rc = qcow2_get_refcount(bs, i)
        if ret < 0:
            sys.stderr.write("Can't get refcount for cluster %d: %s\n" % (i, os.strerror(-ret)))
            return ret
        if rc:
            return i
        i -= 1
    return -1


@coroutine_fn
def preallocate_co(bs: Qcow2BDS, offset: int, new_length: int, mode: str) -> tuple[int, str]:
    """Allocate and link host clusters for guest ``[offset, new_length)``
    (no data is written), then extend the file to the end of the last
    allocation.  QEMU: preallocate_co."""
    from gqemu.block.io_truncate import bdrv_co_truncate
    s = bs.opaque
    nbytes = new_length - offset
    host_offset = cur = 0
    while nbytes:
        cur = min(nbytes, INT_MAX & ~(s.cluster_size - 1))
        ret, cur, host_offset, metas = qcow2_alloc_host_offset(bs, offset, cur)
        if ret < 0:
            qcow2_handle_l2meta(bs, metas, False)
            return _err(ret, "Allocating clusters failed")
        for m in metas:
            m.prealloc = True
        ret = qcow2_handle_l2meta(bs, metas, True)
        if ret < 0:
            qcow2_handle_l2meta(bs, metas, False)
            return _err(ret, "Mapping clusters failed")
        nbytes -= cur
        offset += cur
    data = bs.file if s.data_file is None else s.data_file     # where the clusters are
    if host_offset + cur > bdrv_getlength(data.bs):
        return bdrv_co_truncate(data.bs, host_offset + cur, False,
                                "off" if mode == "metadata" else mode)
    return 0, ""


@coroutine_fn
def qcow2_co_preallocate_falloc(bs: Qcow2BDS, old_length: int, offset: int,
                                prealloc: str, zero_write: bool = False) -> tuple[int, str]:
    """Grow from ``old_length`` to ``offset`` with every new data cluster
    allocated in one run (``prealloc`` falloc or full for the file).  With
    ``zero_write`` (a backing file longer than the image) the new clusters'
    subclusters are marked allocated, so they read the file's zeroes.
    QEMU: qcow2_co_truncate, case PREALLOC_MODE_FALLOC / _FULL
    (subclusters_need_allocation)."""
    from gqemu.block.io_truncate import bdrv_co_truncate
    s = bs.opaque
    cs = s.cluster_size
    old_file_size = qcow2_file_length(bs)
    if old_file_size < 0:
        return _err(old_file_size, "Failed to inquire current file length")
    last = qcow2_get_last_cluster(bs, old_file_size)
    if last < -1:
        return _err(last, "Failed to find the last cluster")
    old_file_size = (last + 1) * cs if last >= 0 else -(-old_file_size // cs) * cs
    nb_data = (-(-offset // cs) * cs - (old_length & ~(cs - 1))) // cs
    # an over-estimate: the refcount structures must also cover every L2
    # table the new data may need (one more for an unaligned head or tail)
    nb_l2 = -(-nb_data // (s.l2_size)) + 1
    start = qcow2_refcount_area(bs, old_file_size, nb_data + nb_l2, True, 0, 0)
    if start < 0:
        return _err(start, "Failed to resize refcount structures")
    ret = qcow2_alloc_clusters_at(bs, start, nb_data)
    if ret < 0:
        return _err(ret, "Failed to allocate data clusters")
    ret, msg = bdrv_co_truncate(bs.file.bs, start + nb_data * cs, False, prealloc)
    if ret < 0:
        qcow2_free_clusters(bs, start, nb_data * cs)
        return ret, "Failed to resize underlying file: " + msg
    host, guest = start, old_length
    while nb_data:
        l2_index = (guest >> s.cluster_bits) & (s.l2_size - 1)
        n = min(nb_data, s.l2_size - l2_index)
        head = guest & (cs - 1)
        guest &= ~(cs - 1)
        m = QCowL2Meta(guest, host, n, False, (0, head), (n * cs, 0))
        m.prealloc = not zero_write
        ret = qcow2_alloc_cluster_link_l2(bs, m)
        if ret < 0:
            qcow2_free_clusters(bs, host, nb_data * cs)
            return _err(ret, "Failed to update L2 tables")
        guest += n * cs
        host += n * cs
        nb_data -= n
    return 0, ""
