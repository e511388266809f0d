"""Persistent dirty bitmaps in qcow2 v3 images, laid out as QEMU lays them:
the bitmaps header extension (``s.nb_bitmaps``, ``s.bitmap_directory_*``,
autoclear bit 0), the bitmap directory (24-byte entries + name, padded to
8), one bitmap table per bitmap (a u64 per bitmap cluster: its offset, 0
for an all-zero cluster) and the bitmap clusters.

Loading them into the node at open and storing them at close are in
qcow2_bitmap_sync.py.

Context: coroutine, except ``bitmap_ext_parse``.  Must not import:
gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2-bitmap.c, block/qcow2.c (qcow2_read_extensions).
"""
from __future__ import annotations

import errno
import struct
import sys
from typing import Any, Callable, Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.dirty_bitmap import BdrvDirtyBitmap, bdrv_dirty_bitmaps
from gqemu.block.qcow2_cache import qcow2_caches_flush
from gqemu.block.qcow2_header import Qcow2OpenError
from gqemu.block.qcow2_overlap import (qcow2_co_pread_file,
                                       qcow2_co_pwrite_file, qcow2_pre_write_overlap_check)
from gqemu.block.qcow2_refcount import qcow2_alloc_clusters, qcow2_free_clusters
from gqemu.block.qcow2_state import QCOW2_OL_BITMAP_DIRECTORY, Qcow2BDS

QCOW2_AUTOCLEAR_BITMAPS = 1
QCOW2_MAX_BITMAPS = 65535
QCOW2_MAX_BITMAP_DIRECTORY_SIZE = 1024 * QCOW2_MAX_BITMAPS
BME_MAX_TABLE_SIZE = 0x8000000
BME_MAX_PHYS_SIZE = 0x20000000
BME_MAX_GRANULARITY_BITS = 31
BME_MIN_GRANULARITY_BITS = 9
BME_MAX_NAME_SIZE = 1023
BME_RESERVED_FLAGS = 0xfffffffc
BME_FLAG_IN_USE = 1
BME_FLAG_AUTO = 2
BME_TABLE_ENTRY_RESERVED_MASK = 0xff000000000001fe
BME_TABLE_ENTRY_OFFSET_MASK = 0x00fffffffffffe00
BME_TABLE_ENTRY_FLAG_ALL_ONES = 1
BT_DIRTY_TRACKING_BITMAP = 1
_ENTRY = struct.Struct(">QIIBBHI")          # Qcow2BitmapDirEntry, 24 bytes


class Qcow2BitmapError(Exception):
    """``msg`` as QEMU's error_setg words it; ``err`` the -errno."""

    def __init__(self, msg: str, err: int = -errno.EINVAL) -> None:
        super().__init__(msg)
        self.msg = msg
        self.err = err


class Qcow2Bitmap:
    """One directory entry.  QEMU: Qcow2Bitmap."""

    def __init__(self, name: str, table_offset: int = 0, table_size: int = 0,
                 flags: int = 0, granularity_bits: int = 0) -> None:
        self.name = name
        self.table_offset = table_offset
        self.table_size = table_size
        self.flags = flags
        self.granularity_bits = granularity_bits
        self.dirty_bitmap: Optional[BdrvDirtyBitmap] = None


def calc_dir_entry_size(name_size: int, extra_data_size: int = 0) -> int:
    return (_ENTRY.size + name_size + extra_data_size + 7) & ~7


def get_bitmap_bytes_needed(length: int, granularity: int) -> int:
    return (-(-length // granularity) + 7) // 8


def bitmap_ext_parse(s: Any, data: bytes) -> None:
    """The bitmaps extension (read by qcow2_read_extensions): sets
    ``s.nb_bitmaps`` and the directory's place, or warns that an unaware
    program dropped the autoclear bit (the extension is then dropped at the
    next header update).  Raises Qcow2OpenError.  QEMU: qcow2_read_extensions."""
    if len(data) != 24:
        raise Qcow2OpenError(errno.EINVAL, "bitmaps_ext: Invalid extension length")
    if not s.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS:
        if s.qcow_version < 3:
            msg = ("This qcow2 v2 image contains bitmaps, but they may have been modified "
                   "by a program without persistent bitmap support; so now they must all "
                   "be considered inconsistent")
        else:
            msg = ("a program lacking bitmap support modified this file, so all bitmaps "
                   "are now considered inconsistent")
        sys.stderr.write("%s: warning: %s\n" % (_prog(), msg))
        sys.stderr.write("Some clusters may be leaked, run 'qemu-img check -r' on the "
                         "image file to fix.")
        s.bitmaps_stale = True
        return
    nb, reserved, dir_size, dir_offset = struct.unpack(">IIQQ", data)
    if reserved:
        raise Qcow2OpenError(errno.EINVAL, "bitmaps_ext: Reserved field is not zero")
    if nb > QCOW2_MAX_BITMAPS:
        raise Qcow2OpenError(errno.EINVAL, "bitmaps_ext: Image has %d bitmaps, exceeding "
                             "the QEMU supported maximum of %d" % (nb, QCOW2_MAX_BITMAPS))
    if nb == 0:
        raise Qcow2OpenError(errno.EINVAL, "found bitmaps extension with zero bitmaps")
    if dir_offset & (s.cluster_size - 1):
        raise Qcow2OpenError(errno.EINVAL, "bitmaps_ext: invalid bitmap directory offset")
    if dir_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE:
        raise Qcow2OpenError(errno.EINVAL, "bitmaps_ext: bitmap directory size (%d) exceeds "
                             "the maximum supported size (%d)"
                             % (dir_size, QCOW2_MAX_BITMAP_DIRECTORY_SIZE))
    s.nb_bitmaps = nb
    s.bitmap_directory_offset = dir_offset
    s.bitmap_directory_size = dir_size


def _prog() -> str:
    import os
    return os.path.basename(sys.argv[0]) or "qemu-img"


def _length(bs: Qcow2BDS) -> int:
    return bs.opaque.size


def _check_dir_entry(bs: Qcow2BDS, toff: int, tsize: int, flags: int, btype: int,
                     gbits: int, name_size: int) -> bool:
    """QEMU: check_dir_entry."""
    s = bs.opaque
    if (tsize == 0 or toff == 0 or toff % s.cluster_size or tsize > BME_MAX_TABLE_SIZE
            or gbits > BME_MAX_GRANULARITY_BITS or gbits < BME_MIN_GRANULARITY_BITS
            or flags & BME_RESERVED_FLAGS or name_size > BME_MAX_NAME_SIZE
            or btype != BT_DIRTY_TRACKING_BITMAP):
        return False
    phys = tsize * s.cluster_size
    if phys > BME_MAX_PHYS_SIZE:
        return False
    if not flags & BME_FLAG_IN_USE and _length(bs) > (phys * 8) << gbits:
        return False
    return True


@coroutine_fn
def bitmap_list_load(bs: Qcow2BDS) -> list[Qcow2Bitmap]:
    """Read and check the directory.  Raises Qcow2BitmapError.
    QEMU: bitmap_list_load."""
    s = bs.opaque
    size = s.bitmap_directory_size
    if size == 0:
        raise Qcow2BitmapError("Requested bitmap directory size is zero")
    if size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE:
        raise Qcow2BitmapError("Requested bitmap directory size is too big")
    ret, buf = qcow2_co_pread_file(bs, s.bitmap_directory_offset, size)
    if ret < 0:
        raise Qcow2BitmapError("Failed to read bitmap directory", ret)
    out: list[Qcow2Bitmap] = []
    pos = 0
    while pos < size:
        if pos + _ENTRY.size > size:
            raise Qcow2BitmapError("Broken bitmap directory")
        if len(out) + 1 > s.nb_bitmaps:
            raise Qcow2BitmapError("More bitmaps found than specified in header extension")
        toff, tsize, flags, btype, gbits, nsize, extra = _ENTRY.unpack_from(buf, pos)
        esize = calc_dir_entry_size(nsize, extra)
        if pos + esize > size:
            raise Qcow2BitmapError("Broken bitmap directory")
        name = bytes(buf[pos + _ENTRY.size + extra:pos + _ENTRY.size + extra + nsize]
                     ).decode("utf-8", "replace")
        if extra:
            raise Qcow2BitmapError("Bitmap extra data is not supported")
        if not _check_dir_entry(bs, toff, tsize, flags, btype, gbits, nsize):
            raise Qcow2BitmapError("Bitmap '%s' doesn't satisfy the constraints" % name)
        out.append(Qcow2Bitmap(name, toff, tsize, flags, gbits))
        pos += esize
    if len(out) != s.nb_bitmaps:
        raise Qcow2BitmapError("Less bitmaps found than specified in header extension")
    return out


def _check_table_entry(entry: int, cluster_size: int) -> bool:
    if entry & BME_TABLE_ENTRY_RESERVED_MASK:
        return False
    off = entry & BME_TABLE_ENTRY_OFFSET_MASK
    return not off or (not entry & BME_TABLE_ENTRY_FLAG_ALL_ONES and off % cluster_size == 0)


@coroutine_fn
def bitmap_table_load(bs: Qcow2BDS, offset: int, size: int) -> list[int]:
    """Raises Qcow2BitmapError(-errno).  QEMU: bitmap_table_load."""
    ret, buf = qcow2_co_pread_file(bs, offset, size * 8)
    if ret < 0:
        raise Qcow2BitmapError("", ret)
    table = list(struct.unpack(">%dQ" % size, bytes(buf)))
    for e in table:
        if not _check_table_entry(e, bs.opaque.cluster_size):
            raise Qcow2BitmapError("", -errno.EINVAL)
    return table


@coroutine_fn
def free_bitmap_clusters(bs: Qcow2BDS, offset: int, size: int) -> None:
    """QEMU: free_bitmap_clusters."""
    s = bs.opaque
    try:
        table = bitmap_table_load(bs, offset, size)
    except Qcow2BitmapError:
        return
    for e in table:
        addr = e & BME_TABLE_ENTRY_OFFSET_MASK
        if addr:
            qcow2_free_clusters(bs, addr, s.cluster_size, True)
    qcow2_free_clusters(bs, offset, size * 8)


def _table_size(s: Any, bm: BdrvDirtyBitmap) -> int:
    words = -(-bm.nbits // 64)
    return -(-(words * 8) // s.cluster_size)


@coroutine_fn
def _update_header_sync(bs: Qcow2BDS) -> int:
    from gqemu.block.qcow2_header_update import qcow2_update_header
    return qcow2_update_header(bs)      # it flushes the file


@coroutine_fn
def bitmap_list_store(bs: Qcow2BDS, lst: list[Qcow2Bitmap], in_place: bool) -> tuple[int, int, int]:
    """Write the directory (allocating it unless ``in_place``).
    Returns (ret, offset, size).  QEMU: bitmap_list_store."""
    s = bs.opaque
    dir_size = sum(calc_dir_entry_size(len(e.name.encode())) for e in lst)
    if dir_size == 0 or dir_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE:
        return -errno.EINVAL, 0, 0
    if in_place and (s.bitmap_directory_size != dir_size or not s.bitmap_directory_offset):
        return -errno.EINVAL, 0, 0
    buf = bytearray()
    for e in lst:
        name = e.name.encode()
        if not _check_dir_entry(bs, e.table_offset, e.table_size, e.flags,
                                BT_DIRTY_TRACKING_BITMAP, e.granularity_bits, len(name)):
            return -errno.EINVAL, 0, 0
        ent = _ENTRY.pack(e.table_offset, e.table_size, e.flags, BT_DIRTY_TRACKING_BITMAP,
                          e.granularity_bits, len(name), 0) + name
        buf += ent.ljust(calc_dir_entry_size(len(name)), b"\0")
    if in_place:
        dir_offset = s.bitmap_directory_offset
    else:
        dir_offset = qcow2_alloc_clusters(bs, dir_size)
        if dir_offset < 0:
            return dir_offset, 0, 0
    ret = qcow2_pre_write_overlap_check(bs, QCOW2_OL_BITMAP_DIRECTORY if in_place else 0,
                                        dir_offset, dir_size)
    if ret < 0:
        return ret, 0, 0
    ret = qcow2_co_pwrite_file(bs, dir_offset, bytes(buf))
    if ret < 0:
        return ret, 0, 0
    return 0, dir_offset, dir_size


@coroutine_fn
def _update_in_place(bs: Qcow2BDS, lst: list[Qcow2Bitmap]) -> int:
    """QEMU: update_ext_header_and_dir_in_place."""
    s = bs.opaque
    if not s.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS or not lst \
            or len(lst) != s.nb_bitmaps:
        return -errno.EINVAL
    s.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS
    ret = _update_header_sync(bs)
    if ret < 0:
        return ret
    ret, _, _ = bitmap_list_store(bs, lst, True)
    if ret < 0:
        return ret
    ret = qcow2_caches_flush(bs)
    if ret < 0:
        return ret
    s.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS
    return _update_header_sync(bs)


@coroutine_fn
def update_ext_header_and_dir(bs: Qcow2BDS, lst: list[Qcow2Bitmap]) -> int:
    """A new directory (or none), then the header; the old directory freed.
    QEMU: update_ext_header_and_dir."""
    s = bs.opaque
    old_offset, old_size = s.bitmap_directory_offset, s.bitmap_directory_size
    old = (s.nb_bitmaps, old_offset, old_size, s.autoclear_features)
    new_offset = new_size = 0
    if lst:
        if len(lst) > QCOW2_MAX_BITMAPS:
            return -errno.EINVAL
        ret, new_offset, new_size = bitmap_list_store(bs, lst, False)
        if ret < 0:
            return ret
        ret = qcow2_caches_flush(bs)
        if ret < 0:
            qcow2_free_clusters(bs, new_offset, new_size)
            return ret
        s.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS
    else:
        s.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS
    s.bitmap_directory_offset, s.bitmap_directory_size = new_offset, new_size
    s.nb_bitmaps = len(lst)
    ret = _update_header_sync(bs)
    if ret < 0:
        if new_size:
            qcow2_free_clusters(bs, new_offset, new_size)
        s.nb_bitmaps, s.bitmap_directory_offset, s.bitmap_directory_size, \
            s.autoclear_features = old
        return ret
    if old_size > 0:
        qcow2_free_clusters(bs, old_offset, old_size)
    return 0


@coroutine_fn
def qcow2_get_bitmap_info_list(bs: Qcow2BDS) -> Optional[list[dict]]:
    """The ``bitmaps`` of the format-specific info, from the directory on
    disk (None: no bitmaps).  QEMU: qcow2_get_bitmap_info_list."""
    s = bs.opaque
    if not getattr(s, "nb_bitmaps", 0):
        return None
    out = []
    for e in bitmap_list_load(bs):
        flags = [n for bit, n in ((BME_FLAG_IN_USE, "in-use"), (BME_FLAG_AUTO, "auto"))
                 if e.flags & bit]
        out.append({"flags": flags, "name": e.name, "granularity": 1 << e.granularity_bits})
    return out


@coroutine_fn
def qcow2_check_bitmaps_refcounts(bs: Qcow2BDS, res: Any,
                                  inc: Callable[[Any, int, int], None]) -> int:
    """Count the directory, tables and bitmap clusters for ``qemu-img check``.
    QEMU: qcow2_check_bitmaps_refcounts."""
    s = bs.opaque
    if not getattr(s, "nb_bitmaps", 0):
        return 0
    inc(res, s.bitmap_directory_offset, s.bitmap_directory_size)
    try:
        lst = bitmap_list_load(bs)
    except Qcow2BitmapError:
        res.corruptions += 1
        return -errno.EINVAL
    for e in lst:
        inc(res, e.table_offset, e.table_size * 8)
        try:
            table = bitmap_table_load(bs, e.table_offset, e.table_size)
        except Qcow2BitmapError:
            res.corruptions += 1
            return -errno.EINVAL
        for entry in table:
            off = entry & BME_TABLE_ENTRY_OFFSET_MASK
            if not _check_table_entry(entry, s.cluster_size):
                res.corruptions += 1
                continue
            if off:
                inc(res, off, s.cluster_size)
    return 0


def qcow2_get_persistent_dirty_bitmap_size(in_bs: Any, cluster_size: int) -> int:
    """Room the source's persistent bitmaps take in a new image.
    QEMU: qcow2_get_persistent_dirty_bitmap_size."""
    size = dir_size = 0
    for bm in bdrv_dirty_bitmaps(in_bs):
        if bm.persistent:
            clusters = -(-get_bitmap_bytes_needed(bm.size, bm.granularity) // cluster_size)
            size += clusters * cluster_size
            size += -(-(clusters * 8) // cluster_size) * cluster_size
            dir_size += calc_dir_entry_size(len((bm.name or "").encode()))
    return size + -(-dir_size // cluster_size) * cluster_size
