"""qcow2 internal snapshots: the snapshot table, create, apply (goto), delete.

A snapshot is a copy of the L1 table plus one more reference on every
cluster it reaches; COPIED flags are recomputed after each change.  The
table is always rewritten to new clusters and switched in the header with
one write, so a crash leaks at most the new or old table.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-snapshot.c (and qcow2_update_snapshot_refcount from
block/qcow2-refcount.c).
"""
from __future__ import annotations

import errno
import os
import re
import struct
import time
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.io_truncate import bdrv_co_truncate
from gqemu.block.qcow2_cache import (
    qcow2_cache_entry_mark_dirty, qcow2_cache_flush, qcow2_cache_get, qcow2_cache_put,
    qcow2_caches_flush)
from gqemu.block.qcow2_cluster import qcow2_grow_l1_table
from gqemu.block.qcow2_l2 import (
    QCOW2_CLUSTER_COMPRESSED, QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC,
    get_l2_entry, qcow2_get_cluster_type, set_l2_entry)
from gqemu.block.qcow2_header import (
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_MAX_L1_SIZE, QCOW_MAX_SNAPSHOTS,
    QCOW_MAX_SNAPSHOTS_SIZE, QCOW_OFLAG_COPIED, Qcow2OpenError, c_hex, qcow2_validate_table)
from gqemu.block.qcow2_overlap import (
    qcow2_co_flush_file, qcow2_co_pread_file, qcow2_co_pwrite_file,
    qcow2_pre_write_overlap_check, qcow2_signal_corruption)
from gqemu.block.qcow2_state import (
    QCOW2_DISCARD_ALWAYS, QCOW2_DISCARD_SNAPSHOT, QCOW2_OL_ACTIVE_L1, QCOW2_OL_INACTIVE_L1, Qcow2BDS, Qcow2State)
from gqemu.block.qcow2_refcount import (
    qcow2_alloc_clusters, qcow2_free_clusters, qcow2_get_refcount,
    qcow2_parse_compressed_l2_entry, update_refcount)

_SN = struct.Struct(">QIHHIIQII")          # QCowSnapshotHeader, 40 bytes
U64 = (1 << 64) - 1


class QCowSnapshot:
    """One snapshot.  QEMU: QCowSnapshot.  (A plain class: a dataclass
    compiles its methods at import time, on every qcow2 open.)"""

    __slots__ = ("l1_table_offset", "l1_size", "id_str", "name", "disk_size",
                 "vm_state_size", "date_sec", "date_nsec", "vm_clock_nsec", "icount",
                 "unknown_extra", "extra_data_size", "id_raw", "name_raw")

    def __init__(self, l1_table_offset: int = 0, l1_size: int = 0, id_str: str = "",
                 name: str = "", disk_size: int = 0, vm_state_size: int = 0,
                 date_sec: int = 0, date_nsec: int = 0, vm_clock_nsec: int = 0,
                 icount: int = -1, unknown_extra: bytes = b"",
                 extra_data_size: int = 24) -> None:
        self.l1_table_offset = l1_table_offset
        self.l1_size = l1_size
        self.id_str = id_str
        self.name = name
        self.disk_size = disk_size
        self.vm_state_size = vm_state_size
        self.date_sec = date_sec
        self.date_nsec = date_nsec
        self.vm_clock_nsec = vm_clock_nsec
        self.icount = icount
        self.unknown_extra = unknown_extra
        self.extra_data_size = extra_data_size   # as read (v2 entries may carry less)
        # the bytes read from the table: written back as they were, even when
        # they are not UTF-8 (the str forms are for display)
        self.id_raw: bytes | None = None
        self.name_raw: bytes | None = None


def _as_read(text: str, raw: bytes | None) -> bytes:
    """``raw`` when ``text`` is still what was decoded from it."""
    if raw is not None and raw.decode("utf-8", "replace") == text:
        return raw
    return text.encode()


def qcow2_pack_snapshots(s: Qcow2State, snapshots: list[QCowSnapshot]) -> bytes:
    """The table as QEMU writes it (v3 entries carry 24 bytes of extra data)."""
    out = bytearray()
    for sn in snapshots:
        out += b"\0" * ((-len(out)) % 8)
        ids, name = _as_read(sn.id_str, sn.id_raw), _as_read(sn.name, sn.name_raw)
        extra = struct.pack(">QQq", sn.vm_state_size, sn.disk_size, sn.icount) + sn.unknown_extra
        out += _SN.pack(sn.l1_table_offset, sn.l1_size, len(ids), len(name),
                        sn.date_sec, sn.date_nsec, sn.vm_clock_nsec,
                        min(sn.vm_state_size, 0xFFFFFFFF), len(extra))
        out += extra + ids + name
    return bytes(out)


@coroutine_fn
def qcow2_write_snapshots(bs: Qcow2BDS, snapshots: list[QCowSnapshot]) -> int:
    """Write a new table, switch the header to it, free the old one.
    QEMU: qcow2_write_snapshots."""
    s = bs.opaque
    data = qcow2_pack_snapshots(s, snapshots)
    if len(data) > QCOW_MAX_SNAPSHOTS_SIZE:
        return -errno.EFBIG
    new_off = ret = 0
    if data:
        new_off = qcow2_alloc_clusters(bs, len(data))
        if new_off < 0:
            return new_off
        ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret >= 0 and data:
        ret = qcow2_pre_write_overlap_check(bs, 0, new_off, len(data))
        if ret >= 0:
            ret = qcow2_co_pwrite_file(bs, new_off, data)
        if ret >= 0:
            ret = qcow2_co_flush_file(bs)
    if ret >= 0:
        ret = qcow2_co_pwrite_file(bs, 60, struct.pack(">IQ", len(snapshots), new_off))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        if new_off:
            qcow2_free_clusters(bs, new_off, len(data), QCOW2_DISCARD_ALWAYS)
        return ret
    old_off, old_size = s.snapshots_offset, s.snapshots_size
    for sn in snapshots:
        sn.extra_data_size = 24 + len(sn.unknown_extra)
    s.snapshots = snapshots
    s.snapshots_offset, s.snapshots_size = new_off, len(data)
    s.nb_snapshots = len(snapshots)
    if old_size:
        qcow2_free_clusters(bs, old_off, old_size, QCOW2_DISCARD_SNAPSHOT)
    return 0


@coroutine_fn
def qcow2_update_snapshot_refcount(bs: Qcow2BDS, l1_table_offset: int, l1_size: int,
                                   addend: int) -> int:
    """Add ``addend`` (-1, 0, +1) to every cluster an L1 table reaches and
    recompute the COPIED flags.  QEMU: qcow2_update_snapshot_refcount."""
    s = bs.opaque
    cb = s.cluster_bits
    active = l1_table_offset == s.l1_table_offset
    if active:
        l1 = s.l1_table
    else:
        ret, buf = qcow2_co_pread_file(bs, l1_table_offset, l1_size * 8)
        if ret < 0:
            return ret
        l1 = list(struct.unpack(">%dQ" % l1_size, buf))
    l1_modified = False
    for i in range(l1_size):
        l2_offset = l1[i] & L1E_OFFSET_MASK
        if not l2_offset:
            continue
        if l2_offset & (s.cluster_size - 1):
            qcow2_signal_corruption(bs, True, -1, -1, "L2 table offset %s unaligned "
                                    "(L1 index: %s)" % (c_hex(l2_offset), c_hex(i)))
            return -errno.EIO
        for first in range(0, s.l2_size, s.l2_slice_size):     # one cache slice at a time
            ret, e = qcow2_cache_get(bs, s.l2_table_cache,
                                     l2_offset + first * s.l2_entry_size)
            if ret < 0:
                return ret
            ret = _update_l2_slice(bs, e, addend, l2_offset, first)
            qcow2_cache_put(s.l2_table_cache, e)
            if ret < 0:
                return ret
        if addend:
            ret = update_refcount(bs, l2_offset, 1 << cb, abs(addend), addend < 0)
            if ret < 0:
                return ret
        ret, rc = qcow2_get_refcount(bs, l2_offset >> cb)
        if ret < 0:
            return ret
        new = l2_offset | QCOW_OFLAG_COPIED if rc == 1 else l2_offset
        if new != l1[i]:
            l1[i] = new
            l1_modified = True
    ret = qcow2_caches_flush(bs)
    if ret < 0:
        return ret
    if l1_modified and addend >= 0:
        ign = QCOW2_OL_ACTIVE_L1 | QCOW2_OL_INACTIVE_L1
        ret = qcow2_pre_write_overlap_check(bs, ign, l1_table_offset, l1_size * 8)
        if ret >= 0:
            ret = qcow2_co_pwrite_file(bs, l1_table_offset,
                                       struct.pack(">%dQ" % l1_size, *l1))
        if ret >= 0:
            ret = qcow2_co_flush_file(bs)
        if ret < 0:
            return ret
    return 0


@coroutine_fn
def _update_l2_slice(bs: Qcow2BDS, e: Any, addend: int, l2_offset: int, first: int) -> int:
    """One L2 slice of qcow2_update_snapshot_refcount: every entry's
    refcount moved by ``addend`` and its COPIED flag recomputed (a
    compressed cluster never has it; an unaligned one is corruption).
    Returns 0 or -errno."""
    s = bs.opaque
    cb = s.cluster_bits
    for j in range(s.l2_slice_size):
        old = get_l2_entry(s, e.data, j)
        ent = old & ~QCOW_OFLAG_COPIED
        t = qcow2_get_cluster_type(s.extended_l2, ent)
        rc = 0
        if t == QCOW2_CLUSTER_COMPRESSED:
            if addend:
                co, cl = qcow2_parse_compressed_l2_entry(s, ent)
                ret = update_refcount(bs, co, cl, abs(addend), addend < 0)
                if ret < 0:
                    return ret
            rc = 2                          # compressed clusters are never rewritten
        elif t in (QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC):
            host = ent & L2E_OFFSET_MASK
            if host & (s.cluster_size - 1):
                qcow2_signal_corruption(bs, True, -1, -1, "Cluster allocation offset %s "
                                        "unaligned (L2 offset: %s, L2 index: %s)"
                                        % (c_hex(host), c_hex(l2_offset), c_hex(first + j)))
                return -errno.EIO
            if addend:
                ret = update_refcount(bs, host, 1 << cb, abs(addend), addend < 0)
                if ret < 0:
                    return ret
            ret, rc = qcow2_get_refcount(bs, host >> cb)
            if ret < 0:
                return ret
        if rc == 1:
            ent |= QCOW_OFLAG_COPIED
        if ent != old:
            set_l2_entry(s, e.data, j, ent)
            qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
    return 0


def find_snapshot_by_id_or_name(s: Qcow2State, name: str) -> int:
    """QEMU: find_snapshot_by_id_or_name."""
    for i, sn in enumerate(s.snapshots):
        if sn.id_str == name:
            return i
    for i, sn in enumerate(s.snapshots):
        if sn.name == name:
            return i
    return -1


def _validate_sn_l1(s: Qcow2State, sn: QCowSnapshot) -> tuple[int, str]:
    """(0, "") or (-errno, message): EFBIG too large, EINVAL offset invalid."""
    try:
        qcow2_validate_table(sn.l1_table_offset, sn.l1_size, 8, QCOW_MAX_L1_SIZE,
                             s.cluster_size, "Snapshot L1 table")
    except Qcow2OpenError as e:
        return -e.errno, e.msg
    return 0, ""


@coroutine_fn
def qcow2_snapshot_create(bs: Qcow2BDS, name: str) -> tuple[int, str]:
    """Create snapshot ``name``.  Returns: (0 or -errno, message).
    QEMU: qcow2_snapshot_create."""
    s = bs.opaque
    if s.has_data_file:             # the data file cannot keep a snapshot's clusters
        return -errno.ENOTSUP, ""
    if s.nb_snapshots >= QCOW_MAX_SNAPSHOTS:
        return -errno.EFBIG, ""
    # strtoul: a number past ULONG_MAX is ULONG_MAX, and the next ID wraps
    ids = [min(int(m.group(1)), U64) for m in (re.match(r"\s*\+?(\d+)", sn.id_str)
                                               for sn in s.snapshots) if m]
    now = time.time()
    sn = QCowSnapshot(l1_size=s.l1_size, id_str=str((max(ids, default=0) + 1) & U64),
                      name=name, disk_size=s.size, date_sec=int(now),
                      date_nsec=int((now % 1) * 1e9), icount=0)
    off = qcow2_alloc_clusters(bs, s.l1_size * 8)
    if off < 0:
        return off, "Could not allocate the snapshot L1 table"
    sn.l1_table_offset = off
    ret = qcow2_pre_write_overlap_check(bs, 0, off, s.l1_size * 8)
    if ret >= 0:
        ret = qcow2_co_pwrite_file(bs, off, struct.pack(">%dQ" % s.l1_size, *s.l1_table))
    if ret >= 0:
        ret = qcow2_update_snapshot_refcount(bs, s.l1_table_offset, s.l1_size, 1)
    if ret >= 0:
        ret = qcow2_write_snapshots(bs, s.snapshots + [sn])
    return ret, ""


@coroutine_fn
def qcow2_snapshot_goto(bs: Qcow2BDS, name: str) -> tuple[int, str]:
    """Make snapshot ``name`` the active state.  QEMU: qcow2_snapshot_goto."""
    s = bs.opaque
    if s.has_data_file:
        return -errno.ENOTSUP, ""
    i = find_snapshot_by_id_or_name(s, name)
    if i < 0:
        return -errno.ENOENT, "Can't find the snapshot"
    sn = s.snapshots[i]
    ret, msg = _validate_sn_l1(s, sn)
    if ret < 0:
        return ret, msg
    if sn.disk_size != s.size:                 # the image takes the snapshot's size
        ret, msg = bdrv_co_truncate(bs, sn.disk_size, True, "off")
        if ret < 0:
            return ret, msg
    if sn.l1_size > s.l1_size:
        ret = qcow2_grow_l1_table(bs, sn.l1_size, exact=True)
        if ret < 0:
            return ret, ""
    ret, buf = qcow2_co_pread_file(bs, sn.l1_table_offset, sn.l1_size * 8)
    if ret < 0:
        return ret, ""
    sn_l1 = list(struct.unpack(">%dQ" % sn.l1_size, buf)) + [0] * (s.l1_size - sn.l1_size)
    ret = qcow2_update_snapshot_refcount(bs, sn.l1_table_offset, sn.l1_size, 1)
    if ret < 0:
        return ret, ""
    ret = qcow2_pre_write_overlap_check(bs, QCOW2_OL_ACTIVE_L1, s.l1_table_offset, s.l1_size * 8)
    if ret >= 0:
        ret = qcow2_co_pwrite_file(bs, s.l1_table_offset, struct.pack(">%dQ" % s.l1_size, *sn_l1))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret, ""
    ret = qcow2_update_snapshot_refcount(bs, s.l1_table_offset, s.l1_size, -1)
    s.l1_table[:] = sn_l1
    if ret >= 0:
        ret = qcow2_update_snapshot_refcount(bs, s.l1_table_offset, s.l1_size, 0)
    return ret, ""


@coroutine_fn
def qcow2_snapshot_delete(bs: Qcow2BDS, name: str,
                          snapshot_id: str | None = None) -> tuple[int, str]:
    """Delete the first snapshot with this ID and name (``snapshot_id``
    None: any ID).  QEMU: qcow2_snapshot_delete."""
    s = bs.opaque
    if s.has_data_file:
        return -errno.ENOTSUP, ""
    i = find_snapshot_by_id_and_name(s, snapshot_id, name)
    if i < 0:
        return -errno.ENOENT, "Can't find the snapshot"
    sn = s.snapshots[i]
    ret, msg = _validate_sn_l1(s, sn)
    if ret < 0:
        return ret, msg
    ret = qcow2_write_snapshots(bs, s.snapshots[:i] + s.snapshots[i + 1:])
    if ret < 0:
        return ret, "Failed to remove snapshot from snapshot list: " + os.strerror(-ret)
    ret = qcow2_update_snapshot_refcount(bs, sn.l1_table_offset, sn.l1_size, -1)
    if ret < 0:
        return ret, "Failed to free the cluster and L1 table: " + os.strerror(-ret)
    qcow2_free_clusters(bs, sn.l1_table_offset, sn.l1_size * 8, QCOW2_DISCARD_SNAPSHOT)
    ret = qcow2_update_snapshot_refcount(bs, s.l1_table_offset, s.l1_size, 0)
    return ret, ""


def find_snapshot_by_id_and_name(s: Qcow2State, snapshot_id: str | None,
                                 name: str | None) -> int:
    """The snapshot with both the ID and the name given, or with the one
    given.  QEMU: find_snapshot_by_id_and_name."""
    for i, sn in enumerate(s.snapshots):
        if (snapshot_id is None or sn.id_str == snapshot_id) \
                and (name is None or sn.name == name):
            return i
    return -1


@coroutine_fn
def qcow2_snapshot_load_tmp(bs: Qcow2BDS, snapshot_id: str | None,
                            name: str | None) -> tuple[int, str]:
    """Make a read-only image read a snapshot's L1 table (its L1 size; the
    virtual size stays the image's) until it is closed: qemu-img convert
    -l.  Returns: (0 or -errno, message).  QEMU: qcow2_snapshot_load_tmp."""
    s = bs.opaque
    if snapshot_id is None and name is None:
        return -errno.EINVAL, "snapshot_id and name are both NULL"
    if not s.read_only:
        return -errno.EINVAL, "Device is not readonly"
    i = find_snapshot_by_id_and_name(s, snapshot_id, name)
    if i < 0:
        return -errno.ENOENT, "Can't find snapshot"
    sn = s.snapshots[i]
    try:
        qcow2_validate_table(sn.l1_table_offset, sn.l1_size, 8, QCOW_MAX_L1_SIZE,
                             s.cluster_size, "Snapshot L1 table")
    except Qcow2OpenError as e:
        return -e.errno, e.msg
    ret, buf = qcow2_co_pread_file(bs, sn.l1_table_offset, sn.l1_size * 8)
    if ret < 0:
        return ret, "Failed to read l1 table for snapshot"
    s.l1_size = sn.l1_size
    s.l1_table_offset = sn.l1_table_offset
    s.l1_table = list(struct.unpack(">%dQ" % sn.l1_size, buf))
    return 0, ""
