"""qcow (version 1) make_empty, which ``qemu-img commit`` calls on the
committed image: a zeroed L1 table written and flushed, the file cut right
after it (the L2 tables and data clusters go), the L2 cache forgotten.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/qcow.c qcow_make_empty.
"""
from __future__ import annotations

from gqemu.block.driver import BlockDriverState
from gqemu.block.io_misc import bdrv_pwrite_sync
from gqemu.block.io_truncate import bdrv_truncate


def qcow_make_empty(bs: BlockDriverState) -> int:
    """0 or -errno (from the main loop)."""
    s = bs.drv
    assert s is not None and s.format_name == "qcow" and bs.file is not None
    l1_length = len(s.l1_table) * 8        # type: ignore[attr-defined]
    s.l1_table = [0] * len(s.l1_table)     # type: ignore[attr-defined]
    if bdrv_pwrite_sync(bs.file, s.l1_table_offset,  # type: ignore[attr-defined]
                        bytes(l1_length), l1_length) < 0:
        return -1
    ret, _msg = bdrv_truncate(bs.file.bs, s.l1_table_offset + l1_length)  # type: ignore
    if ret < 0:
        return ret
    s.l2_cache.clear()                     # type: ignore[attr-defined]
    return 0
