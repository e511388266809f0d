"""Permissions on the node graph (QEMU >= 2.10): what each parent needs
and shares, pushed down through the drivers' ``bdrv_child_perm`` to the
protocol node, whose ``bdrv_check_perm/bdrv_set_perm`` take the image locks.

Above driver.py (it takes BlockDriverState and BdrvChild from there);
drivers and block_backend_attach.py import these functions from here.
Must not import: gqemu.block.driver_open, gqemu.block.io*, gqemu.hw.
QEMU: block.c (bdrv_check_perm, bdrv_set_perm, bdrv_*_default_perms).
"""
from __future__ import annotations

from gqemu.block.block_int import (BLK_PERM_ALL, BLK_PERM_CONSISTENT_READ, BLK_PERM_RESIZE,
                                   BLK_PERM_WRITE, BLK_PERM_WRITE_UNCHANGED, _PERM_NAMES)
from gqemu.block.driver import BdrvChild, BlockDriverState

__all__ = ["bdrv_perm_names", "bdrv_filter_default_perms", "bdrv_format_default_perms",
           "bdrv_get_cumulative_perm", "bdrv_refresh_perms"]


def bdrv_perm_names(perm: int) -> str:
    """QEMU: bdrv_perm_names."""
    return ", ".join(n for i, n in enumerate(_PERM_NAMES) if perm & (1 << i))


def bdrv_filter_default_perms(bs: BlockDriverState, child: BdrvChild, role: str,
                              perm: int, shared: int) -> tuple[int, int]:
    """Forward the parents' permissions unchanged.
    QEMU: bdrv_filter_default_perms."""
    return perm, shared


def bdrv_format_default_perms(bs: BlockDriverState, child: BdrvChild, role: str,
                              perm: int, shared: int) -> tuple[int, int]:
    """A format needs consistent reads of its file, writes and resize when
    writable, and lets nobody else write or resize it.
    QEMU: bdrv_format_default_perms."""
    if role == "backing":
        return BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL & ~(BLK_PERM_WRITE | BLK_PERM_RESIZE) | BLK_PERM_WRITE_UNCHANGED
    perm |= BLK_PERM_CONSISTENT_READ
    if not bs.read_only:
        perm |= BLK_PERM_WRITE | BLK_PERM_RESIZE
    shared &= ~(BLK_PERM_WRITE | BLK_PERM_RESIZE)
    return perm, shared


def bdrv_get_cumulative_perm(bs: BlockDriverState) -> tuple[int, int]:
    perm, shared = 0, BLK_PERM_ALL
    for c in bs.parents:
        perm |= c.perm
        shared &= c.shared_perm
    return perm, shared


def bdrv_refresh_perms(bs: BlockDriverState) -> None:
    """Apply the parents' permissions to ``bs`` and then to its children.
    Raises BlockError on a conflict (another user holds the image).
    QEMU: bdrv_check_perm + bdrv_set_perm."""
    drv = bs.drv
    if drv is None:
        return
    perm, shared = bdrv_get_cumulative_perm(bs)
    if drv.bdrv_check_perm is not None:
        drv.bdrv_check_perm(bs, perm, shared)
    if drv.bdrv_set_perm is not None:
        drv.bdrv_set_perm(bs, perm, shared)
    bs.perm, bs.shared_perm = perm, shared
    for child in bs.children:
        fn = drv.bdrv_child_perm
        if fn is not None:
            child.perm, child.shared_perm = fn(bs, child, child.role, perm, shared)
        elif drv.protocol_name or drv.is_filter:
            child.perm, child.shared_perm = bdrv_filter_default_perms(
                bs, child, child.role, perm, shared)
        else:
            child.perm, child.shared_perm = bdrv_format_default_perms(
                bs, child, child.role, perm, shared)
        bdrv_refresh_perms(child.bs)
