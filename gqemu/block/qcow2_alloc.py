"""qcow2 host space for a guest write: in-flight allocations
(``QCowL2Meta``), reuse of clusters that may be written in place, new
clusters, the copy-on-write of their unwritten parts, and the L2 update
that links them.

The structure (and so the order of metadata I/O and of blkdebug events)
is QEMU 7.2's: ``qcow2_alloc_host_offset`` gathers as many contiguous host
bytes as it can (clusters kept in place, then new ones allocated right after
them), each needing an L2 update described by a ``QCowL2Meta``; the data is
written by the caller, then ``qcow2_handle_l2meta`` (qcow2_link.py)
performs the COW and links each meta, or frees its clusters when the
request failed.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-cluster.c (handle_dependencies, handle_copied,
handle_alloc, calculate_l2_meta, qcow2_alloc_host_offset).
"""
from __future__ import annotations

from errno import EAGAIN, EIO
from typing import Optional

from gqemu.coroutine import CoQueue, coroutine_fn, qemu_co_queue_wait
from gqemu.block.qiov import QEMUIOVector
from gqemu.block.qcow2_cache import qcow2_cache_put
from gqemu.block.qcow2_cluster import get_cluster_table, offset_to_l1_index
from gqemu.block.qcow2_header import (L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COPIED,
                                      QCOW_OFLAG_ZERO, c_hex)
from gqemu.block.qcow2_l2 import (
    QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC, QCOW2_SUBCLUSTER_COMPRESSED,
    QCOW2_SUBCLUSTER_INVALID, QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
    QCOW2_SUBCLUSTER_ZERO_ALLOC, get_l2_bitmap, get_l2_entry, qcow2_get_cluster_type,
    qcow2_get_subcluster_type)
from gqemu.block.qcow2_data_file import qcow2_data_file_length
from gqemu.block.qcow2_overlap import qcow2_file_length, qcow2_signal_corruption
from gqemu.block.qcow2_refcount import qcow2_alloc_clusters, qcow2_alloc_clusters_at
from gqemu.block.block_int import BDRV_REQUEST_MAX_BYTES
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2State

INV_OFFSET = -1


class QCowL2Meta:
    """An allocation in flight.  ``cow_start``/``cow_end`` are (offset from
    ``offset``, bytes).  QEMU: QCowL2Meta."""

    __slots__ = ("offset", "alloc_offset", "nb_clusters", "keep_old_clusters",
                 "cow_start", "cow_end", "skip_cow", "prealloc", "data_qiov",
                 "dependent_requests")

    def __init__(self, offset: int, alloc_offset: int, nb_clusters: int, keep_old: bool,
                 cow_start: tuple[int, int], cow_end: tuple[int, int]) -> None:
        self.offset = offset
        self.alloc_offset = alloc_offset
        self.nb_clusters = nb_clusters
        self.keep_old_clusters = keep_old
        self.cow_start = cow_start
        self.cow_end = cow_end
        self.skip_cow = False
        self.prealloc = False       # preallocation: extended-L2 subclusters stay unallocated
        self.data_qiov: Optional[QEMUIOVector] = None
        self.dependent_requests = CoQueue()


def l2meta_cow_start(m: QCowL2Meta) -> int:
    return m.offset + m.cow_start[0]


def l2meta_cow_end(m: QCowL2Meta) -> int:
    return m.offset + m.cow_end[0] + m.cow_end[1]


def _range_type(s: Qcow2State, entry: int, bitmap: int, sc_from: int) -> tuple[int, int]:
    """(subcluster type at ``sc_from``, how many subclusters from there
    share it).  QEMU: qcow2_get_subcluster_range_type."""
    t = qcow2_get_subcluster_type(s.extended_l2, entry, bitmap, sc_from, s.has_data_file)
    n = s.subclusters_per_cluster
    if t == QCOW2_SUBCLUSTER_INVALID or not s.extended_l2 or t == QCOW2_SUBCLUSTER_COMPRESSED:
        return t, n - sc_from
    k = sc_from + 1
    while k < n and qcow2_get_subcluster_type(True, entry, bitmap, k, s.has_data_file) == t:
        k += 1
    return t, k - sc_from


def _needs_new_alloc(s: Qcow2State, entry: int) -> bool:
    """QEMU: cluster_needs_new_alloc."""
    t = qcow2_get_cluster_type(s.extended_l2, entry, s.has_data_file)
    return not (t in (QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC)
                and entry & QCOW_OFLAG_COPIED)


def _count_single_write(s: Qcow2State, data: bytearray, l2_index: int, nb: int,
                        new_alloc: bool) -> int:
    """QEMU: count_single_write_clusters."""
    expected = get_l2_entry(s, data, l2_index) & L2E_OFFSET_MASK
    i = 0
    while i < nb:
        ent = get_l2_entry(s, data, l2_index + i)
        if _needs_new_alloc(s, ent) != new_alloc:
            break
        if not new_alloc:
            if expected != ent & L2E_OFFSET_MASK:
                break
            expected += s.cluster_size
        i += 1
    return i


def calculate_l2_meta(bs: Qcow2BDS, host_cluster: int, guest_offset: int, nbytes: int,
                      data: bytearray, l2_index: int, metas: list, keep_old: bool) -> int:
    """Describe the L2 update (and COW) a write of ``nbytes`` at
    ``guest_offset`` into ``host_cluster`` needs, if any; register it as in
    flight.  Returns 0 or -EIO.  QEMU: calculate_l2_meta."""
    s = bs.opaque
    cs, cb = s.cluster_size, s.cluster_bits
    scb = s.subcluster_bits
    start_to = guest_offset & (cs - 1)
    end_from = start_to + nbytes
    nb = (end_from + cs - 1) >> cb
    skip_cow = keep_old
    for i in range(nb):
        ent = get_l2_entry(s, data, l2_index + i)
        bm = get_l2_bitmap(s, data, l2_index + i)
        if skip_cow:
            w_from = max(start_to, i << cb)
            w_to = min(end_from, (i + 1) << cb)
            first_sc = (w_from & (cs - 1)) >> scb
            last_sc = ((w_to - 1) & (cs - 1)) >> scb
            t, cnt = _range_type(s, ent, bm, first_sc)
            if t != QCOW2_SUBCLUSTER_NORMAL or first_sc + cnt <= last_sc:
                skip_cow = False
        else:
            t = qcow2_get_subcluster_type(s.extended_l2, ent, bm, 0, s.has_data_file)
        if t == QCOW2_SUBCLUSTER_INVALID:
            l1_index = offset_to_l1_index(s, guest_offset)
            qcow2_signal_corruption(bs, True, -1, -1, "Invalid cluster entry found "
                                    "(L2 offset: %s, L2 index: %s)"
                                    % (c_hex(s.l1_table[l1_index] & L1E_OFFSET_MASK),
                                       c_hex(l2_index + i)))
            return -EIO
    if skip_cow:
        return 0
    ext = s.extended_l2
    ent = get_l2_entry(s, data, l2_index)
    bm = get_l2_bitmap(s, data, l2_index)
    sc = start_to >> scb
    t = qcow2_get_subcluster_type(ext, ent, bm, sc, s.has_data_file)
    alloc_types = (QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_ZERO_ALLOC,
                   QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC)
    if not keep_old:
        if t == QCOW2_SUBCLUSTER_COMPRESSED:
            start_from = 0
        elif t in alloc_types:
            alloc = bm & 0xffffffff
            ctz = (alloc & -alloc).bit_length() - 1 if alloc else 32
            start_from = min(sc, ctz) << scb if ext else 0
        else:
            start_from = sc << scb
    else:
        start_from = start_to if t == QCOW2_SUBCLUSTER_NORMAL else sc << scb
    last = l2_index + nb - 1
    ent = get_l2_entry(s, data, last)
    bm = get_l2_bitmap(s, data, last)
    sc = ((guest_offset + nbytes - 1) & (cs - 1)) >> scb
    t = qcow2_get_subcluster_type(ext, ent, bm, sc, s.has_data_file)
    scs = s.subcluster_size
    if not keep_old:
        if t == QCOW2_SUBCLUSTER_COMPRESSED:
            end_to = -(-end_from // cs) * cs
        elif t in alloc_types:
            end_to = -(-end_from // cs) * cs
            if ext:
                alloc = bm & 0xffffffff
                clz = 32 - alloc.bit_length()
                end_to -= min(s.subclusters_per_cluster - sc - 1, clz) << scb
        else:
            end_to = -(-end_from // scs) * scs
    else:
        end_to = end_from if t == QCOW2_SUBCLUSTER_NORMAL else -(-end_from // scs) * scs
    m = QCowL2Meta(guest_offset - start_to, host_cluster, nb, keep_old,
                   (start_from, start_to - start_from), (end_from, end_to - end_from))
    metas.append(m)
    s.cluster_allocs.insert(0, m)
    return 0


@coroutine_fn
def handle_dependencies(bs: Qcow2BDS, guest_offset: int, nbytes: int,
                        metas: list) -> tuple[int, int]:
    """Shorten the request before an overlapping allocation in flight, or
    wait for it (-EAGAIN: start over).  Returns (ret, bytes).
    QEMU: handle_dependencies."""
    s = bs.opaque
    cs = s.cluster_size
    for old in list(s.cluster_allocs):
        end = guest_offset + nbytes
        old_start = l2meta_cow_start(old) & ~(cs - 1)
        old_end = -(-l2meta_cow_end(old) // cs) * cs
        if end <= old_start or guest_offset >= old_end:
            continue
        nbytes = old_start - guest_offset if guest_offset < old_start else 0
        if nbytes == 0 and metas:
            return 0, 0
        if nbytes == 0:
            qemu_co_queue_wait(old.dependent_requests, s.lock)
            return -EAGAIN, 0
    return 0, nbytes


def _nb_clusters(s: Qcow2State, guest_offset: int, nbytes: int, l2_index: int) -> int:
    cs = s.cluster_size
    nb = ((guest_offset & (cs - 1)) + nbytes + cs - 1) >> s.cluster_bits
    # one allocation (its COW and data go out as one request) stays within
    # BDRV_REQUEST_MAX_BYTES
    return min(nb, s.l2_slice_size - l2_index, BDRV_REQUEST_MAX_BYTES >> s.cluster_bits)


@coroutine_fn
def handle_copied(bs: Qcow2BDS, guest_offset: int, host_offset: int, nbytes: int,
                  metas: list) -> tuple[int, int, int]:
    """Clusters at ``guest_offset`` that can be written in place (at
    ``host_offset`` if that is given).  Returns (1 / 0 / -errno, host
    offset, bytes).  QEMU: handle_copied."""
    s = bs.opaque
    cs = s.cluster_size
    oic = guest_offset & (cs - 1)
    ret, e, l2_index = get_cluster_table(bs, guest_offset)
    if ret < 0:
        return ret, host_offset, nbytes
    nb = _nb_clusters(s, guest_offset, nbytes, l2_index)
    ent = get_l2_entry(s, e.data, l2_index)
    cluster = ent & L2E_OFFSET_MASK
    ret = 0
    if not _needs_new_alloc(s, ent):
        flen = qcow2_data_file_length(bs) if s.has_data_file else qcow2_file_length(bs)
        if cluster & (cs - 1):
            qcow2_signal_corruption(bs, True, -1, -1, "%s cluster offset %s unaligned "
                                    "(guest offset: %s)"
                                    % ("Preallocated zero" if ent & QCOW_OFLAG_ZERO
                                       else "Data", c_hex(cluster), c_hex(guest_offset)))
            ret = -EIO
        elif flen >= 0 and cluster + cs > ((flen + cs - 1) & ~(cs - 1)):
            # gqemu is stricter than QEMU here (reliability T23); a data
            # file's clusters are bounded by that file (or the image size)
            qcow2_signal_corruption(bs, True, -1, -1, "Data cluster offset %s beyond the "
                                    "end of the image file (L2 offset: %s, L2 index: %s)"
                                    % (c_hex(cluster), c_hex(e.offset), c_hex(l2_index)))
            ret = -EIO
        elif host_offset != INV_OFFSET and cluster != host_offset:
            nbytes = 0
        else:
            keep = _count_single_write(s, e.data, l2_index, nb, False)
            nbytes = min(nbytes, keep * cs - oic)
            ret = calculate_l2_meta(bs, cluster, guest_offset, nbytes, e.data, l2_index,
                                    metas, True)
            if ret >= 0:
                ret = 1
    qcow2_cache_put(s.l2_table_cache, e)
    if ret > 0:
        host_offset = cluster + oic
    return ret, host_offset, nbytes


@coroutine_fn
def handle_alloc(bs: Qcow2BDS, guest_offset: int, host_offset: int, nbytes: int,
                 metas: list) -> tuple[int, int, int]:
    """Allocate new clusters (right at ``host_offset`` if given) for the
    clusters at ``guest_offset`` that need them.  Returns (1 / 0 / -errno,
    host offset, bytes).  QEMU: handle_alloc / do_alloc_cluster_offset."""
    s = bs.opaque
    cs, cb = s.cluster_size, s.cluster_bits
    oic = guest_offset & (cs - 1)
    ret, e, l2_index = get_cluster_table(bs, guest_offset)
    if ret < 0:
        return ret, host_offset, nbytes
    nb = _count_single_write(s, e.data, l2_index,
                             _nb_clusters(s, guest_offset, nbytes, l2_index), True)
    assert nb > 0
    if s.has_data_file:            # the data file's clusters sit at the guest offset
        alloc = guest_offset & ~(cs - 1)
        ret = 0
    elif host_offset == INV_OFFSET:
        alloc = qcow2_alloc_clusters(bs, nb << cb)
        ret = min(alloc, 0)
    else:
        alloc = host_offset & ~(cs - 1)
        got = qcow2_alloc_clusters_at(bs, alloc, nb)
        ret = min(got, 0)
        nb = max(got, 0)
    if ret >= 0 and nb == 0:
        nbytes = 0
    elif ret >= 0:
        nb_bytes = min(nbytes + oic, nb << cb)
        host_offset = alloc + oic
        nbytes = min(nbytes, nb_bytes - oic)
        ret = calculate_l2_meta(bs, alloc, guest_offset, nbytes, e.data, l2_index, metas,
                                False)
        if ret >= 0:
            ret = 1
    qcow2_cache_put(s.l2_table_cache, e)
    return ret, host_offset, nbytes


@coroutine_fn
def qcow2_alloc_host_offset(bs: Qcow2BDS, offset: int, nbytes: int) -> tuple[int, int, int, list]:
    """Host space for as much of a guest write as is contiguous in the file.

    Context: coroutine, s->lock held (dropped while waiting for an
    overlapping allocation).  Returns: (0 or -errno, bytes covered, host
    offset, the QCowL2Meta list; on error it holds what must be undone).
    QEMU: qcow2_alloc_host_offset.
    """
    while True:
        start, remaining = offset, nbytes
        cluster_offset = host_offset = INV_OFFSET
        cur = 0
        metas: list = []
        again = False
        while True:
            if host_offset == INV_OFFSET and cluster_offset != INV_OFFSET:
                host_offset = cluster_offset & ~(bs.opaque.cluster_size - 1)
            start += cur
            remaining -= cur
            if cluster_offset != INV_OFFSET:
                cluster_offset += cur
            if remaining == 0:
                break
            ret, cur = handle_dependencies(bs, start, remaining, metas)
            if ret == -EAGAIN:
                again = True
                break
            if ret < 0:
                return ret, 0, 0, metas
            if cur == 0:
                break
            ret, cluster_offset, cur = handle_copied(bs, start, cluster_offset, cur, metas)
            if ret < 0:
                return ret, 0, 0, metas
            if ret:
                continue
            if cur == 0:
                break
            ret, cluster_offset, cur = handle_alloc(bs, start, cluster_offset, cur, metas)
            if ret < 0:
                return ret, 0, 0, metas
            if ret:
                continue
            break
        if not again:
            done = nbytes - remaining
            first = host_offset + (offset & (bs.opaque.cluster_size - 1))
            return 0, done, first, metas
