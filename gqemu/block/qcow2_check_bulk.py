"""Table-at-a-time helpers for the qcow2 check (qcow2_check.py).

``qemu-img check`` visits every L2 entry and every refcount of the image;
one Python call per entry (and one thread-pool round trip per 512-byte
table) makes that minutes on a large image with small clusters (iotest
044: a million L2 tables).  These helpers do the same work a table at a
time, and hand a table back to the entry-by-entry code whenever it holds
anything but the plain case, so every message and repair stays where it was:

- ``L2TableReader``: the L2 tables an L1 table names, read as QEMU reads
  them, except that tables the L1 names one after the other at consecutive
  offsets are read in one request (up to ``L2_READ_CHUNK`` bytes): the same
  bytes at the same offsets, fewer requests.  A table the L1 names more
  than once is parsed once per L1 (so a corrupted L1 costs no unbounded I/O).
- ``l2_count_fast``: the references of a table of plain data clusters.
- ``RefblockReader``: refcount blocks decoded a block at a time, and read
  like the L2 tables, consecutive ones in one request.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-refcount.c (check_refcounts_l1/l2, compare_refcounts,
check_oflag_copied do this per entry).
"""
from __future__ import annotations

from collections import Counter
from functools import reduce
from operator import and_, ne, or_
import struct
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.qcow2_cache import qcow2_cache_get, qcow2_cache_put
from gqemu.block.qcow2_header import (
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED,
    QCOW_OFLAG_ZERO, REFT_OFFSET_MASK)
from gqemu.block.qcow2_overlap import qcow2_co_pread_file, qcow2_file_length
from gqemu.block.qcow2_refcount_ro import refcount_values
from gqemu.block.qcow2_refcount import qcow2_get_refcount
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2State

L2_READ_CHUNK = 1 << 20         # bytes of consecutive L2 tables read in one request
CHECK_FRAG_INFO = 2
# bits that take a standard L2 entry off the plain path: compressed, reserved
_L2_NOT_PLAIN = ~(L2E_OFFSET_MASK | QCOW_OFLAG_COPIED | QCOW_OFLAG_ZERO) & (2 ** 64 - 1)


def l2_table_entries(s: Qcow2State, raw: Any) -> list[tuple[int, int, int]]:
    """The non-empty (index, entry, bitmap) of an L2 table."""
    words = struct.unpack(">%dQ" % (s.cluster_size // 8), raw)
    if s.extended_l2:
        return [(i, words[2 * i], words[2 * i + 1]) for i in range(s.l2_size)
                if words[2 * i] or words[2 * i + 1]]
    return [(i, w, 0) for i, w in enumerate(words) if w]


class L2TableReader:
    """The L2 tables named by one L1 table, in L1 order."""

    def __init__(self, bs: Qcow2BDS, l1: list[int]) -> None:
        self.bs = bs
        self.s: Qcow2State = bs.opaque
        self.l1 = l1
        self.win_off = 0
        self.win: Any = b""
        self.zero = bytes(self.s.cluster_size)
        offs = [e & L1E_OFFSET_MASK for e in l1 if e]
        self.repeated: set[int] = set()
        if len(set(offs)) != len(offs):
            self.repeated = {o for o, n in Counter(offs).items() if n > 1}
        self.memo: dict[int, list[tuple[int, int, int]]] = {}

    def forget(self, l2_offset: int) -> None:
        """The table at ``l2_offset`` was written: read it again next time."""
        self.memo.pop(l2_offset, None)
        if self.win_off <= l2_offset < self.win_off + len(self.win):
            self.win = b""

    @coroutine_fn
    def read(self, l1_index: int, l2_offset: int) -> tuple[int, Any, Any]:
        """(ret, raw table, None) for a table read now that the L1 names
        once; (ret, None, entries) for one named more than once, an empty
        one, or one past the end of the file (read without I/O as empty)."""
        memo = self.memo
        if l2_offset in memo:
            return 0, None, memo[l2_offset]
        cs = self.s.cluster_size
        k = l2_offset - self.win_off
        if 0 <= k and k + cs <= len(self.win):
            win = self.win
            if win.startswith(self.zero, k) and l2_offset not in self.repeated:
                return 0, None, []
            ret, raw = 0, win[k:k + cs]
        else:
            ret, raw = self._table(l1_index, l2_offset)
            if ret < 0:
                return ret, None, []
        if raw is not None and l2_offset not in self.repeated:
            return 0, raw, None
        entries = [] if raw is None else l2_table_entries(self.s, raw)
        if l2_offset in self.repeated:
            memo[l2_offset] = entries
        return 0, None, entries

    @coroutine_fn
    def _table(self, i: int, l2_offset: int) -> tuple[int, Any]:
        bs, cs = self.bs, self.s.cluster_size
        flen = qcow2_file_length(bs)
        if flen >= 0 and l2_offset >= flen:
            return 0, None
        end = l2_offset + cs
        if not l2_offset & (cs - 1) and 0 <= flen:
            # the tables the L1 names next, while they follow this one
            l1, n, j = self.l1, len(self.l1), i + 1
            limit = min(l2_offset + L2_READ_CHUNK, flen)
            while j < n and end + cs <= limit:
                e = l1[j]
                j += 1
                if e:
                    if e & L1E_OFFSET_MASK != end:
                        break
                    end += cs
        if end - l2_offset > cs:
            ret, buf = qcow2_co_pread_file(bs, l2_offset, end - l2_offset)
            if ret >= 0:
                self.win_off, self.win = l2_offset, buf
                return 0, buf[:cs]
            # read them one by one: each table reports its own error
        return qcow2_co_pread_file(bs, l2_offset, cs)


def l2_count_fast(s: Qcow2State, raw: Any, res: Any, imrt: Any, flags: int) -> bool:
    """Count the references of a standard L2 table whose entries are all
    unallocated, zero or aligned data clusters (no reserved bits, nothing
    compressed), as check_refcounts_l2 would one entry at a time; False,
    having changed nothing, for any other table."""
    if s.extended_l2 or s.has_data_file:
        return False
    nz = list(filter(None, struct.unpack(">%dQ" % (s.cluster_size // 8), raw)))
    if not nz:
        return True
    cs = s.cluster_size
    if reduce(or_, nz) & (_L2_NOT_PLAIN | ((cs - 1) & L2E_OFFSET_MASK)):
        return False
    offs = list(filter(None, [w & L2E_OFFSET_MASK for w in nz]))
    if not offs:
        return True
    n = len(offs)
    first, last = offs[0], offs[-1]
    if last - first == (n - 1) * cs and offs == list(range(first, last + 1, cs)):
        k0 = first >> s.cluster_bits
        counts = imrt.counts
        if last >= imrt.file_len or k0 + n > len(counts):
            return False
        seg = counts[k0:k0 + n]
        if max(seg) >= s.refcount_max:
            return False
        counts[k0:k0 + n] = [v + 1 for v in seg]
        frag = 0
    else:
        frag = sum(map(ne, offs[1:], [o + cs for o in offs[:-1]]))
        for o in offs:
            imrt.inc(res, o, cs)
    if flags & CHECK_FRAG_INFO:
        res.allocated_clusters += n
        res.fragmented_clusters += frag
    return True


def l2_copied_data_clusters(s: Qcow2State, raw: Any) -> tuple[int, int] | None:
    """(first cluster index, count) when every data cluster of a standard
    L2 table has OFLAG_COPIED set and they are consecutive clusters (count
    0: none); None for any other table."""
    if s.extended_l2 or s.has_data_file:
        return None
    nz = list(filter(None, struct.unpack(">%dQ" % (s.cluster_size // 8), raw)))
    if not nz:
        return 0, 0
    if reduce(or_, nz) & QCOW_OFLAG_COMPRESSED:
        return None
    data = [w for w in nz if w & L2E_OFFSET_MASK]
    if not data:
        return 0, 0
    if not reduce(and_, data) & QCOW_OFLAG_COPIED:
        return None
    cb = s.cluster_bits
    ks = [(w & L2E_OFFSET_MASK) >> cb for w in data]
    n = len(ks)
    if ks[-1] - ks[0] != n - 1 or ks != list(range(ks[0], ks[0] + n)):
        return None
    return ks[0], n


class RefblockReader:
    """Refcount blocks decoded a block at a time.  A block in the refcount
    block cache is taken from there; any other is read from the file, and
    with it the blocks the refcount table names next at consecutive
    offsets (up to ``L2_READ_CHUNK`` bytes, the last few such reads kept):
    the bytes qcow2_get_refcount would load, in fewer requests, and not
    through the cache.  A block that failed to load is reported failed to
    the next lookup in it (``get``), as qcow2_get_refcount would have been.
    Call ``invalidate`` after changing a refcount."""
    KEEP = 64                   # decoded blocks kept
    WINDOWS = 4                 # batched reads kept

    def __init__(self, bs: Qcow2BDS) -> None:
        self.bs = bs
        self.s: Qcow2State = bs.opaque
        self.blocks: dict[int, list[int] | None] = {}
        self.windows: list[tuple[int, Any]] = []
        self.failed: dict[int, int] = {}

    def invalidate(self) -> None:
        self.blocks.clear()
        self.windows.clear()

    @coroutine_fn
    def values(self, ri: int) -> tuple[int, list[int] | None]:
        """The refcounts of refcount block ``ri``: (0, values); (0, None)
        when the block is not allocated (all zero); (1, None) when
        qcow2_get_refcount would report a corruption; (-errno, None) when
        loading it failed."""
        if ri in self.blocks:
            return 0, self.blocks[ri]
        s = self.s
        if ri >= s.refcount_table_size:
            return 0, None
        rb = s.refcount_table[ri] & REFT_OFFSET_MASK
        if not rb:
            return 0, None
        cs = s.cluster_size
        if rb & (cs - 1):
            return 1, None
        e = s.refcount_block_cache.by_offset.get(rb)
        data = e.data if e is not None else None
        for off, buf in self.windows:
            if data is None and off <= rb and rb + cs <= off + len(buf):
                data = buf[rb - off:rb - off + cs]
        if data is None:
            ret, data = self._load(ri, rb)
            if ret < 0:
                return ret, None
        values = refcount_values(data, s.refcount_order)
        if len(self.blocks) >= self.KEEP:
            self.blocks.clear()
        self.blocks[ri] = values
        return 0, values

    @coroutine_fn
    def _load(self, ri: int, rb: int) -> tuple[int, Any]:
        s, bs = self.s, self.bs
        cs = s.cluster_size
        flen = qcow2_file_length(bs)
        end, j, table = rb + cs, ri + 1, s.refcount_table
        limit = min(rb + L2_READ_CHUNK, flen)
        while j < s.refcount_table_size and end + cs <= limit and \
                table[j] & REFT_OFFSET_MASK == end:
            end += cs
            j += 1
        if end - rb > cs:
            ret, buf = qcow2_co_pread_file(bs, rb, end - rb)
            if ret >= 0:
                if len(self.windows) >= self.WINDOWS:
                    del self.windows[0]
                self.windows.append((rb, buf))
                return 0, buf[:cs]
        ret, e = qcow2_cache_get(bs, s.refcount_block_cache, rb)
        if ret < 0:
            return ret, None
        data = bytes(e.data)
        qcow2_cache_put(s.refcount_block_cache, e)
        return 0, data

    @coroutine_fn
    def get(self, k: int) -> tuple[int, int]:
        """As qcow2_get_refcount(bs, k)."""
        s = self.s
        ri = k >> s.refcount_block_bits
        ret = self.failed.pop(ri, 0)
        if ret < 0:
            return ret, 0
        ret, values = self.values(ri)
        if ret == 1:
            return qcow2_get_refcount(self.bs, k)      # it reports the corruption
        if ret < 0:
            return ret, 0
        return 0, values[k & (s.refcount_block_size - 1)] if values else 0

    @coroutine_fn
    def all_one(self, k0: int, n: int) -> bool:
        """Whether clusters k0 .. k0+n-1 all have refcount 1.  A block that
        fails to load is left for ``get`` to report."""
        s = self.s
        bits, size = s.refcount_block_bits, s.refcount_block_size
        k, end = k0, k0 + n
        while k < end:
            ri = k >> bits
            stop = min(end, (ri + 1) << bits)
            ret, values = self.values(ri)
            if ret != 0 or values is None:
                if ret < 0:
                    self.failed[ri] = ret
                return False
            a = k & (size - 1)
            seg = values[a:a + stop - k]
            if seg.count(1) != len(seg):
                return False
            k = stop
        return True
