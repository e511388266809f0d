"""``qemu-img resize [--object objectdef] [--image-opts] [-f fmt]
[--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size``.

The size is taken off the end of the argument list before the options are
parsed, so ``-1G`` is a size, not an option.  The image is opened before
the new size is checked; errors are QEMU's lines, exit 1.

QEMU: qemu-img.c (img_resize).
"""
from __future__ import annotations

import re

from gqemu.cli import qemu_img
from gqemu.cli.qemu_img import ImgError, blk_close, img_open, parse_args

SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
             "and exabytes, respectively.")

_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
           "p": 1 << 50, "e": 1 << 60}


def parse_option_size(name: str, text: str) -> int:
    """A QemuOpts size value (bytes; k/M/G/T/P/E suffixes, a fraction
    allowed with a suffix).  QEMU: parse_option_size (qemu_strtosz)."""
    m = re.fullmatch(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?)([bBkKmMgGtTpPeE]?)", text)
    bad = ImgError("Parameter '%s' expects a non-negative number below 2^64" % name,
                   tail=SIZE_HINT + "\n")
    if not m:
        raise bad
    num, suf = m.group(1), m.group(2).lower()
    mult = _SUFFIX[suf]
    if num[:2].lower() == "0x":
        if suf:
            raise bad
        val = int(num, 16)
    elif "." in num:
        whole, _, frac = num.partition(".")
        fraction = float("0." + (frac or "0"))
        if mult == 1 and fraction:              # a fraction needs a unit
            raise bad
        val = int(whole) * mult + int(fraction * mult)
    else:
        val = int(num) * mult
    if val >= 1 << 64:
        raise bad
    return val


def img_resize(argv: list[str]) -> int:
    """QEMU: img_resize."""
    if len(argv) < 2:
        raise ImgError("Not enough arguments",
                       tail="Try '%s --help' for more information\n" % qemu_img.PROG)
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
        raise ImgError("Expecting image file name and size",
                       tail="Try '%s --help' for more information\n" % qemu_img.PROG)
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
        bs = blk_bs(blk)
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
            raise ImgError(msg)
    finally:
        blk_close(blk)
    if not quiet:
        print("Image resized.")
    return 0
