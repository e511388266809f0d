"""qcow2 zeroing and discard in the L2 tables: whole clusters get the zero
flag (or, with extended L2, an all-zero subcluster bitmap), partial
clusters of an extended-L2 image get zero subclusters, and a discard
drops clusters (reading as zero on v3, or from the backing file for a
full discard).  The old host clusters are freed after their L2 update.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-cluster.c (qcow2_cluster_discard, discard_in_l2_slice,
qcow2_subcluster_zeroize, zero_in_l2_slice, zero_l2_subclusters).
"""
from __future__ import annotations

from errno import ENOTSUP

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import BDRV_REQ_MAY_UNMAP
from gqemu.block.qcow2_cache import qcow2_cache_entry_mark_dirty, qcow2_cache_put
from gqemu.block.qcow2_cluster import get_cluster_table
from gqemu.block.qcow2_header import (
    L2E_OFFSET_MASK, QCOW_L2_BITMAP_ALL_ZEROES, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_ZERO)
from gqemu.block.qcow2_l2 import (
    QCOW2_CLUSTER_COMPRESSED, QCOW2_CLUSTER_UNALLOCATED, QCOW2_CLUSTER_ZERO_PLAIN,
    get_l2_bitmap, get_l2_entry,
    qcow2_get_cluster_type, set_l2_bitmap, set_l2_entry)
from gqemu.block.qcow2_refcount import qcow2_free_any_cluster, qcow2_process_discards
from gqemu.block.qcow2_state import QCOW2_DISCARD_REQUEST, Qcow2BDS

__all__ = ["qcow2_cluster_discard", "qcow2_subcluster_zeroize"]


def _is_allocated(ctype: int) -> bool:
    """QEMU: qcow2_cluster_is_allocated."""
    return ctype not in (QCOW2_CLUSTER_UNALLOCATED, QCOW2_CLUSTER_ZERO_PLAIN)


def _sub_range(lo: int, hi: int) -> int:
    """Bits lo..hi-1 of a 32-bit half.  QEMU: QCOW_OFLAG_SUB_ALLOC_RANGE."""
    return ((1 << hi) - 1) & ~((1 << lo) - 1)


def _subclusters(s, nbytes: int) -> int:
    """QEMU: size_to_subclusters."""
    return (nbytes + s.subcluster_size - 1) >> s.subcluster_bits


@coroutine_fn
def _in_l2_slice(bs: Qcow2BDS, offset: int, nb_clusters: int, zero: bool,
                 flags: int, full_discard: bool, dtype: int) -> int:
    """One L2 slice's part of a zero write (``zero``) or a discard: the
    number of clusters handled, or -errno.
    QEMU: zero_in_l2_slice / discard_in_l2_slice."""
    s = bs.opaque
    ret, e, l2_index = get_cluster_table(bs, offset)
    if ret < 0:
        return ret
    nb_clusters = min(nb_clusters, s.l2_slice_size - l2_index)
    freed = []
    for i in range(nb_clusters):
        old = get_l2_entry(s, e.data, l2_index + i)
        old_bm = get_l2_bitmap(s, e.data, l2_index + i)
        ctype = qcow2_get_cluster_type(s.extended_l2, old, s.has_data_file)
        new, new_bm = old, old_bm
        if zero:
            unmap = ctype == QCOW2_CLUSTER_COMPRESSED or (
                bool(flags & BDRV_REQ_MAY_UNMAP) and _is_allocated(ctype))
            if unmap:
                new = 0
            if s.extended_l2:
                new_bm = QCOW_L2_BITMAP_ALL_ZEROES
            else:
                new |= QCOW_OFLAG_ZERO
        else:
            unmap = True
            if full_discard:
                new = new_bm = 0
            elif bs.backing is not None or _is_allocated(ctype):
                if s.extended_l2:
                    new, new_bm = 0, QCOW_L2_BITMAP_ALL_ZEROES
                else:
                    new = QCOW_OFLAG_ZERO if s.qcow_version >= 3 else 0
        if new == old and new_bm == old_bm:
            continue
        qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
        set_l2_entry(s, e.data, l2_index + i, new)
        if s.extended_l2:
            set_l2_bitmap(s, e.data, l2_index + i, new_bm)
        # (a data file's cluster at host offset 0 is discarded there too)
        if unmap and (old & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED) or s.has_data_file):
            freed.append(old)
    qcow2_cache_put(s.l2_table_cache, e)
    for old in freed:
        qcow2_free_any_cluster(bs, old, 1, dtype)
    return nb_clusters


@coroutine_fn
def qcow2_cluster_discard(bs: Qcow2BDS, offset: int, nbytes: int,
                          dtype: int = QCOW2_DISCARD_REQUEST,
                          full_discard: bool = False) -> int:
    """Discard whole clusters (the partial last cluster at the image end
    counts as whole): on v3 or with a backing file they read as zero
    afterwards, unless ``full_discard`` (then they fall through to the
    backing file).  Context: coroutine, s->lock held.
    QEMU: qcow2_cluster_discard."""
    s = bs.opaque
    cs = s.cluster_size
    nb = (nbytes + cs - 1) >> s.cluster_bits
    s.cache_discards = True
    ret = 0
    while nb > 0:
        done = _in_l2_slice(bs, offset, nb, False, 0, full_discard, dtype)
        if done < 0:
            ret = done
            break
        nb -= done
        offset += done * cs
    s.cache_discards = False
    qcow2_process_discards(bs, ret)
    return ret


@coroutine_fn
def _zero_l2_subclusters(bs: Qcow2BDS, offset: int, nb_sc: int) -> int:
    """Mark subclusters of one cluster zero (and not allocated).
    Context: s->lock held.  QEMU: zero_l2_subclusters."""
    s = bs.opaque
    ret, e, l2_index = get_cluster_table(bs, offset)
    if ret < 0:
        return ret
    try:
        entry = get_l2_entry(s, e.data, l2_index)
        if qcow2_get_cluster_type(s.extended_l2, entry) == QCOW2_CLUSTER_COMPRESSED:
            return -ENOTSUP             # a compressed cluster is never split
        sc = (offset & (s.cluster_size - 1)) >> s.subcluster_bits
        rng = _sub_range(sc, sc + nb_sc)
        old = get_l2_bitmap(s, e.data, l2_index)
        new = (old | rng << 32) & ~rng
        if new != old:
            set_l2_bitmap(s, e.data, l2_index, new)
            qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
        return 0
    finally:
        qcow2_cache_put(s.l2_table_cache, e)


@coroutine_fn
def qcow2_subcluster_zeroize(bs: Qcow2BDS, offset: int, nbytes: int, flags: int) -> int:
    """Make a subcluster-aligned range (its end may be the image end) read
    as zero: zero subclusters for the partial clusters at either end, zero
    clusters in between (keeping their host clusters unless
    BDRV_REQ_MAY_UNMAP; compressed ones are always freed).  v2 has no zero
    flag: without a backing file the clusters are discarded instead,
    with one this is -ENOTSUP.  Context: coroutine, s->lock held.
    QEMU: qcow2_subcluster_zeroize."""
    s = bs.opaque
    cs = s.cluster_size
    total = bs.total_sectors * 512
    end = offset + nbytes
    if s.qcow_version < 3:
        if bs.backing is None:
            return qcow2_cluster_discard(bs, offset, nbytes)
        return -ENOTSUP
    head = min(end, (offset + cs - 1) & ~(cs - 1)) - offset
    offset += head
    tail = 0 if end >= total else end - max(offset, end & ~(cs - 1))
    end -= tail
    s.cache_discards = True             # freed clusters: discarded merged at the end
    ret = _zeroize(bs, offset, head, end, tail, flags)
    s.cache_discards = False
    qcow2_process_discards(bs, ret)
    return ret


@coroutine_fn
def _zeroize(bs: Qcow2BDS, offset: int, head: int, end: int, tail: int, flags: int) -> int:
    """qcow2_subcluster_zeroize's head, whole clusters and tail."""
    s = bs.opaque
    cs = s.cluster_size
    if head:
        ret = _zero_l2_subclusters(bs, offset - head, _subclusters(s, head))
        if ret < 0:
            return ret
    nb = max(0, end - offset + cs - 1) >> s.cluster_bits
    while nb > 0:
        done = _in_l2_slice(bs, offset, nb, True, flags, False, QCOW2_DISCARD_REQUEST)
        if done < 0:
            return done
        nb -= done
        offset += done * cs
    if tail:
        return _zero_l2_subclusters(bs, end, _subclusters(s, tail))
    return 0
