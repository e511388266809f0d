"""``qemu-img bitmap (--merge SOURCE | --add | --remove | --clear |
--enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity]
[--object objectdef] [--image-opts | -f fmt] filename bitmap``.

The actions run in the order given, on the persistent dirty bitmap
``bitmap`` of the image (opened read-write without its backing chain);
the first failing one ends the command with ``Operation OP on bitmap NAME
failed: ...``.  The bitmaps reach the file when the image is closed
(gqemu/block/qcow2_bitmap.py).

QEMU: qemu-img.c (img_bitmap, do_dirty_bitmap_merge),
block/monitor/bitmap-qmp-cmds.c (qmp_block_dirty_bitmap_*),
block/dirty-bitmap.c.
"""
from __future__ import annotations

from typing import Any, Optional

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, cvtnum, img_open, parse_args,
                                     user_creatable_add)


class BitmapOpError(Exception):
    """A QMP error: the message (its lines after the first are hints)."""


def _lookup(bs: Any, name: str) -> Any:
    """QEMU: block_dirty_bitmap_lookup."""
    from gqemu.block.dirty_bitmap import bdrv_find_dirty_bitmap
    bm = bdrv_find_dirty_bitmap(bs, name)
    if bm is None:
        raise BitmapOpError("Dirty bitmap '%s' not found" % name)
    return bm


def _node_name(bs: Any) -> str:
    return bs.node_name or "#block%03d" % (100 + id(bs) % 900)


def bitmap_add(bs: Any, name: str, granularity: Optional[int], persistent: bool = True,
               disabled: bool = False) -> Any:
    """QEMU: qmp_block_dirty_bitmap_add."""
    from gqemu.block.dirty_bitmap import bdrv_create_dirty_bitmap
    from gqemu.block.driver import bdrv_getlength
    if not name:
        raise BitmapOpError("Bitmap name cannot be empty")
    if granularity is not None:
        if granularity < 512 or granularity & (granularity - 1):
            raise BitmapOpError("Granularity must be power of 2 and at least 512")
    else:
        granularity = _default_granularity(bs)
    if persistent:
        _can_store_new(bs, name, granularity)
    try:
        bm = bdrv_create_dirty_bitmap(bs, granularity, name, bdrv_getlength(bs))
    except ValueError as e:
        raise BitmapOpError(str(e))
    bm.disabled = disabled
    bm.persistent = persistent
    return bm


def _default_granularity(bs: Any) -> int:
    """QEMU: bdrv_get_default_bitmap_granularity."""
    get_info = getattr(bs.drv, "bdrv_get_info", None)
    cs = 0
    if get_info is not None:
        try:
            cs = get_info(bs).get("cluster_size", 0)
        except Exception:
            cs = 0
    return min(65536, max(4096, cs)) if cs > 0 else 65536


def _can_store_new(bs: Any, name: str, granularity: int) -> None:
    """QEMU: bdrv_can_store_new_dirty_bitmap."""
    if getattr(bs.drv, "format_name", "") != "qcow2":
        raise BitmapOpError("Can't store persistent bitmaps to %s: Operation not supported"
                            % _node_name(bs))
    from gqemu.block.qcow2_bitmap import Qcow2BitmapError
    from gqemu.block.qcow2_bitmap_sync import qcow2_can_store_new_dirty_bitmap
    try:
        qcow2_can_store_new_dirty_bitmap(bs, name, granularity, _node_name(bs))
    except Qcow2BitmapError as e:
        raise BitmapOpError(e.msg)


def bitmap_remove(bs: Any, name: str) -> None:
    """QEMU: block_dirty_bitmap_remove (release)."""
    from gqemu.block.dirty_bitmap import bdrv_release_dirty_bitmap
    from gqemu.block.io_misc import bdrv_run_co
    bm = _lookup(bs, name)
    if bm.busy:
        raise BitmapOpError("Bitmap '%s' is currently in use by another operation and "
                            "cannot be used" % name)
    if bm.readonly:
        raise BitmapOpError("Bitmap '%s' is readonly and cannot be modified" % name)
    if bm.persistent and getattr(bs.drv, "format_name", "") == "qcow2":
        from gqemu.block.qcow2_bitmap import Qcow2BitmapError
        from gqemu.block.qcow2_bitmap_sync import qcow2_co_remove_persistent_dirty_bitmap
        try:
            bdrv_run_co(bs, qcow2_co_remove_persistent_dirty_bitmap, bs, name)
        except Qcow2BitmapError as e:
            raise BitmapOpError(e.msg)
    bdrv_release_dirty_bitmap(bm)


def _check(bm: Any, allow_ro: bool = False) -> None:
    from gqemu.block.dirty_bitmap import bdrv_dirty_bitmap_check
    try:
        bdrv_dirty_bitmap_check(bm, allow_ro)
    except ValueError as e:
        raise BitmapOpError(str(e))


def bitmap_merge(bs: Any, target: str, src_bs: Any, src_name: str) -> None:
    """QEMU: block_dirty_bitmap_merge, bdrv_merge_dirty_bitmap."""
    dst = _lookup(bs, target)
    src = _lookup(src_bs, src_name)
    _check(dst)
    _check(src, allow_ro=True)
    if src.size != dst.size:
        raise BitmapOpError("Bitmaps are of different sizes (destination size is %d, "
                            "source size is %d) and can't be merged" % (dst.size, src.size))
    dst.merge(src)


def img_bitmap(argv: list[str]) -> int:
    """QEMU: img_bitmap."""
    opts, args = parse_args(argv, "b:f:F:g:h",
                            ["help", "object=", "image-opts", "add", "remove", "clear",
                             "enable", "disable", "merge=", "granularity=", "source-file=",
                             "source-format="])
    fmt = src_fmt = src_filename = None
    image_opts = add = merge = False
    granularity = 0
    actions: list[tuple[str, Optional[str]]] = []
    for o, v in opts:
        if o in ("-b", "--source-file"):
            src_filename = v
        elif o == "-f":
            fmt = v
        elif o in ("-F", "--source-format"):
            src_fmt = v
        elif o in ("-g", "--granularity"):
            granularity = cvtnum("granularity", v)
        elif o in ("--add", "--remove", "--clear", "--enable", "--disable"):
            actions.append((o[2:], None))
            add = add or o == "--add"
        elif o == "--merge":
            actions.append(("merge", v))
            merge = True
        elif o == "--object":
            user_creatable_add(v)
        elif o == "--image-opts":
            image_opts = True
    if not actions:
        raise ImgError("Need at least one of --add, --remove, --clear, --enable, "
                       "--disable, or --merge")
    if granularity and not add:
        raise ImgError("granularity only supported with --add")
    if src_fmt and not src_filename:
        raise ImgError("-F only supported with -b")
    if src_filename and not merge:
        raise ImgError("Merge bitmap source file only supported with --merge")
    if len(args) != 2:
        raise ImgError("Expecting filename and bitmap name")
    filename, name = args[0], args[1]
    from gqemu.block import blk_bs
    from gqemu.block.driver import BDRV_O_NO_BACKING
    blk = img_open(filename, fmt, True, BDRV_O_NO_BACKING, image_opts=image_opts)
    src = None
    try:
        bs = blk_bs(blk)
        src_bs = bs
        if src_filename:
            src = img_open(src_filename, src_fmt, False, BDRV_O_NO_BACKING)
            src_bs = blk_bs(src)
        gran = granularity & 0xffffffff          # the QMP argument is a uint32
        for act, arg in actions:
            try:
                if act == "add":
                    bitmap_add(bs, name, gran if granularity else None)
                elif act == "remove":
                    bitmap_remove(bs, name)
                elif act == "clear":
                    bm = _lookup(bs, name)
                    _check(bm)
                    bm.clear()
                elif act in ("enable", "disable"):
                    bm = _lookup(bs, name)
                    _check(bm, allow_ro=True)
                    bm.disabled = act == "disable"
                else:
                    assert arg is not None
                    bitmap_merge(bs, name, src_bs, arg)
            except BitmapOpError as e:
                msg, _, hint = str(e).partition("\n")
                raise ImgError("Operation %s on bitmap %s failed: %s" % (act, name, msg),
                               tail=hint + "\n" if hint else "")
    finally:
        if src is not None:
            blk_close(src)
        blk_close(blk)
    return 0


def _supports_persistent(bs: Any) -> bool:
    """QEMU: bdrv_supports_persistent_dirty_bitmap (qcow2 v3)."""
    drv = getattr(bs, "drv", None)
    return drv is not None and drv.format_name == "qcow2" and drv.qcow_version >= 3


def convert_check_bitmaps(src: Any, skip_broken: bool) -> None:
    """Raises ImgError.  QEMU: convert_check_bitmaps."""
    from gqemu.block.dirty_bitmap import bdrv_dirty_bitmaps
    if not _supports_persistent(src):
        raise ImgError("Source lacks bitmap support")
    for bm in bdrv_dirty_bitmaps(src):
        if bm.persistent and not skip_broken and bm.inconsistent:
            raise ImgError("Cannot copy inconsistent bitmap '%s'" % bm.name,
                           tail="Try --skip-broken-bitmaps, or use 'qemu-img bitmap "
                                "--remove' to delete it\n")


def convert_copy_bitmaps(src: Any, dst: Any, skip_broken: bool) -> None:
    """Raises ImgError.  QEMU: convert_copy_bitmaps."""
    import sys
    from gqemu.block.dirty_bitmap import bdrv_dirty_bitmaps
    from gqemu.cli.qemu_img_tool import PROG
    for bm in list(bdrv_dirty_bitmaps(src)):
        if not bm.persistent:
            continue
        if skip_broken and bm.inconsistent:
            sys.stderr.write("%s: warning: Skipping inconsistent bitmap '%s'\n"
                             % (PROG, bm.name))
            continue
        name = bm.name or ""
        try:
            bitmap_add(dst, name, bm.granularity, True, bm.disabled)
        except BitmapOpError as e:
            raise ImgError("Failed to create bitmap %s: %s" % (name, e))
        try:
            bitmap_merge(dst, name, src, name)
        except BitmapOpError as e:
            bitmap_remove(dst, name)
            raise ImgError("Failed to populate bitmap %s: %s" % (name, e))
