"""The node's side of qcow2's persistent dirty bitmaps: loading them at
open (a writable open marks them in use on disk, in place), storing them at
close (new clusters and tables in QEMU's allocation order, then the old
tables freed), removing one, the checks before adding one or resizing.
The on-disk format itself is in qcow2_bitmap.py.

Context: coroutine, except the checks.  Must not import: gqemu.hw,
gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2-bitmap.c.
"""
from __future__ import annotations

import errno
import os
import struct
from typing import Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.dirty_bitmap import (BdrvDirtyBitmap, bdrv_create_dirty_bitmap,
                                      bdrv_dirty_bitmaps, bdrv_find_dirty_bitmap,
                                      bdrv_release_dirty_bitmap)
from gqemu.block.qcow2_bitmap import (
    BME_FLAG_AUTO, BME_FLAG_IN_USE, BME_MAX_GRANULARITY_BITS, BME_MAX_NAME_SIZE,
    BME_MAX_PHYS_SIZE, BME_MAX_TABLE_SIZE, BME_MIN_GRANULARITY_BITS,
    BME_TABLE_ENTRY_FLAG_ALL_ONES, BME_TABLE_ENTRY_OFFSET_MASK,
    QCOW2_MAX_BITMAP_DIRECTORY_SIZE, QCOW2_MAX_BITMAPS, Qcow2Bitmap, Qcow2BitmapError,
    _length, _table_size, _update_in_place, bitmap_list_load, bitmap_table_load,
    calc_dir_entry_size, free_bitmap_clusters, get_bitmap_bytes_needed,
    update_ext_header_and_dir)
from gqemu.block.qcow2_overlap import qcow2_co_pread_file, qcow2_co_pwrite_file, \
    qcow2_pre_write_overlap_check
from gqemu.block.qcow2_refcount import qcow2_alloc_clusters, qcow2_free_clusters
from gqemu.block.qcow2_state import Qcow2BDS


@coroutine_fn
def load_bitmap(bs: Qcow2BDS, e: Qcow2Bitmap) -> BdrvDirtyBitmap:
    """QEMU: load_bitmap, load_bitmap_data."""
    s = bs.opaque
    try:
        bm = bdrv_create_dirty_bitmap(bs, 1 << e.granularity_bits, e.name, _length(bs))
    except ValueError as ex:
        raise Qcow2BitmapError(str(ex))
    if e.flags & BME_FLAG_IN_USE:
        return bm
    try:
        table = bitmap_table_load(bs, e.table_offset, e.table_size)
    except Qcow2BitmapError as ex:
        bdrv_release_dirty_bitmap(bm)
        raise Qcow2BitmapError("Could not read bitmap_table table from image for bitmap "
                               "'%s': %s" % (e.name, os.strerror(-ex.err)))
    if _table_size(s, bm) != e.table_size:
        bdrv_release_dirty_bitmap(bm)
        raise Qcow2BitmapError("Could not read bitmap '%s' from image: %s"
                               % (e.name, os.strerror(errno.EINVAL)))
    per = s.cluster_size * 8
    for i, entry in enumerate(table):
        first = i * per
        n = min(bm.nbits - first, per)
        off = entry & BME_TABLE_ENTRY_OFFSET_MASK
        if not off:
            if entry & BME_TABLE_ENTRY_FLAG_ALL_ONES:
                bm.set_bits(first, first + n - 1)
            continue
        ret, buf = qcow2_co_pread_file(bs, off, s.cluster_size)
        if ret < 0:
            bdrv_release_dirty_bitmap(bm)
            raise Qcow2BitmapError("Could not read bitmap '%s' from image: %s"
                                   % (e.name, os.strerror(-ret)))
        bm.deserialize_bits(first, n, bytes(buf))
    return bm


@coroutine_fn
def qcow2_load_dirty_bitmaps(bs: Qcow2BDS) -> bool:
    """Load the image's bitmaps into the node; on a writable node mark them
    in use on disk.  Returns whether the header was written.  Raises
    Qcow2BitmapError.  QEMU: qcow2_load_dirty_bitmaps."""
    s = bs.opaque
    if not getattr(s, "nb_bitmaps", 0):
        return False
    lst = bitmap_list_load(bs)
    created: list[BdrvDirtyBitmap] = []
    needs_update = False
    try:
        for e in lst:
            if e.flags & BME_FLAG_IN_USE and bdrv_find_dirty_bitmap(bs, e.name):
                continue
            bm = load_bitmap(bs, e)
            created.append(bm)
            bm.persistent = True
            if e.flags & BME_FLAG_IN_USE:
                bm.inconsistent = True
            else:
                e.flags |= BME_FLAG_IN_USE
                needs_update = True
            if not e.flags & BME_FLAG_AUTO:
                bm.disabled = True
        updated = False
        if needs_update and not s.read_only:
            ret = _update_in_place(bs, lst)
            if ret < 0:
                raise Qcow2BitmapError("Can't update bitmap directory: %s" % os.strerror(-ret))
            updated = True
    except Qcow2BitmapError:
        for bm in created:
            bdrv_release_dirty_bitmap(bm)
        raise
    if s.read_only:
        for bm in created:
            bm.readonly = True
    return updated


def check_constraints_on_bitmap(bs: Qcow2BDS, name: str, granularity: int) -> None:
    """Raises Qcow2BitmapError.  QEMU: check_constraints_on_bitmap."""
    s = bs.opaque
    gbits = granularity.bit_length() - 1
    if gbits > BME_MAX_GRANULARITY_BITS:
        raise Qcow2BitmapError("Granularity exceeds maximum (%d bytes)"
                               % (1 << BME_MAX_GRANULARITY_BITS))
    if gbits < BME_MIN_GRANULARITY_BITS:
        raise Qcow2BitmapError("Granularity is under minimum (%d bytes)"
                               % (1 << BME_MIN_GRANULARITY_BITS))
    nbytes = get_bitmap_bytes_needed(_length(bs), granularity)
    if nbytes > BME_MAX_PHYS_SIZE or nbytes > BME_MAX_TABLE_SIZE * s.cluster_size:
        raise Qcow2BitmapError("Too much space will be occupied by the bitmap. "
                               "Use larger granularity")
    if len(name.encode()) > BME_MAX_NAME_SIZE:
        raise Qcow2BitmapError("Name length exceeds maximum (%d characters)"
                               % BME_MAX_NAME_SIZE)


@coroutine_fn
def store_bitmap(bs: Qcow2BDS, e: Qcow2Bitmap) -> None:
    """Write the dirty clusters of the bitmap and its table.
    Raises Qcow2BitmapError.  QEMU: store_bitmap, store_bitmap_data."""
    s = bs.opaque
    bm = e.dirty_bitmap
    assert bm is not None
    tb_size = _table_size(s, bm)
    if tb_size > BME_MAX_TABLE_SIZE or tb_size * s.cluster_size > BME_MAX_PHYS_SIZE:
        raise Qcow2BitmapError("Bitmap '%s' is too big" % bm.name)
    table = [0] * tb_size
    per = s.cluster_size * 8
    try:
        for i in _dirty_clusters(bm, per):
            first = i * per
            n = min(bm.nbits - first, per)
            data = bm.serialize_bits(first, n)
            if not data.strip(b"\0"):
                continue
            off = qcow2_alloc_clusters(bs, s.cluster_size)
            if off < 0:
                raise Qcow2BitmapError("Failed to allocate clusters for bitmap '%s'"
                                       % bm.name, off)
            table[i] = off
            ret = qcow2_pre_write_overlap_check(bs, 0, off, s.cluster_size)
            if ret >= 0:
                ret = qcow2_co_pwrite_file(bs, off, data.ljust(s.cluster_size, b"\0"))
            if ret < 0:
                raise Qcow2BitmapError("Failed to write bitmap '%s' to file" % bm.name, ret)
        tb_offset = qcow2_alloc_clusters(bs, tb_size * 8)
        if tb_offset < 0:
            raise Qcow2BitmapError("Failed to allocate clusters for bitmap '%s'"
                                   % bm.name, tb_offset)
        ret = qcow2_pre_write_overlap_check(bs, 0, tb_offset, tb_size * 8)
        if ret >= 0:
            ret = qcow2_co_pwrite_file(bs, tb_offset, struct.pack(">%dQ" % tb_size, *table))
        if ret < 0:
            qcow2_free_clusters(bs, tb_offset, tb_size * 8)
            raise Qcow2BitmapError("Failed to write bitmap '%s' to file" % bm.name, ret)
    except Qcow2BitmapError:
        for off in table:
            if off:
                qcow2_free_clusters(bs, off, s.cluster_size)
        raise
    e.table_offset, e.table_size = tb_offset, tb_size


def _dirty_clusters(bm: BdrvDirtyBitmap, per: int) -> list[int]:
    """Indexes of the bitmap clusters holding a dirty bit, ascending."""
    out: set[int] = set()
    for st, en in bm.dirty_ranges():
        out.update(range((st >> bm.gbits) // per, ((en - 1) >> bm.gbits) // per + 1))
    return sorted(out)


@coroutine_fn
def qcow2_store_persistent_dirty_bitmaps(bs: Qcow2BDS, release_stored: bool) -> None:
    """Write the node's persistent bitmaps, then drop the old tables.
    Raises Qcow2BitmapError.  QEMU: qcow2_store_persistent_dirty_bitmaps."""
    s = bs.opaque
    bitmaps = bdrv_dirty_bitmaps(bs)
    if not any(bm.name for bm in bitmaps):
        return
    lst = bitmap_list_load(bs) if getattr(s, "nb_bitmaps", 0) else []
    drop: list[tuple[int, int]] = []
    new_nb, new_dir = s.nb_bitmaps, s.bitmap_directory_size
    need_write = False
    for bm in list(bitmaps):
        if not bm.persistent or bm.inconsistent:
            continue
        name = bm.name or ""
        e = next((x for x in lst if x.name == name), None)
        if bm.readonly:
            if e is not None:
                e.dirty_bitmap = bm
            continue
        need_write = True
        try:
            check_constraints_on_bitmap(bs, name, bm.granularity)
        except Qcow2BitmapError as ex:
            raise Qcow2BitmapError("Bitmap '%s' doesn't satisfy the constraints: %s"
                                   % (name, ex.msg))
        if e is None:
            new_nb += 1
            if new_nb > QCOW2_MAX_BITMAPS:
                raise Qcow2BitmapError("Too many persistent bitmaps")
            new_dir += calc_dir_entry_size(len(name.encode()))
            if new_dir > QCOW2_MAX_BITMAP_DIRECTORY_SIZE:
                raise Qcow2BitmapError("Bitmap directory is too large")
            e = Qcow2Bitmap(name)
            lst.append(e)
        else:
            if not e.flags & BME_FLAG_IN_USE:
                raise Qcow2BitmapError("Bitmap '%s' already exists in the image" % name)
            drop.append((e.table_offset, e.table_size))
            e.table_offset = e.table_size = 0
        e.flags = 0 if bm.disabled else BME_FLAG_AUTO
        e.granularity_bits = bm.gbits
        e.dirty_bitmap = bm
    if need_write:
        if s.read_only:
            raise Qcow2BitmapError("No write access")
        stored: list[Qcow2Bitmap] = []
        try:
            for e in lst:
                if e.dirty_bitmap is None or e.dirty_bitmap.readonly:
                    continue
                store_bitmap(bs, e)
                stored.append(e)
            ret = update_ext_header_and_dir(bs, lst)
            if ret < 0:
                raise Qcow2BitmapError("Failed to update bitmap extension: %s"
                                       % os.strerror(-ret), ret)
        except Qcow2BitmapError:
            for e in stored:
                free_bitmap_clusters(bs, e.table_offset, e.table_size)
            raise
        for off, size in drop:
            if size:
                free_bitmap_clusters(bs, off, size)
    if release_stored:
        for e in lst:
            if e.dirty_bitmap is not None:
                bdrv_release_dirty_bitmap(e.dirty_bitmap)


@coroutine_fn
def qcow2_co_remove_persistent_dirty_bitmap(bs: Qcow2BDS, name: str) -> None:
    """Raises Qcow2BitmapError.  QEMU: qcow2_co_remove_persistent_dirty_bitmap."""
    s = bs.opaque
    if not getattr(s, "nb_bitmaps", 0):
        return
    lst = bitmap_list_load(bs)
    e = next((x for x in lst if x.name == name), None)
    if e is None:
        return
    lst.remove(e)
    ret = update_ext_header_and_dir(bs, lst)
    if ret < 0:
        raise Qcow2BitmapError("Failed to update bitmap extension: %s" % os.strerror(-ret), ret)
    free_bitmap_clusters(bs, e.table_offset, e.table_size)


def qcow2_can_store_new_dirty_bitmap(bs: Qcow2BDS, name: str, granularity: int,
                                     node: str) -> None:
    """Raises Qcow2BitmapError.  QEMU: qcow2_co_can_store_new_dirty_bitmap."""
    s = bs.opaque
    if bdrv_find_dirty_bitmap(bs, name):
        raise Qcow2BitmapError("Bitmap already exists: %s" % name)
    try:
        if s.qcow_version < 3:
            raise Qcow2BitmapError("Cannot store dirty bitmaps in qcow2 v2 files")
        check_constraints_on_bitmap(bs, name, granularity)
        nb, dsize = 1, calc_dir_entry_size(len(name.encode()))
        for bm in bdrv_dirty_bitmaps(bs):
            if bm.persistent:
                nb += 1
                dsize += calc_dir_entry_size(len((bm.name or "").encode()))
        if nb > QCOW2_MAX_BITMAPS:
            raise Qcow2BitmapError("Maximum number of persistent bitmaps is already reached")
        if dsize > QCOW2_MAX_BITMAP_DIRECTORY_SIZE:
            raise Qcow2BitmapError("Not enough space in the bitmap directory")
    except Qcow2BitmapError as ex:
        raise Qcow2BitmapError("Can't make bitmap '%s' persistent in '%s': %s"
                               % (name, node, ex.msg))


@coroutine_fn
def qcow2_truncate_bitmaps_check(bs: Qcow2BDS) -> Optional[str]:
    """Why the image cannot be resized (every bitmap must be in memory and
    usable), or None.  QEMU: qcow2_truncate_bitmaps_check."""
    from gqemu.block.dirty_bitmap import bdrv_dirty_bitmap_check
    if not getattr(bs.opaque, "nb_bitmaps", 0):
        return None
    try:
        lst = bitmap_list_load(bs)
    except Qcow2BitmapError as err:
        return err.msg
    for e in lst:
        bm = bdrv_find_dirty_bitmap(bs, e.name)
        if bm is None:
            return ("Cannot resize qcow2 with persistent bitmaps that were not loaded "
                    "into memory")
        try:
            bdrv_dirty_bitmap_check(bm)
        except ValueError as ex:
            return str(ex)
    return None
