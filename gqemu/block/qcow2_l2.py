"""qcow2 L2 entries: cluster and subcluster types (standard, compressed,
zero, extended L2 with its allocation/zero bitmap) and entry access.

Pure functions; nothing here does I/O.

Must not import: anything above gqemu.block; gqemu.block.qcow2.

QEMU: block/qcow2.h (qcow2_get_cluster_type, qcow2_get_subcluster_type,
get_l2_entry, get_l2_bitmap, set_l2_entry, set_l2_bitmap).
"""
from __future__ import annotations

import struct

from gqemu.block.qcow2_header import (L2E_OFFSET_MASK, QCOW_L2_BITMAP_ALL_ALLOC,
                                      QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED,
                                      QCOW_OFLAG_ZERO)
from gqemu.block.qcow2_state import Qcow2State

# QCow2ClusterType
QCOW2_CLUSTER_UNALLOCATED = 0
QCOW2_CLUSTER_ZERO_PLAIN = 1
QCOW2_CLUSTER_ZERO_ALLOC = 2
QCOW2_CLUSTER_NORMAL = 3
QCOW2_CLUSTER_COMPRESSED = 4
# QCow2SubclusterType
QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN = 0
QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC = 1
QCOW2_SUBCLUSTER_ZERO_PLAIN = 2
QCOW2_SUBCLUSTER_ZERO_ALLOC = 3
QCOW2_SUBCLUSTER_NORMAL = 4
QCOW2_SUBCLUSTER_COMPRESSED = 5
QCOW2_SUBCLUSTER_INVALID = 6



def qcow2_get_cluster_type(extended_l2: bool, l2_entry: int, data_file: bool = False) -> int:
    """``data_file``: the image has an external data file, where host
    offset 0 is a real cluster (told apart from "unallocated" by the COPIED
    flag, as every data file cluster has refcount 1).
    QEMU: qcow2_get_cluster_type."""
    if l2_entry & QCOW_OFLAG_COMPRESSED:
        return QCOW2_CLUSTER_COMPRESSED
    if l2_entry & QCOW_OFLAG_ZERO and not extended_l2:
        return QCOW2_CLUSTER_ZERO_ALLOC if l2_entry & L2E_OFFSET_MASK else QCOW2_CLUSTER_ZERO_PLAIN
    if not l2_entry & L2E_OFFSET_MASK:
        if data_file and l2_entry & QCOW_OFLAG_COPIED:
            return QCOW2_CLUSTER_NORMAL
        return QCOW2_CLUSTER_UNALLOCATED
    return QCOW2_CLUSTER_NORMAL


_PLAIN_SC = {QCOW2_CLUSTER_COMPRESSED: QCOW2_SUBCLUSTER_COMPRESSED,
             QCOW2_CLUSTER_ZERO_PLAIN: QCOW2_SUBCLUSTER_ZERO_PLAIN,
             QCOW2_CLUSTER_ZERO_ALLOC: QCOW2_SUBCLUSTER_ZERO_ALLOC,
             QCOW2_CLUSTER_NORMAL: QCOW2_SUBCLUSTER_NORMAL,
             QCOW2_CLUSTER_UNALLOCATED: QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN}


def qcow2_get_subcluster_type(extended_l2: bool, l2_entry: int, l2_bitmap: int,
                              sc_index: int, data_file: bool = False) -> int:
    """QEMU: qcow2_get_subcluster_type."""
    t = qcow2_get_cluster_type(extended_l2, l2_entry, data_file)
    if not extended_l2:
        return _PLAIN_SC[t]
    if t == QCOW2_CLUSTER_COMPRESSED:
        return QCOW2_SUBCLUSTER_COMPRESSED
    if t == QCOW2_CLUSTER_NORMAL:
        if (l2_bitmap >> 32) & l2_bitmap:
            return QCOW2_SUBCLUSTER_INVALID
        if l2_bitmap & (1 << (32 + sc_index)):
            return QCOW2_SUBCLUSTER_ZERO_ALLOC
        if l2_bitmap & (1 << sc_index):
            return QCOW2_SUBCLUSTER_NORMAL
        return QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC
    if l2_bitmap & QCOW_L2_BITMAP_ALL_ALLOC:
        return QCOW2_SUBCLUSTER_INVALID
    if l2_bitmap & (1 << (32 + sc_index)):
        return QCOW2_SUBCLUSTER_ZERO_PLAIN
    return QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN


_HOST_TYPES = (QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_ZERO_ALLOC,
               QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC)


def get_l2_entry(s: Qcow2State, data: bytearray, idx: int) -> int:
    """QEMU: get_l2_entry."""
    o = idx * s.l2_entry_size
    return int.from_bytes(data[o:o + 8], "big")


def get_l2_bitmap(s: Qcow2State, data: bytearray, idx: int) -> int:
    """QEMU: get_l2_bitmap (0 without extended L2)."""
    if not s.extended_l2:
        return 0
    o = idx * 16 + 8
    return int.from_bytes(data[o:o + 8], "big")


def set_l2_entry(s: Qcow2State, data: bytearray, idx: int, value: int) -> None:
    struct.pack_into(">Q", data, idx * s.l2_entry_size, value)


def set_l2_bitmap(s: Qcow2State, data: bytearray, idx: int, value: int) -> None:
    struct.pack_into(">Q", data, idx * 16 + 8, value)
