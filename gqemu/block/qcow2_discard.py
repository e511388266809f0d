"""qcow2 discards in the image file: the clusters a free left unused are
queued (merged with a neighbouring queued region) and discarded in the
file at the end of the operation, when the image passes that kind of
discard through (the pass-discard-* options).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2,
gqemu.block.qcow2_refcount (it imports this module).

QEMU: block/qcow2-refcount.c update_refcount_discard,
qcow2_process_discards.
"""
from __future__ import annotations

from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.io_misc import bdrv_co_pdiscard
from gqemu.block.qcow2_refcount_get import qcow2_get_refcount
from gqemu.block.qcow2_state import Qcow2BDS

@coroutine_fn
def qcow2_discard_unused(bs: Qcow2BDS, offset: int, size: int, discard: int) -> None:
    """Discard in the file the clusters of the range whose refcount is now
    zero, when the image passes ``discard`` (QCOW2_DISCARD_*) through.
    QEMU: update_refcount_discard + qcow2_process_discards."""
    s = bs.opaque
    if s.discard_passthrough[int(discard)] and size > 0:
        cb = s.cluster_bits
        runs: list[list[int]] = []
        for ci in range(offset >> cb, ((offset + size - 1) >> cb) + 1):
            r, rc = qcow2_get_refcount(bs, ci)
            if r < 0 or rc:
                continue
            if runs and runs[-1][1] == ci << cb:
                runs[-1][1] += 1 << cb
            else:
                runs.append([ci << cb, (ci + 1) << cb])
        for start, end in runs:
            update_refcount_discard(s, start, end - start)
        if not s.cache_discards:
            qcow2_process_discards(bs, 0)


def update_refcount_discard(s: Any, offset: int, length: int) -> None:
    """Queue a host range for discarding, merged with a queued region it
    touches (and those two with a third they now touch).
    QEMU: update_refcount_discard."""
    for d in s.discards:
        if max(offset + length, d[0] + d[1]) - min(offset, d[0]) <= length + d[1]:
            d[0], d[1] = min(offset, d[0]), d[1] + length
            break
    else:
        d = [offset, length]
        s.discards.append(d)
    for p in list(s.discards):
        if p is d or p[0] > d[0] + d[1] or d[0] > p[0] + p[1]:
            continue
        s.discards.remove(p)
        d[0], d[1] = min(d[0], p[0]), d[1] + p[1]


@coroutine_fn
def qcow2_process_discards(bs: Qcow2BDS, ret: int) -> None:
    """Discard the queued regions in the file (advisory), or drop them
    after a failure.  QEMU: qcow2_process_discards."""
    s = bs.opaque
    regions, s.discards = s.discards, []
    if ret >= 0:
        for offset, length in regions:
            bdrv_co_pdiscard(bs.file.bs, offset, length)
