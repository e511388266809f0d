"""What a process's ``exit()`` leaves of a node graph.

QEMU's isa-debug-exit calls ``exit()``: no ``bdrv_close_all``, so nothing a
driver still caches (qcow2's dirty L2 and refcount tables, its dirty bit)
is written, and nothing is flushed.  :func:`bdrv_abandon` does the same to
a graph whose requests have drained: the protocol nodes (the leaves)
release their host files, and so their locks, without I/O; every node
loses its driver, so the ``bdrv_unref`` that follows does no I/O either.
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["bdrv_abandon"]


def bdrv_abandon(bs: Optional[Any], seen: Optional[set] = None) -> None:
    if seen is None:
        seen = set()
    if bs is None or id(bs) in seen:
        return
    seen.add(id(bs))
    for child in list(bs.children):
        bdrv_abandon(child.bs, seen)
    drv = bs.drv
    if drv is not None and not bs.children and drv.bdrv_close is not None:
        drv.bdrv_close(bs)
    bs.drv = None
