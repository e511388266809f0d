"""IDENTIFY DEVICE data for the hard disk.

Built once per drive (``identify_set``) from its geometry, size, serial,
model and firmware strings, then copied into ``io_buffer`` for every
IDENTIFY; SET FEATURES patches the cached copy.  For the refdata 16 MiB disk
the 256 words equal ``refdata/mbr/out/identify-master.json``.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (ide_identify, ide_identify_size, padstr).
"""
from __future__ import annotations

from gqemu.block.block_backend import blk_enable_write_cache
from gqemu.hw.ide.internal import MAX_MULT_SECTORS, IDEState

__all__ = ["ide_identify", "ide_identify_size"]


def _put_le16(buf: bytearray, word: int, v: int) -> None:
    buf[word * 2] = v & 0xFF
    buf[word * 2 + 1] = (v >> 8) & 0xFF


def _padstr(buf: bytearray, word: int, src: str, length: int) -> None:
    """ATA strings: space padded, bytes swapped in each word.  QEMU: padstr."""
    raw = src.encode("ascii", "replace")[:length].ljust(length, b" ")
    base = word * 2
    for i in range(length):
        buf[base + (i ^ 1)] = raw[i]


def ide_identify_size(s: IDEState) -> None:
    """Words 60-61 (LBA28, clamped) and 100-103 (LBA48).  QEMU: ide_identify_size."""
    p = s.identify_data
    lba28 = min(s.nb_sectors, (1 << 28) - 1)
    _put_le16(p, 60, lba28)
    _put_le16(p, 61, lba28 >> 16)
    for i in range(4):
        _put_le16(p, 100 + i, s.nb_sectors >> (16 * i))


def ide_identify(s: IDEState) -> None:
    """Build IDENTIFY DEVICE once, then copy it into ``io_buffer``.
    QEMU: ide_identify."""
    p = s.identify_data
    if not s.identify_set:
        p[:] = bytes(512)
        _put_le16(p, 0, 0x0040)
        _put_le16(p, 1, s.cylinders)
        _put_le16(p, 3, s.heads)
        _put_le16(p, 4, 512 * s.sectors)
        _put_le16(p, 5, 512)
        _put_le16(p, 6, s.sectors)
        _padstr(p, 10, s.drive_serial_str, 20)
        _put_le16(p, 20, 3)
        _put_le16(p, 21, 512)
        _put_le16(p, 22, 4)
        _padstr(p, 23, s.version, 8)
        _padstr(p, 27, s.drive_model_str, 40)
        _put_le16(p, 47, 0x8000 | MAX_MULT_SECTORS)
        _put_le16(p, 48, 1)
        _put_le16(p, 49, (1 << 11) | (1 << 9) | (1 << 8))
        _put_le16(p, 51, 0x200)
        _put_le16(p, 52, 0x200)
        _put_le16(p, 53, 1 | (1 << 1) | (1 << 2))
        _put_le16(p, 54, s.cylinders)
        _put_le16(p, 55, s.heads)
        _put_le16(p, 56, s.sectors)
        oldsize = s.cylinders * s.heads * s.sectors
        _put_le16(p, 57, oldsize)
        _put_le16(p, 58, oldsize >> 16)
        if s.mult_sectors:
            _put_le16(p, 59, 0x100 | s.mult_sectors)
        _put_le16(p, 62, 0x07)
        _put_le16(p, 63, 0x07)
        _put_le16(p, 64, 0x03)
        for w in (65, 66, 67, 68):
            _put_le16(p, w, 120)
        if s.discard_granularity:
            _put_le16(p, 69, 1 << 14)
        _put_le16(p, 80, 0xF0)
        _put_le16(p, 81, 0x16)
        _put_le16(p, 82, (1 << 14) | (1 << 5) | 1)
        _put_le16(p, 83, (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10))
        _put_le16(p, 84, 1 << 14)
        if blk_enable_write_cache(s.blk):
            _put_le16(p, 85, (1 << 14) | (1 << 5) | 1)
        else:
            _put_le16(p, 85, (1 << 14) | 1)
        _put_le16(p, 86, (1 << 13) | (1 << 12) | (1 << 10))
        _put_le16(p, 87, 1 << 14)
        _put_le16(p, 88, 0x3F | (1 << 13))
        _put_le16(p, 93, 1 | (1 << 14) | 0x2000)
        _put_le16(p, 106, 0x6000)      # 512-byte physical blocks: exponent 0
        if s.discard_granularity:
            _put_le16(p, 169, 1)
        ide_identify_size(s)
        s.identify_set = True
    s.io_buffer[0:512] = p
