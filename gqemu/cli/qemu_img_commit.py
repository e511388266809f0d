"""``qemu-img commit [--object objectdef] [--image-opts] [-q] [-f fmt]
[-t cache] [-b base] [-r rate_limit] [-d] [-p] filename``.

Copies every cluster (the base's cluster size, at least 4 KiB) that the
image or an image between it and the base holds into the base, growing
the base first when the image is larger; a zero run of whole granules
and whole base clusters is written as a zero write that may unmap (the
active commit is a mirror job with unmap on: the base's clusters are freed
where it allows); a granule that starts with less than a granule of zeroes
is copied as data, as mirror_iteration does.  Then, unless ``-d`` or ``-b`` (which implies ``-d``), the image
is emptied (qcow2_empty.py: rebuilt from scratch, or every cluster
discarded).

QEMU: qemu-img.c (img_commit), block/mirror.c (commit_active_start),
block.c (bdrv_make_empty).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, img_open, parse_args,
                                     cvtnum, usage_error)

if TYPE_CHECKING:                       # the block layer is imported on use
    from gqemu.block.block_backend import BlockBackend

CHUNK = 2 << 20


def img_commit(argv: list[str]) -> int:
    """QEMU: img_commit."""
    opts, args = parse_args(argv, "f:ht:b:dpqr:", ["help", "object=", "image-opts"])
    fmt = base = None
    drop = quiet = image_opts = progress = False
    cache = "writeback"
    for o, v in opts:
        if o == "-f":
            fmt = v
        elif o == "-t":
            cache = v
        elif o == "-b":
            base, drop = v, True
        elif o == "-d":
            drop = True
        elif o == "-p":
            progress = True
        elif o == "-q":
            quiet = True
        elif o == "--image-opts":
            image_opts = True
        elif o == "-r":
            cvtnum("rate limit", v)     # checked; the copy is not throttled
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    filename = args[0]
    from gqemu.block.drive_opts import CACHE_MODES
    if cache not in CACHE_MODES:
        raise ImgError("Invalid cache option: %s" % cache)
    from gqemu.block.driver import BDRV_O_UNMAP
    blk = img_open(filename, fmt, True, BDRV_O_UNMAP, image_opts=image_opts, cache=cache)
    from gqemu.cli.qemu_img_convert import QemuProgress
    bar = QemuProgress(progress and not quiet, 1.0)
    bar.qemu_progress_print(0, 100)     # QEMU's job then redraws it as it runs
    try:
        from gqemu.block import blk_bs
        top = blk_bs(blk)
        assert top is not None                  # img_open opened it
        chain = []
        node = top
        base_bs = None
        while node is not None:
            nxt = node.backing.bs if node.backing is not None else None
            chain.append(node)
            if nxt is None:
                break
            if base is None or _names(nxt, base, node):
                base_bs = nxt
                break
            node = nxt
        if base_bs is None:
            if base is not None:
                raise ImgError("Did not find '%s' in the backing chain of '%s'"
                               % (base, filename))
            raise ImgError("Image does not have a backing file")
        _commit(blk, chain, base_bs)
        if not drop:
            ret = _make_empty(top)
            if ret < 0:
                raise ImgError("Failed to empty %s: %s" % (top.filename, os.strerror(-ret)))
        bar.qemu_progress_print(100, 0)
    finally:
        bar.qemu_progress_end()
        blk_close(blk)
    if not quiet:
        print("Image committed.")
    return 0


def _names(bs: Any, name: str, overlay: Any) -> bool:
    """Whether ``name`` (as given to -b) is ``bs``, the backing node of
    ``overlay``: the name stored in the overlay's header, or a path
    relative to the overlay's folder (absolute: itself) naming the same
    file.  QEMU: bdrv_find_backing_image."""
    if name == getattr(overlay.drv, "backing_file", None):
        return True
    f, o = bs, overlay
    while f.file is not None and f.drv.format_name != "file":
        f = f.file.bs
    while o.file is not None and o.drv.format_name != "file":
        o = o.file.bs
    path = name if os.path.isabs(name) else os.path.join(os.path.dirname(o.filename), name)
    try:
        return os.path.samefile(path, f.filename)
    except OSError:
        return False


def _commit(blk: BlockBackend, chain: list, base_bs: Any) -> None:
    """Copy what ``chain`` (top first) holds into the base.  Raises ImgError."""
    from gqemu.block import blk_getlength, blk_pread, blk_pwrite, blk_pwrite_zeroes
    from gqemu.block.driver import BDRV_REQ_MAY_UNMAP, BlockError, bdrv_getlength
    from gqemu.block.io_truncate import bdrv_truncate
    from gqemu.block.io_misc import bdrv_run_co
    from gqemu.block import BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO
    from gqemu.block.io_status import bdrv_co_block_status_above
    from gqemu.cli.qemu_io_misc import bdrv_is_allocated
    base_blk = _open_base(chain[-1], base_bs)
    try:
        from gqemu.block import blk_bs
        bbs: Any = blk_bs(base_blk)
        size = blk_getlength(blk)
        if bdrv_getlength(bbs) < size:
            ret, msg = bdrv_truncate(bbs, size, False, "off")
            if ret < 0:
                raise ImgError(msg)
        tcs = getattr(bbs.drv, "cluster_size", 0) or 0
        gran = max(4096, tcs or 65536)
        runs: list[list[int]] = []
        offset = 0
        while offset < size:
            alloc, pnum = False, size - offset
            for node in chain:
                ret, n = bdrv_is_allocated(node, offset, pnum)
                if ret < 0:
                    raise ImgError("Block status failed: %s" % os.strerror(-ret))
                if ret:
                    alloc = True
                pnum = min(pnum, n) if n else pnum
            if alloc:
                start, end = offset - offset % gran, min(size, -(-(offset + pnum) // gran) * gran)
                if runs and runs[-1][1] >= start:
                    runs[-1][1] = max(runs[-1][1], end)
                else:
                    runs.append([start, end])
            offset += pnum
        top = chain[0]
        for start, end in runs:
            off = start
            while off < end:
                # the status through the whole chain, as the mirror asks it:
                # whole granules only; less than one is copied, a zero run
                # is written as zeroes only when it covers whole base clusters
                st, pn = bdrv_run_co(top, bdrv_co_block_status_above, top, None, off,
                                     min(CHUNK, end - off))
                if st < 0 or st & BDRV_BLOCK_DATA:
                    pn = CHUNK if st < 0 else min(pn, CHUNK)
                pn -= pn % gran
                zero = False
                if pn < gran:
                    pn = gran
                elif not st & BDRV_BLOCK_DATA:      # (st >= 0 here)
                    zero = bool(st & BDRV_BLOCK_ZERO) and (
                        not tcs or (off % tcs == 0 and (off + pn) % tcs == 0))
                n = min(pn, size - off)             # mirror_perform's clip
                if zero:
                    ret = blk_pwrite_zeroes(base_blk, off, n, BDRV_REQ_MAY_UNMAP)
                    if ret < 0:
                        raise ImgError("Block job failed: %s" % os.strerror(-ret))
                else:
                    try:
                        blk_pwrite(base_blk, off, blk_pread(blk, off, n))
                    except BlockError as e:
                        raise ImgError("Block job failed: %s" % os.strerror(e.errno)) from None
                off += n
    finally:
        blk_close(base_blk)


def _open_base(overlay: Any, base_bs: Any) -> Any:
    """A writable BlockBackend on the base (QEMU reopens the node
    read-write; gqemu opens its graph a second time: a ``json:`` backing
    name as its nodes say, e.g. with a blkdebug node, else the file; the
    protocol node at the bottom without locking, as the image's read-only
    backing node holds the file)."""
    from gqemu.block import blk_new_open
    from gqemu.block.driver import BDRV_O_NO_BACKING, BDRV_O_UNMAP, BlockError
    key, f = "", base_bs
    while f.file is not None and f.drv.format_name != "file":
        key += f.file.name + "."
        f = f.file.bs
    name = getattr(overlay.drv, "backing_file", None) or ""
    if overlay.backing is not None and overlay.backing.bs is base_bs \
            and name.startswith("json:"):
        from gqemu.block.open_opts import bdrv_fill_options
        fname, opts = bdrv_fill_options(name, {})
        opts.setdefault("driver", base_bs.drv.format_name)
        opts[key + "locking"] = "off"
    else:
        fname, opts = f.filename, {"format": base_bs.drv.format_name, "locking": "off"}
    opts["cache"] = "unsafe"
    _data_file_unlocked(base_bs, opts)
    try:
        # img_commit opens with BDRV_O_UNMAP, which the base inherits
        return blk_new_open(fname or None, opts, BDRV_O_NO_BACKING | BDRV_O_UNMAP)
    except BlockError as e:
        raise ImgError("Could not reopen the base read-write: %s" % e.msg) from None


def _data_file_unlocked(base_bs: Any, opts: dict) -> None:
    """The base's external data file, opened a second time like its image
    file: the node the read-only base holds, without locking."""
    child = getattr(base_bs.opaque, "data_file", None)
    if child is None:
        return
    f, key = child.bs, "data-file."
    if any(k == "data-file" or k.startswith(key) for k in opts):
        while f.file is not None and f.drv.format_name != "file":
            key += f.file.name + "."
            f = f.file.bs
        opts[key + "locking"] = "off"
    elif f.drv.format_name == "file":
        opts.update({key + "filename": f.filename, key + "locking": "off"})


def _make_empty(bs: Any) -> int:
    """Discard every cluster of the image.  QEMU: qcow2_make_empty (the
    discard path), qcow_make_empty; raw images are left as they are
    (-ENOTSUP, ignored)."""
    if bs.drv.format_name == "qcow":
        from gqemu.block.qcow_empty import qcow_make_empty
        return qcow_make_empty(bs)
    if bs.drv.format_name != "qcow2":
        return 0
    from gqemu.block.io_misc import bdrv_run_co
    from gqemu.block.qcow2_empty import qcow2_co_make_empty
    return bdrv_run_co(bs, qcow2_co_make_empty, bs)
