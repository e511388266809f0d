"""Read a qcow2 image as it was in an internal snapshot, without changing
the file: the snapshot's L1 table replaces the active one in memory only
(``qemu-img measure -l``, ``convert -l``).  The node must be read-only.
The generic checks live here; the switch itself is the driver's
(qcow2_snapshot.qcow2_snapshot_load_tmp).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: block/snapshot.c bdrv_snapshot_load_tmp(_by_id_or_name).
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from gqemu.coroutine import coroutine_fn


@coroutine_fn
def bdrv_snapshot_load_tmp(bs: Any, sn_id: Optional[str], name: Optional[str],
                           by_id_or_name: bool = False) -> tuple[int, str]:
    """Switch ``bs`` (read-only) to the L1 table of a snapshot.  With
    ``by_id_or_name``, ``name`` is tried as an ID, then as a name.
    Returns: (0 or -errno, message).
    QEMU: bdrv_snapshot_load_tmp(_by_id_or_name)."""
    from gqemu.block.qcow2_snapshot import qcow2_snapshot_load_tmp
    if not bs.read_only:
        return -errno.EINVAL, "Device is not readonly"
    if bs.drv.format_name != "qcow2":
        return -errno.ENOTSUP, ("Block format '%s' used by device '' does not support "
                                "temporarily loading internal snapshots" % bs.drv.format_name)
    if not by_id_or_name:
        return qcow2_snapshot_load_tmp(bs, sn_id, name)
    ret, msg = qcow2_snapshot_load_tmp(bs, name, None)
    if ret in (-errno.ENOENT, -errno.EINVAL):
        ret, msg = qcow2_snapshot_load_tmp(bs, None, name)
    return ret, msg
