"""Named dirty bitmaps of a node: which ``granularity``-sized chunks of the
node were written (or discarded) since the bitmap was created or cleared.

A bitmap is held sparse, as a dict of fixed-size runs of bits (a Python int
each), so a bitmap of a huge image costs memory only where it is dirty.
``serialize_part`` / ``deserialize_part`` give QEMU's on-disk form: bit i
of the bitmap is bit (i % 8) of byte (i // 8) (little-endian words).

Context: any (no I/O).  Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block/dirty-bitmap.c, util/hbitmap.c (serialization).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

_RUN_BITS = 1 << 20                 # bits per stored run
_RUN_MASK = (1 << _RUN_BITS) - 1
BDRV_BITMAP_MAX_NAME_SIZE = 1023


class BdrvDirtyBitmap:
    """QEMU: BdrvDirtyBitmap (the HBitmap reduced to its lowest level)."""

    def __init__(self, bs: Any, granularity: int, name: Optional[str], size: int) -> None:
        self.bs = bs
        self.name = name
        self.granularity = granularity
        self.gbits = granularity.bit_length() - 1
        self.size = size
        self.disabled = False
        self.persistent = False
        self.readonly = False
        self.inconsistent = False
        self.busy = False
        self.runs: dict[int, int] = {}

    @property
    def nbits(self) -> int:
        return -(-self.size >> self.gbits)

    # --------------------------------------------------------------- bits

    def set_bits(self, first: int, last: int) -> None:
        """Set bits first..last (inclusive)."""
        while first <= last:
            run, lo = divmod(first, _RUN_BITS)
            hi = min(_RUN_BITS - 1, lo + (last - first))
            mask = ((1 << (hi - lo + 1)) - 1) << lo
            self.runs[run] = self.runs.get(run, 0) | mask
            first += hi - lo + 1

    def set_dirty(self, offset: int, nbytes: int) -> None:
        """QEMU: bdrv_set_dirty_bitmap_locked (hbitmap_set)."""
        if nbytes <= 0:
            return
        end = min(offset + nbytes, self.size)
        if offset >= end:
            return
        self.set_bits(offset >> self.gbits, (end - 1) >> self.gbits)

    def clear(self) -> None:
        """QEMU: bdrv_clear_dirty_bitmap."""
        self.runs.clear()

    def merge(self, src: "BdrvDirtyBitmap") -> None:
        """OR ``src`` in, each of its dirty bytes mapped to this granularity.
        QEMU: hbitmap_merge."""
        if src.gbits == self.gbits:
            for k, v in src.runs.items():
                self.runs[k] = self.runs.get(k, 0) | v
            return
        for start, end in src.dirty_ranges():
            self.set_dirty(start, end - start)

    def dirty_ranges(self) -> Iterator[tuple[int, int]]:
        """(start, end) byte ranges of dirty chunks, ascending, merged."""
        cur: Optional[list[int]] = None
        for run in sorted(self.runs):
            v = self.runs[run]
            base = run * _RUN_BITS
            while v:
                low = (v & -v).bit_length() - 1
                ones = (~(v >> low)) & ((v >> low) + 1)     # lowest zero above the run
                n = ones.bit_length() - 1
                b0, b1 = base + low, base + low + n
                v &= ~(((1 << n) - 1) << low)
                s, e = b0 << self.gbits, min(b1 << self.gbits, self.size)
                if cur is not None and cur[1] == s:
                    cur[1] = e
                else:
                    if cur is not None:
                        yield cur[0], cur[1]
                    cur = [s, e]
        if cur is not None:
            yield cur[0], cur[1]

    def count(self) -> int:
        """Dirty bytes (QEMU: bdrv_get_dirty_count)."""
        return sum(e - s for s, e in self.dirty_ranges())

    # ------------------------------------------------------ serialization

    def serialize_bits(self, first: int, nbits: int) -> bytes:
        """Bits first..first+nbits-1 as bytes (first must be 8-aligned)."""
        out = 0
        pos = 0
        while pos < nbits:
            run, lo = divmod(first + pos, _RUN_BITS)
            take = min(_RUN_BITS - lo, nbits - pos)
            v = self.runs.get(run, 0)
            if v:
                out |= ((v >> lo) & ((1 << take) - 1)) << pos
            pos += take
        return out.to_bytes((nbits + 7) // 8, "little")

    def deserialize_bits(self, first: int, nbits: int, data: bytes) -> None:
        """OR ``nbits`` bits of ``data`` in at bit ``first``."""
        v = int.from_bytes(data[:(nbits + 7) // 8], "little") & ((1 << nbits) - 1)
        pos = 0
        while v and pos < nbits:
            run, lo = divmod(first + pos, _RUN_BITS)
            take = min(_RUN_BITS - lo, nbits - pos)
            part = v & ((1 << take) - 1)
            if part:
                self.runs[run] = self.runs.get(run, 0) | (part << lo)
            v >>= take
            pos += take

    def truncate(self, size: int) -> None:
        """QEMU: bdrv_dirty_bitmap_truncate (bits past the end dropped)."""
        self.size = size
        n = self.nbits
        for run in list(self.runs):
            if run * _RUN_BITS >= n:
                del self.runs[run]
            elif (run + 1) * _RUN_BITS > n:
                self.runs[run] &= (1 << (n - run * _RUN_BITS)) - 1


def bdrv_dirty_bitmaps(bs: Any) -> list[BdrvDirtyBitmap]:
    """The node's bitmaps, newest first (QEMU: FOR_EACH_DIRTY_BITMAP)."""
    lst = getattr(bs, "dirty_bitmaps", None)
    if lst is None:
        lst = bs.dirty_bitmaps = []
    return lst


def bdrv_find_dirty_bitmap(bs: Any, name: str) -> Optional[BdrvDirtyBitmap]:
    for bm in bdrv_dirty_bitmaps(bs):
        if bm.name == name:
            return bm
    return None


def bdrv_create_dirty_bitmap(bs: Any, granularity: int, name: Optional[str],
                             size: int) -> BdrvDirtyBitmap:
    """Raises ValueError with QEMU's message.  QEMU: bdrv_create_dirty_bitmap."""
    if name:
        if bdrv_find_dirty_bitmap(bs, name):
            raise ValueError("Bitmap already exists: %s" % name)
        if len(name.encode()) > BDRV_BITMAP_MAX_NAME_SIZE:
            raise ValueError("Bitmap name too long: %s" % name)
    bm = BdrvDirtyBitmap(bs, granularity, name, size)
    bdrv_dirty_bitmaps(bs).insert(0, bm)
    return bm


def bdrv_release_dirty_bitmap(bm: BdrvDirtyBitmap) -> None:
    lst = bdrv_dirty_bitmaps(bm.bs)
    if bm in lst:
        lst.remove(bm)


def bdrv_set_dirty(bs: Any, offset: int, nbytes: int) -> None:
    """Mark a written or discarded range in every enabled bitmap.
    QEMU: bdrv_set_dirty."""
    for bm in getattr(bs, "dirty_bitmaps", None) or ():
        if not bm.disabled:
            bm.set_dirty(offset, nbytes)


def bdrv_dirty_bitmap_check(bm: BdrvDirtyBitmap, allow_ro: bool = False) -> None:
    """Raises ValueError with QEMU's message.  QEMU: bdrv_dirty_bitmap_check
    (BDRV_BITMAP_DEFAULT, or BDRV_BITMAP_ALLOW_RO)."""
    if bm.busy:
        raise ValueError("Bitmap '%s' is currently in use by another operation and "
                         "cannot be used" % bm.name)
    if not allow_ro and bm.readonly:
        raise ValueError("Bitmap '%s' is readonly and cannot be modified" % bm.name)
    if bm.inconsistent:
        raise ValueError("Bitmap '%s' is inconsistent and cannot be used\n"
                         "Try block-dirty-bitmap-remove to delete this bitmap from disk"
                         % bm.name)
