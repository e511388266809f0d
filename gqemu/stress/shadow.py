"""A shadow model of a disk under concurrent, overlapping requests.

The disk is cut into units of ``unit`` bytes; every write fills each unit
it covers with a pattern naming the write and the unit, so a read can be
decoded unit by unit into "which write's data is this".  For every unit
the model keeps the set of writes whose data may be there now, following
QEMU's ordering rules for overlapping requests (block/io.c):

- requests that overlap in time are unordered: when write W completes,
  the unit holds W's data *or* that of any write that completed after W
  started (it may have landed later); writes that completed before W
  started are overwritten for good;
- a failed write (or an injected fault) may or may not have landed;
- a discard may or may not zero the range (QEMU skips unaligned parts and
  drivers may ignore it); write-zeroes zeroes it;
- a read may return, per unit, anything possible when it started or the
  data of any write in flight while it ran.

Serialising requests (the read-modify-write of an unaligned write) must
make the result equal to *some* order of the writes, unit by unit; a lost
update (two RMWs of one block both reading the old block) leaves a unit
holding data no ordering allows, and the read that sees it fails the
``shadow_read`` invariant.
"""
from __future__ import annotations

import struct
from typing import Optional

__all__ = ["ShadowDisk", "ZERO", "INITIAL"]

ZERO = 0          # the id of "all zero bytes"
INITIAL = 1       # the id of the image's initial contents (raw images)
_MAGIC = 0x5354_5245_5353_4751     # "GQSSERTS"
_REC = struct.Struct("<IIQ")


def pattern(write_id: int, first_unit: int, nunits: int, unit: int) -> bytes:
    """The data write ``write_id`` puts on units first_unit.. (zeroes for
    ZERO)."""
    if write_id == ZERO:
        return bytes(nunits * unit)
    rep = unit // _REC.size
    return b"".join(_REC.pack(write_id, u, _MAGIC) * rep
                    for u in range(first_unit, first_unit + nunits))


class _Op:
    __slots__ = ("id", "first", "n", "start", "done", "zeroish", "during", "snap")

    def __init__(self, op_id: int, first: int, n: int, start: int, zeroish: bool) -> None:
        self.id = op_id
        self.first = first
        self.n = n
        self.start = start
        self.done = -1
        self.zeroish = zeroish
        self.during: set[int] = set()
        self.snap: list[frozenset[int]] = []


class ShadowDisk:
    """Per-unit sets of possible writes; ``seq`` orders events."""

    def __init__(self, size: int, unit: int, initial: int) -> None:
        assert unit % _REC.size == 0 and size % unit == 0
        self.unit = unit
        self.units = size // unit
        self.possible: list[frozenset[int]] = [frozenset((initial,))] * self.units
        self.zeroish = {ZERO}
        self.seq = 0
        self.next_id = 2
        self.done_at: dict[int, int] = {ZERO: -1, INITIAL: -1}
        self.writes: dict[int, _Op] = {}       # in flight
        self.reads: dict[int, _Op] = {}        # in flight
        self.extent: dict[int, tuple[int, int]] = {}   # write id -> units

    def _tick(self) -> int:
        self.seq += 1
        return self.seq

    def _range(self, offset: int, nbytes: int) -> tuple[int, int]:
        first = offset // self.unit
        last = -(-(offset + nbytes) // self.unit)
        return first, last - first

    # -- writes --------------------------------------------------------------

    def write_begin(self, offset: int, nbytes: int, kind: str = "write") -> tuple[int, bytes]:
        """Start a write ('write', 'zero' or 'discard'); returns its id and
        the data to write (unit-aligned requests only)."""
        assert offset % self.unit == 0 and nbytes % self.unit == 0
        op_id = self.next_id
        self.next_id += 1
        first, n = self._range(offset, nbytes)
        zeroish = kind != "write"
        op = _Op(op_id, first, n, self._tick(), zeroish)
        if zeroish:
            self.zeroish.add(op_id)
        self.writes[op_id] = op
        self.extent[op_id] = (first, first + n)
        for r in self.reads.values():
            if r.first < first + n and first < r.first + r.n:
                r.during.add(op_id)
        data = b"" if kind != "write" else pattern(op_id, first, n, self.unit)
        return op_id, data

    def write_end(self, op_id: int, ret: int, kind: str = "write") -> None:
        op = self.writes.pop(op_id)
        op.done = self._tick()
        self.done_at[op_id] = op.done
        poss = self.possible
        certain = ret >= 0 and kind != "discard"
        for u in range(op.first, op.first + op.n):
            if certain:
                later = [x for x in poss[u] if self.done_at.get(x, 0) > op.start]
                poss[u] = frozenset([op_id, *later])
            else:
                poss[u] = poss[u] | {op_id}

    # -- reads ---------------------------------------------------------------

    def read_begin(self, offset: int, nbytes: int) -> int:
        first, n = self._range(offset, nbytes)
        op_id = -self._tick()
        op = _Op(op_id, first, n, -op_id, False)
        op.snap = self.possible[first:first + n]
        for w in self.writes.values():
            if w.first < first + n and first < w.first + w.n:
                op.during.add(w.id)
        self.reads[op_id] = op
        return op_id

    def decode(self, data: bytes, first: int) -> list[Optional[int]]:
        """The write id found in each unit of ``data`` (None: garbage)."""
        out: list[Optional[int]] = []
        u = self.unit
        for k in range(len(data) // u):
            chunk = data[k * u:(k + 1) * u]
            if not any(chunk):
                out.append(ZERO)
                continue
            wid, unit_no, magic = _REC.unpack_from(chunk)
            if (magic != _MAGIC or unit_no != first + k
                    or chunk != chunk[:_REC.size] * (u // _REC.size)):
                out.append(None)
            else:
                out.append(wid)
        return out

    def read_end(self, op_id: int, data: Optional[bytes]) -> Optional[str]:
        """Finish a read; returns a description of the first unit whose
        data no ordering allows, or None."""
        op = self.reads.pop(op_id)
        if data is None:
            return None
        found = self.decode(data, op.first)
        extent = self.extent
        for k, wid in enumerate(found):
            u = op.first + k
            allowed = op.snap[k] | {w for w in op.during
                                    if extent[w][0] <= u < extent[w][1]}
            if wid is None:
                return ("unit %d (byte %d) holds no write's data (torn or garbage);"
                        " possible: %s" % (u, u * self.unit, self._fmt(allowed)))
            if wid == ZERO:
                if not allowed & self.zeroish:
                    return ("unit %d (byte %d) reads as zeroes; possible: %s"
                            % (u, u * self.unit, self._fmt(allowed)))
            elif wid not in allowed:
                return ("unit %d (byte %d) holds %s; possible: %s"
                        % (u, u * self.unit, self._fmt(frozenset((wid,)))[1:-1],
                           self._fmt(allowed)))
        return None

    def _fmt(self, ids: frozenset[int]) -> str:
        names = sorted("zeroes" if i == ZERO else "initial data" if i == INITIAL
                       else "write #%d" % i for i in ids)
        return "{%s}" % ", ".join(names)
