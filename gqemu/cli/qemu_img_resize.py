"""``qemu-img resize [--object objectdef] [--image-opts] [-f fmt]
[--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size``.

The size is taken off the end of the argument list before the options are
parsed, so ``-1G`` is a size, not an option.  The image is opened before
the new size is checked; errors are QEMU's lines, exit 1.

QEMU: qemu-img.c (img_resize).
"""
from __future__ import annotations

from typing import Any

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, img_open, parse_args,
                                     parse_option_size, usage_error)


def img_resize(argv: list[str]) -> int:
    """QEMU: img_resize."""
    if len(argv) < 2:
        raise usage_error("Not enough arguments")
    size = argv[-1]
    opts, args = parse_args(argv[:-1], "f:hq", ["help", "object=", "image-opts",
                                                 "preallocation=", "shrink"])
    fmt, quiet, shrink, image_opts, prealloc = None, False, False, False, "off"
    for o, v in opts:
        if o == "-f":
            fmt = v
        elif o == "-q":
            quiet = True
        elif o == "--shrink":
            shrink = True
        elif o == "--image-opts":
            image_opts = True
        elif o == "--preallocation":
            if v not in ("off", "metadata", "falloc", "full"):
                raise ImgError("Invalid preallocation mode '%s'" % v)
            prealloc = v
    if len(args) != 1:
        raise usage_error("Expecting image file name and size")
    filename = args[0]
    relative = 0
    if size[:1] in ("+", "-"):
        relative = 1 if size[0] == "+" else -1
        size = size[1:]
    n = parse_option_size("size", size)
    from gqemu.block import blk_bs
    from gqemu.block.driver import bdrv_getlength
    from gqemu.block.io_truncate import bdrv_truncate
    blk = img_open(filename, fmt, True, image_opts=image_opts)
    try:
        bs: Any = blk_bs(blk)
        current = bdrv_getlength(bs)
        if current < 0:
            import os
            raise ImgError("Failed to inquire current image length: %s" % os.strerror(-current))
        total = current + n * relative if relative else n
        if total <= 0 or total >= 1 << 63:
            raise ImgError("New image size must be positive")
        if total <= current and prealloc != "off":
            raise ImgError("Preallocation can only be used for growing images")
        if total < current and not shrink:
            raise ImgError("Use the --shrink option to perform a shrink operation.\n"
                           "warning: Shrinking an image will delete all data beyond the "
                           "shrunken image's end. Before performing such an operation, "
                           "make sure there is no important data there.")
        ret, msg = bdrv_truncate(bs, total, True, prealloc)
        if ret < 0:
            msg, _, hint = msg.partition("\n")      # a hint goes out as it is
            raise ImgError(msg, tail=hint + "\n" if hint else "")
    finally:
        blk_close(blk)
    if not quiet:
        print("Image resized.")
    return 0
