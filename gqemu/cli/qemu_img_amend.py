"""``qemu-img amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt]
[-t cache] [--force] -o options filename``.

Of QEMU's formats only qcow2 amends its options; gqemu does not implement
that, so amend ends with a one-line error for every format after checking
the command line and opening the image as QEMU does: raw and bochs get
QEMU's "does not support option amendment", qcow2 says that gqemu does
not implement it.

QEMU: qemu-img.c img_amend, print_amend_option_help.
"""
from __future__ import annotations

from typing import Any

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, img_open, parse_args,
                                     usage_error)

# The formats whose QEMU driver has bdrv_amend_options.
AMENDABLE = ("qcow2",)


def _no_amend(fmt: str) -> ImgError:
    from gqemu.block import bdrv_drivers
    if fmt not in bdrv_drivers:
        return ImgError("Unknown file format '%s'" % fmt)
    if fmt in AMENDABLE:
        return ImgError("Amending '%s' options is not implemented in gqemu" % fmt)
    return ImgError("Format driver '%s' does not support option amendment" % fmt)


def img_amend(argv: list[str]) -> int:
    """QEMU: img_amend."""
    opts, args = parse_args(argv, "ho:f:t:pqU", ["help", "object=", "image-opts", "force"])
    options: list[str] = []
    fmt, cache, image_opts = None, "writeback", False
    for o, v in opts:
        if o == "-o":
            options.append(v)
        elif o == "-f":
            fmt = v
        elif o == "-t":
            cache = v
        elif o == "--image-opts":
            image_opts = True
    if not options:
        raise usage_error("Must specify options (-o)")
    wants_help = any(item in ("help", "?") for o in options for item in o.split(","))
    if fmt and wants_help:
        raise _no_amend(fmt)
    if len(args) != 1:
        raise ImgError("Expecting one image file name")
    from gqemu.block.driver import BlockError
    from gqemu.block.drive_opts import bdrv_parse_cache_mode
    try:
        bdrv_parse_cache_mode(cache)
    except BlockError:
        raise ImgError("Invalid cache option: %s" % cache) from None
    blk = img_open(args[0], fmt, True, image_opts=image_opts, cache=cache)
    try:
        from gqemu.block import blk_bs
        bs: Any = blk_bs(blk)
        raise _no_amend(bs.drv.format_name)
    finally:
        blk_close(blk)
