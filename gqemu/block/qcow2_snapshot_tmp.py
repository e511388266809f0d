"""Read a qcow2 image as it was in an internal snapshot, without changing
the file: the snapshot's L1 table replaces the active one in memory only
(``qemu-img measure -l``, ``convert -l``).  The node must be read-only.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: block/snapshot.c bdrv_snapshot_load_tmp(_by_id_or_name),
block/qcow2-snapshot.c qcow2_snapshot_load_tmp.
"""
from __future__ import annotations

import errno
import struct
from typing import Any, Optional

from gqemu.block.qcow2_header import QCOW_MAX_L1_SIZE, Qcow2OpenError
from gqemu.coroutine import coroutine_fn


def find_snapshot_by_id_and_name(s: Any, sn_id: Optional[str], name: Optional[str]) -> int:
    """The snapshot matching every one given of ``sn_id`` and ``name``.
    QEMU: find_snapshot_by_id_and_name."""
    for i, sn in enumerate(s.snapshots):
        if (sn_id is None or sn.id_str == sn_id) and (name is None or sn.name == name):
            return i
    return -1


@coroutine_fn
def qcow2_snapshot_load_tmp(bs: Any, sn_id: Optional[str], name: Optional[str],
                            by_id_or_name: bool = False) -> tuple[int, str]:
    """Switch ``bs`` (read-only) to the L1 table of a snapshot.  With
    ``by_id_or_name``, ``name`` is tried as an ID, then as a name.
    Returns: (0 or -errno, message).  QEMU: bdrv_snapshot_load_tmp."""
    from gqemu.block.qcow2_overlap import qcow2_co_pread_file
    from gqemu.block.qcow2_header import qcow2_validate_table
    drv = bs.drv
    if sn_id is None and name is None:
        return -errno.EINVAL, "snapshot_id and name are both NULL"
    if not bs.read_only:
        return -errno.EINVAL, "Device is not readonly"
    if drv.format_name != "qcow2":
        return -errno.ENOTSUP, ("Block format '%s' used by device '' does not support "
                                "temporarily loading internal snapshots" % drv.format_name)
    s = bs.opaque
    i = find_snapshot_by_id_and_name(s, name, None) if by_id_or_name else \
        find_snapshot_by_id_and_name(s, sn_id, name)
    if by_id_or_name and i < 0:
        i = find_snapshot_by_id_and_name(s, None, name)
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
        return ret, "Failed to load l1 table for snapshot"
    s.l1_table = list(struct.unpack(">%dQ" % sn.l1_size, buf))
    s.l1_size = sn.l1_size
    s.l1_table_offset = sn.l1_table_offset
    return 0, ""
