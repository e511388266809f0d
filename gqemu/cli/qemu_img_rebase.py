"""``qemu-img rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt]
[-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt]
filename``.

Safe mode: wherever the image itself holds nothing, the old backing
chain's data is compared with the new one's sector by sector and the old
data is written into the image where they differ (as a zero write past
the old backing file's end); then the header names
the new backing file.  ``-u`` only changes the header.  ``-b ''`` removes
the backing file (safe mode first copies all of its data in).

QEMU: qemu-img.c (img_rebase).
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, Optional

from gqemu.cli.qemu_img_tool import ImgError, blk_close, img_open, parse_args, usage_error

if TYPE_CHECKING:                       # the block layer is imported on use
    from gqemu.block.block_backend import BlockBackend

IO_BUF_SIZE = 2 << 20


def compare_buffers(a: memoryview, b: memoryview, n: int) -> tuple[bool, int]:
    """Whether the first sector differs, and how many bytes (whole sectors,
    or the rest) share that state.  QEMU: compare_buffers."""
    res = a[:512] != b[:512]
    i = 512
    while i < n:
        if (a[i:i + 512] != b[i:i + 512]) != res:
            break
        i += 512
    return res, min(i, n)


def change_backing_file(blk: BlockBackend, name: Optional[str], fmt: Optional[str]) -> int:
    """Rewrite the header's backing file name and format.
    QEMU: bdrv_change_backing_file."""
    import errno
    from gqemu.block import blk_bs
    from gqemu.block.io_misc import bdrv_run_co
    bs: Any = blk_bs(blk)
    if bs.drv.format_name != "qcow2":
        return -errno.ENOTSUP
    from gqemu.block.qcow2_header_update import qcow2_change_backing_file
    return bdrv_run_co(bs, qcow2_change_backing_file, bs, name, fmt)


def img_rebase(argv: list[str]) -> int:
    """QEMU: img_rebase."""
    opts, args = parse_args(argv, "hf:F:b:upt:T:qU", ["help", "object=", "image-opts",
                                                      "force-share"])
    fmt = out_fmt = base = None
    unsafe = quiet = image_opts = force_share = progress = False
    cache = src_cache = "writeback"
    for o, v in opts:
        if o == "-f":
            fmt = v
        elif o == "-F":
            out_fmt = v
        elif o == "-b":
            base = v
        elif o == "-u":
            unsafe = True
        elif o == "-q":
            quiet = True
        elif o == "-p":
            progress = True
        elif o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o == "-t":
            cache = v
        elif o == "-T":
            src_cache = v
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    if not unsafe and base is None:
        raise usage_error("Must specify backing file (-b) or use unsafe mode (-u)")
    filename = args[0]
    from gqemu.cli.qemu_img_convert import QemuProgress
    bar = QemuProgress(progress and not quiet, 2.0)
    bar.qemu_progress_print(0, 100)
    try:
        from gqemu.block.drive_opts import CACHE_MODES
        if cache not in CACHE_MODES:
            raise ImgError("Invalid cache option: %s" % cache)
        if src_cache not in CACHE_MODES:
            raise ImgError("Invalid source cache option: %s" % src_cache)
        # -U shares the backing files QEMU opens read-only (BDRV_OPT_FORCE_SHARE)
        _rebase(bar, filename, fmt, base, out_fmt, unsafe, image_opts, cache, force_share)
    finally:
        bar.qemu_progress_end()
    return 0


def _rebase(bar: Any, filename: str, fmt: Optional[str], base: Optional[str],
            out_fmt: Optional[str], unsafe: bool, image_opts: bool, cache: str,
            force_share: bool) -> None:
    from gqemu.block.driver import BDRV_O_NO_BACKING
    blk = img_open(filename, fmt, True, BDRV_O_NO_BACKING if unsafe else 0,
                   image_opts=image_opts, cache=cache)
    try:
        from gqemu.block.driver_registry import bdrv_find_format
        if out_fmt is not None and bdrv_find_format(out_fmt) is None:
            raise ImgError("Invalid format name: '%s'" % out_fmt)
        if base and not unsafe:
            _copy_differences(blk, filename, base, out_fmt, bar, force_share)
        elif not base and not unsafe:
            _copy_differences(blk, filename, None, None, bar, force_share)
        if base:
            if out_fmt is None:
                bar.qemu_progress_print(100, 0)     # QEMU prints it after the error
                raise ImgError("Could not change the backing file to '%s': backing "
                               "format must be specified" % base)
            ret = change_backing_file(blk, base, out_fmt)
        else:
            ret = change_backing_file(blk, None, None)
        if ret < 0:
            bar.qemu_progress_print(100, 0)
            shown = "(null)" if base is None else base     # glibc's %s of NULL
            if ret == -errno.ENOSPC:     # the header cluster has no room for it
                raise ImgError("Could not change the backing file to '%s': No space "
                               "left in the file header" % shown)
            raise ImgError("Could not change the backing file to '%s': %s"
                           % (shown, os.strerror(-ret)))
        bar.qemu_progress_print(100, 0)
    finally:
        blk_close(blk)


def _in_backing_chain(bs: Any, path: str) -> Any:
    """The node below ``bs`` whose file is ``path``, or None.
    QEMU: bdrv_find_backing_image (by file, as a real path)."""
    node = bs.backing.bs if bs.backing is not None else None
    while node is not None:
        f = node
        while f.file is not None and f.drv.format_name != "file":
            f = f.file.bs
        try:
            if os.path.samefile(path, f.filename):
                return node
        except OSError:
            pass
        node = node.backing.bs if node.backing is not None else None
    return None


def _copy_differences(blk: BlockBackend, filename: str, base: Optional[str],
                      base_fmt: Optional[str], bar: Any, force_share: bool) -> None:
    """Safe mode's data copy.  Raises ImgError."""
    from gqemu.block import blk_bs, blk_getlength, blk_pwrite, blk_pwrite_zeroes
    from gqemu.block.driver import BlockError, bdrv_getlength
    from gqemu.block.io_misc import bdrv_pread
    from gqemu.cli.qemu_io_misc import bdrv_is_allocated
    bs: Any = blk_bs(blk)
    old = bs.backing
    old_size = bdrv_getlength(old.bs) if old is not None else 0
    new_blk: Any = None
    new_node: Any = None
    new_size = 0
    if base:
        path = base
        if not os.path.isabs(base):
            path = os.path.join(os.path.dirname(filename), base)
        new_node = _in_backing_chain(bs, path)
        if new_node is not None:
            # already in the chain: that node is used, whatever -F says
            # (QEMU: bdrv_find_backing_image in img_rebase)
            new_size = bdrv_getlength(new_node)
        else:
            try:
                new_blk = img_open(path, base_fmt, force_share=force_share)
            except ImgError as e:
                msg = str(e)
                prefix = "Could not open '%s': " % path
                if msg.startswith(prefix):
                    msg = msg[len(prefix):]
                raise ImgError("Could not open new backing file '%s': %s" % (path, msg),
                               tail=e.tail) from None
            new_size = blk_getlength(new_blk)
    try:
        size = blk_getlength(blk)
        # QEMU's float: 100 / the number of IO_BUF_SIZE steps
        step = 100.0 / (size // min(size, IO_BUF_SIZE)) if size else 0.0
        offset = 0
        while offset < size:
            n = min(IO_BUF_SIZE, size - offset)
            ret, n = bdrv_is_allocated(bs, offset, n)
            if ret < 0:
                raise ImgError("error while reading image metadata: %s" % os.strerror(-ret))
            if ret or n == 0:
                offset += n or size
                continue
            buf_old = bytearray(n)
            old_is_zero = offset >= old_size       # past the old backing's end
            if offset < old_size:
                n = min(n, old_size - offset)
                buf_old = bytearray(n)
                r = bdrv_pread(old, offset, buf_old, n)
                if r < 0:
                    raise ImgError("error while reading from old backing file")
            buf_new = bytearray(n)
            if (new_blk is not None or new_node is not None) and offset < new_size:
                n = min(n, new_size - offset)
                del buf_old[n:]
                buf_new = bytearray(n)
                from gqemu.block import blk_pread
                try:
                    if new_node is not None:
                        if bdrv_pread(new_node, offset, buf_new, n) < 0:
                            raise BlockError(5, "")
                    else:
                        buf_new[:] = blk_pread(new_blk, offset, n)
                except BlockError:
                    raise ImgError("error while reading from new backing file") from None
            done = 0
            while done < n:
                differs, pnum = compare_buffers(memoryview(buf_old)[done:],
                                                memoryview(buf_new)[done:], n - done)
                if differs and old_is_zero:
                    r = blk_pwrite_zeroes(blk, offset + done, pnum, 0)
                    if r < 0:
                        raise ImgError("Error while writing to COW image: %s"
                                       % os.strerror(-r))
                elif differs:
                    try:
                        blk_pwrite(blk, offset + done, memoryview(buf_old)[done:done + pnum])
                    except BlockError as e:
                        raise ImgError("Error while writing to COW image: %s"
                                       % os.strerror(e.errno)) from None
                done += pnum
            offset += n
            bar.qemu_progress_print(step, 100)
    finally:
        if new_blk is not None:
            blk_close(new_blk)
