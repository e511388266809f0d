"""qcow2 metadata cache (L2 tables, refcount blocks).

Two LRU caches of whole clusters, written back lazily.  A cache may depend on
another (``qcow2_cache_set_dependency``): before one of its dirty tables is
written, the other cache is written and the file flushed.  That is the whole
of qcow2's crash ordering (reference section 4.5).

All metadata reads and writes go through ``bdrv_co_preadv/pwritev(bs.file)``
(qcow2_overlap's file helpers) so that they show up on the same call chain
as data I/O.  The cache structures themselves are in qcow2_state.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: block/qcow2-cache.c.
"""
from __future__ import annotations

import bisect
from errno import EIO, ENOMEM, ENOSPC
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.blkdebug_events import (
    BLKDBG_L2_LOAD, BLKDBG_L2_UPDATE, BLKDBG_REFBLOCK_UPDATE_PART)
from gqemu.block.driver import BLKDBG_EVENT
from gqemu.block.qcow2_header import c_hex
from gqemu.block.qcow2_overlap import (
    qcow2_co_flush_file, qcow2_co_pread_file, qcow2_co_pwrite_file,
    qcow2_pre_write_overlap_check, qcow2_signal_corruption)
from gqemu.block.qcow2_state import (
    QCOW2_OL_ACTIVE_L2, QCOW2_OL_REFCOUNT_BLOCK, Qcow2BDS, Qcow2Cache, Qcow2CachedTable)


def _take_slot(c: Qcow2Cache, e: Qcow2CachedTable) -> None:
    k = bisect.bisect_left(c.free, e.idx)
    if k < len(c.free) and c.free[k] == e.idx:
        del c.free[k]


def _release_slot(c: Qcow2Cache, e: Qcow2CachedTable) -> None:
    """A slot left without a table: free again if it never held one."""
    e.offset = 0
    if e.lru == 0 and e.idx not in c.free:
        bisect.insort(c.free, e.idx)


def qcow2_cache_slot(c: Qcow2Cache, idx: int) -> Qcow2CachedTable:
    """The table of slot ``idx``, made on first use."""
    e = c.entries[idx]
    if e is None:
        e = c.entries[idx] = Qcow2CachedTable(idx)
    return e


def qcow2_cache_empty(c: Qcow2Cache) -> None:
    """Forget every table (after the file was rewritten underneath)."""
    for e in filter(None, c.entries):
        e.offset = 0
        e.dirty = False
        e.lru = 0
    c.by_offset.clear()
    c.free = [i for i, e in enumerate(c.entries) if e is None or e.ref == 0]


def qcow2_cache_create(bs: Qcow2BDS, num_tables: int, table_size: int,
                       name: str = "") -> Qcow2Cache:
    """QEMU: qcow2_cache_create."""
    return Qcow2Cache(name, max(num_tables, 2), table_size)


@coroutine_fn
def qcow2_cache_entry_flush(bs: Qcow2BDS, c: Qcow2Cache, e: Qcow2CachedTable) -> int:
    """Write one dirty table, honouring the cache's dependencies first.

    Context: coroutine, s->lock held.  Returns: 0 or -errno.
    QEMU: block/qcow2-cache.c qcow2_cache_entry_flush.
    """
    s = bs.opaque
    if not e.dirty or not e.offset:
        return 0
    if c.depends is not None:
        ret = qcow2_cache_flush_dependency(bs, c)
    elif c.depends_on_flush:
        ret = qcow2_co_flush_file(bs)
        if ret >= 0:
            c.depends_on_flush = False
    else:
        ret = 0
    if ret < 0:
        return ret
    ign = QCOW2_OL_REFCOUNT_BLOCK if c is s.refcount_block_cache else QCOW2_OL_ACTIVE_L2
    ret = qcow2_pre_write_overlap_check(bs, ign, e.offset, c.table_size)
    if ret < 0:
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_UPDATE_PART if c is s.refcount_block_cache
                 else BLKDBG_L2_UPDATE)
    ret = qcow2_co_pwrite_file(bs, e.offset, e.data)
    if ret < 0:
        return ret
    e.dirty = False
    return 0


@coroutine_fn
def qcow2_cache_write(bs: Qcow2BDS, c: Qcow2Cache) -> int:
    """Write every dirty table, in slot order.  QEMU: qcow2_cache_write."""
    result = 0
    for e in sorted(c.by_offset.values(), key=lambda t: t.idx):
        ret = qcow2_cache_entry_flush(bs, c, e)
        if ret < 0 and result != -ENOSPC:        # keep -ENOSPC over other errors, as QEMU
            result = ret
    return result


@coroutine_fn
def qcow2_cache_flush(bs: Qcow2BDS, c: Qcow2Cache) -> int:
    """Write every dirty table, then flush the file.  QEMU: qcow2_cache_flush."""
    result = qcow2_cache_write(bs, c)
    if result == 0:
        ret = qcow2_co_flush_file(bs)
        if ret < 0:
            result = ret
    return result


@coroutine_fn
def qcow2_caches_flush(bs: Qcow2BDS) -> int:
    """Flush the L2 table cache, then the refcount block cache (each with
    its file flush); the first failure ends it."""
    s = bs.opaque
    ret = qcow2_cache_flush(bs, s.l2_table_cache)
    return ret if ret < 0 else qcow2_cache_flush(bs, s.refcount_block_cache)


@coroutine_fn
def qcow2_cache_flush_dependency(bs: Qcow2BDS, c: Qcow2Cache) -> int:
    """QEMU: qcow2_cache_flush_dependency."""
    assert c.depends is not None
    ret = qcow2_cache_flush(bs, c.depends)
    if ret < 0:
        return ret
    c.depends = None
    c.depends_on_flush = False
    return 0


@coroutine_fn
def qcow2_cache_set_dependency(bs: Qcow2BDS, c: Qcow2Cache, dependency: Qcow2Cache) -> int:
    """Make ``c``'s writes wait for ``dependency`` to be on disk.
    QEMU: qcow2_cache_set_dependency."""
    if dependency.depends is not None:
        ret = qcow2_cache_flush_dependency(bs, dependency)
        if ret < 0:
            return ret
    if c.depends is not None and c.depends is not dependency:
        ret = qcow2_cache_flush_dependency(bs, c)
        if ret < 0:
            return ret
    c.depends = dependency
    return 0


def qcow2_cache_depends_on_flush(c: Qcow2Cache) -> None:
    """QEMU: qcow2_cache_depends_on_flush."""
    c.depends_on_flush = True


@coroutine_fn
def qcow2_cache_do_get(bs: Qcow2BDS, c: Qcow2Cache, offset: int,
                       read_from_disk: bool) -> tuple[int, Any]:
    """Find or load the table at ``offset``, taking a reference.

    Context: coroutine, s->lock held.  Returns: (0, entry) or (-errno, None).
    QEMU: block/qcow2-cache.c qcow2_cache_do_get.
    """
    s = bs.opaque
    if offset & (c.table_size - 1):
        qcow2_signal_corruption(bs, True, -1, -1, "Cannot get entry from %s "
                                "cache: Offset %s is unaligned"
                                % ("refcount block" if c is s.refcount_block_cache
                                   else "L2 table", c_hex(offset)))
        return -EIO, None
    e = c.by_offset.get(offset)
    if e is None:
        # the search starts at a slot hashed from the offset; the victim is
        # the unreferenced table least recently put back (QEMU's order, which
        # is also the order qcow2_cache_write writes tables back in)
        n = len(c.entries)
        start = (offset // c.table_size * 4) % n
        victim = None
        if c.free:
            # unused slots have the lowest LRU value: the first one from start
            k = bisect.bisect_left(c.free, start)
            victim = qcow2_cache_slot(c, c.free[k if k < len(c.free) else 0])
        else:
            for cand in filter(None, c.entries):
                if cand.ref == 0 and (victim is None or cand.lru < victim.lru):
                    victim = cand
        if victim is None:
            return -ENOMEM, None            # every table in use
        ret = qcow2_cache_entry_flush(bs, c, victim)
        if ret < 0:
            return ret, None
        if victim.offset:
            c.by_offset.pop(victim.offset, None)
        victim.offset = 0
        _take_slot(c, victim)
        if read_from_disk:
            if c is s.l2_table_cache:
                BLKDBG_EVENT(bs.file, BLKDBG_L2_LOAD)
            ret, data = qcow2_co_pread_file(bs, offset, c.table_size)
            if ret < 0:
                _release_slot(c, victim)
                return ret, None
            victim.data = data
        else:
            victim.data = bytearray(c.table_size)
        # a concurrent get may have loaded it while we yielded
        other = c.by_offset.get(offset)
        if other is not None:
            _release_slot(c, victim)
            e = other
        else:
            victim.offset = offset
            victim.dirty = False
            c.by_offset[offset] = victim
            e = victim
    e.ref += 1
    return 0, e


@coroutine_fn
def qcow2_cache_get(bs: Qcow2BDS, c: Qcow2Cache, offset: int) -> tuple[int, Any]:
    """QEMU: qcow2_cache_get."""
    return qcow2_cache_do_get(bs, c, offset, True)


@coroutine_fn
def qcow2_cache_get_empty(bs: Qcow2BDS, c: Qcow2Cache, offset: int) -> tuple[int, Any]:
    """QEMU: qcow2_cache_get_empty (the caller fills the table)."""
    return qcow2_cache_do_get(bs, c, offset, False)


def qcow2_cache_put(c: Qcow2Cache, e: Qcow2CachedTable) -> None:
    """Drop the reference ``get`` took; the last one marks the table as
    used now (for the LRU choice).  QEMU: qcow2_cache_put."""
    e.ref -= 1
    assert e.ref >= 0
    if e.ref == 0:
        c.lru_counter += 1
        e.lru = c.lru_counter


def qcow2_cache_entry_mark_dirty(c: Qcow2Cache, e: Qcow2CachedTable) -> None:
    """QEMU: qcow2_cache_entry_mark_dirty."""
    e.dirty = True


def qcow2_cache_discard_cluster(c: Qcow2Cache, offset: int, cluster_size: int) -> None:
    """Forget every table (L2 slice) of a freed cluster.  QEMU discards
    only the table at the cluster's offset (qcow2_cache_is_table_offset);
    gqemu drops them all so that no slice of a freed table is written back."""
    for off in range(offset, offset + cluster_size, c.table_size):
        qcow2_cache_discard(c, off)


def qcow2_cache_discard(c: Qcow2Cache, offset: int) -> None:
    """Forget a table whose cluster was freed.  QEMU: qcow2_cache_discard."""
    e = c.by_offset.get(offset)
    if e is not None and e.ref == 0:
        del c.by_offset[offset]
        e.offset = 0
        e.lru = 0
        e.dirty = False
        bisect.insort(c.free, e.idx)
