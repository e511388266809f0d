"""qcow2 refcount entries and refcount-metadata sizing: pure functions.

Refcount widths 1..64 bits (``refcount_order`` 0-6); sub-byte entries are
LSB-first.

Must not import: anything above gqemu.block; gqemu.block.qcow2.

QEMU: block/qcow2-refcount.c (get_refcount_ro0..6, set_refcount_ro0..6,
qcow2_refcount_metadata_size).
"""
from __future__ import annotations

import struct
from typing import Any


def get_refcount_ro(block: bytearray, order: int, index: int) -> int:
    """Entry ``index`` of a refcount block of width ``1 << order`` bits.
    QEMU: get_refcount_ro0 .. get_refcount_ro6."""
    if order < 3:
        bits = 1 << order
        per_byte = 8 >> order
        byte = block[index // per_byte]
        return (byte >> ((index % per_byte) * bits)) & ((1 << bits) - 1)
    w = 1 << (order - 3)
    return int.from_bytes(block[index * w:index * w + w], "big")


def set_refcount_ro(block: bytearray, order: int, index: int, value: int) -> None:
    """Store ``value`` (already range-checked).  QEMU: set_refcount_ro0..6."""
    if order < 3:
        bits = 1 << order
        per_byte = 8 >> order
        shift = (index % per_byte) * bits
        mask = ((1 << bits) - 1) << shift
        i = index // per_byte
        block[i] = (block[i] & ~mask) | ((value << shift) & mask)
        return
    w = 1 << (order - 3)
    block[index * w:index * w + w] = value.to_bytes(w, "big")


_WORD = {4: "H", 5: "I", 6: "Q"}


def refcount_values(data: Any, order: int) -> list[int]:
    """Every entry of a refcount block, decoded at once (C speed for byte
    and wider entries).  QEMU: get_refcount_ro0..6 over the block."""
    if order == 3:
        return list(data)
    if order > 3:
        return list(struct.unpack(">%d%s" % (len(data) >> (order - 3), _WORD[order]), data))
    bits = 1 << order
    mask = (1 << bits) - 1
    shifts = range(0, 8, bits)
    return [(b >> sh) & mask for b in data for sh in shifts]


def refcount_block_bytes(values: list[int], order: int, size: int) -> bytearray:
    """A ``size``-byte refcount block holding ``values`` (range-checked)
    from entry 0, the rest zero: the inverse of refcount_values.
    QEMU: set_refcount_ro0..6 over the block."""
    block = bytearray(size)
    if order == 3:
        block[:len(values)] = bytes(values)
    elif order > 3:
        struct.pack_into(">%d%s" % (len(values), _WORD[order]), block, 0, *values)
    else:
        for i, v in enumerate(values):
            if v:
                set_refcount_ro(block, order, i, v)
    return block


def refcount_run(block: bytearray, order: int, index: int, end: int,
                 want: int) -> tuple[bool, int]:
    """The run of entries from ``index`` (before ``end``) that are all
    zero or all non-zero: (zero, length >= 1); a zero run is not followed
    past ``want`` entries.  Byte-wide entries are searched at C speed, so
    that a scan for free clusters over a full image is not one Python call
    per cluster (gqemu's own; QEMU loops over qcow2_get_refcount)."""
    if order < 3:
        zero = get_refcount_ro(block, order, index) == 0
        n = 1
        end = min(end, index + want) if zero else end
        while index + n < end and (get_refcount_ro(block, order, index + n) == 0) == zero:
            n += 1
        return zero, n
    w = 1 << (order - 3)
    pos = index * w
    z = bytes(w)
    if block[pos:pos + w] == z:
        stop = min(end, index + want) * w
        rest = bytes(block[pos:stop]).lstrip(b"\0")
        n = (stop - pos - len(rest)) // w
        return True, n
    hit = block.find(z, pos, end * w)
    while hit >= 0 and hit % w:
        hit = block.find(z, hit + w - hit % w, end * w)
    return False, (end - index if hit < 0 else (hit - pos) // w)


def qcow2_refcount_metadata_size(clusters: int, cs: int, refcount_order: int,
                                 generous: bool) -> tuple[int, int]:
    """(bytes of refcount metadata, refcount blocks) needed to count
    ``clusters`` clusters plus the metadata itself; ``generous`` adds room
    for half the table again.  QEMU: qcow2_refcount_metadata_size."""
    per_table_cluster = cs // 8
    per_block = cs * 8 >> refcount_order
    table = blocks = n = 0
    while True:
        last = n
        blocks = -(-(clusters + table + blocks) // per_block)
        table = -(-blocks // per_table_cluster)
        n = clusters + blocks + table
        if n == last and generous:
            clusters += -(-table // 2)
            n = 0
            generous = False
        if n == last:
            return (blocks + table) * cs, blocks
