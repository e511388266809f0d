"""Attaching a disk to an IDE slot: size, geometry, identity strings.

``ide_init_drive(s, blk, ...)`` reads the disk size from the block layer,
guesses the CHS geometry as QEMU's ``hd_geometry_guess`` does (an MBR
partition table's LCHS when it has at most 16 heads, else 16 heads x 63
sectors x size-derived cylinders, clamped to 2..16383), and names the drive
``QM%05d`` / ``QEMU HARDDISK`` / ``2.5+`` unless told otherwise.  The BIOS
translation QEMU would put in CMOS for the disk is kept in ``s.chs_trans``
(the INT 13h services of ``--accel kvm`` translate with it, as SeaBIOS).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (ide_init_drive), hw/block/hd-geometry.c.
"""
from __future__ import annotations

from typing import Any, Optional

from gqemu.block.blk_error import blk_add_resume_handler
from gqemu.block.block_backend import blk_getlength, blk_is_read_only, blk_pread
from gqemu.hw.ide.reset import ide_reset, ide_restart_bh
from gqemu.hw.ide.internal import IDE_HD, IDEState

__all__ = ["ide_init_drive", "hd_geometry_guess", "guess_chs_for_size",
           "QEMU_HW_VERSION"]

QEMU_HW_VERSION = "2.5+"


def guess_chs_for_size(nb_sectors: int) -> tuple[int, int, int]:
    """QEMU: guess_chs_for_size."""
    cylinders = nb_sectors // (16 * 63)
    cylinders = max(2, min(cylinders, 16383))
    return cylinders, 16, 63


def guess_disk_lchs(mbr: bytes, nb_sectors: int) -> Optional[tuple[int, int, int]]:
    """The geometry an MBR partition table implies, if any.
    QEMU: guess_disk_lchs."""
    if len(mbr) < 512 or mbr[510] != 0x55 or mbr[511] != 0xAA:
        return None
    for i in range(4):
        p = 0x1BE + i * 16
        end_head = mbr[p + 5]
        end_sector = mbr[p + 6]
        nr_sects = int.from_bytes(mbr[p + 12:p + 16], "little")
        if nr_sects and end_head:
            heads = end_head + 1
            sectors = end_sector & 63
            if sectors == 0:
                continue
            cylinders = nb_sectors // (heads * sectors)
            if cylinders < 1 or cylinders > 16383:
                continue
            return cylinders, heads, sectors
    return None


def hd_bios_chs_auto_trans(cyls: int, heads: int, secs: int) -> str:
    """QEMU: hd_bios_chs_auto_trans."""
    return "none" if cyls <= 1024 and heads <= 16 and secs <= 63 else "lba"


def hd_geometry_guess_trans(blk: Any, nb_sectors: int) -> tuple[int, int, int, str]:
    """Physical CHS for an ide-hd and the BIOS translation QEMU hands the
    firmware in CMOS ("none", "lba" or "large").  QEMU: hd_geometry_guess."""
    mbr = b""
    try:
        if nb_sectors:
            mbr = bytes(blk_pread(blk, 0, 512))
    except Exception:           # unreadable MBR: use the size-based guess
        mbr = b""
    lchs = guess_disk_lchs(mbr, nb_sectors)
    if lchs is None:
        c, h, s = guess_chs_for_size(nb_sectors)
        return c, h, s, hd_bios_chs_auto_trans(c, h, s)
    if lchs[1] > 16:            # a BIOS translation was active
        c, h, s = guess_chs_for_size(nb_sectors)
        return c, h, s, "large" if c * h <= 131072 else "lba"
    return lchs[0], lchs[1], lchs[2], "none"


def hd_geometry_guess(blk: Any, nb_sectors: int) -> tuple[int, int, int]:
    """Physical CHS for an ide-hd.  QEMU: hd_geometry_guess."""
    return hd_geometry_guess_trans(blk, nb_sectors)[:3]


def ide_init_drive(s: IDEState, blk: Any, *, serial: Optional[str] = None,
                   model: Optional[str] = None, version: Optional[str] = None,
                   cylinders: int = 0, heads: int = 0, secs: int = 0) -> None:
    """Attach ``blk`` to drive ``s`` as a hard disk and reset it.

    Raises ValueError for a disk QEMU's ide-hd refuses (empty or read-only).
    QEMU: ide_init_drive.
    """
    length = blk_getlength(blk)
    if length < 0:
        raise ValueError("ide: cannot get the size of the disk (errno %d)" % -length)
    if blk_is_read_only(blk):
        raise ValueError("Can't use a read-only drive")
    nb_sectors = length // 512
    if not (cylinders and heads and secs):
        cylinders, heads, secs, trans = hd_geometry_guess_trans(blk, nb_sectors)
    else:
        trans = hd_bios_chs_auto_trans(cylinders, heads, secs)
    s.chs_trans = trans
    s.blk = blk
    s.drive_kind = IDE_HD
    s.cylinders, s.heads, s.sectors = cylinders, heads, secs
    s.drive_heads, s.drive_sectors = heads, secs
    s.nb_sectors = nb_sectors
    s.identify_set = False
    s.smart_enabled = True
    s.smart_autosave = True
    s.smart_errors = 0
    s.smart_selftest_count = 0
    s.drive_serial_str = serial if serial is not None else "QM%05d" % s.drive_serial
    s.drive_model_str = model if model is not None else "QEMU HARDDISK"
    s.version = version if version is not None else QEMU_HW_VERSION
    ide_reset(s)
    blk.dev = s
    blk_add_resume_handler(blk, ide_restart_bh, s.bus)
