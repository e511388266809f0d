"""``qemu-img dd [--image-opts] [-U] [-f fmt] [-O output_fmt]
[bs=block_size] [count=blocks] [skip=blocks] if=input of=output``.

The output image is created (quietly, format ``-O``, default raw) with
QEMU's size arithmetic: the input's length, or ``count * bs`` when that is
smaller, minus ``skip * bs``; then the input is copied ``bs`` bytes at a
time from ``skip * bs`` on.  A ``skip`` past the input's end is reported
and gives an empty output, as dd(1).

QEMU: qemu-img.c (img_dd).
"""
from __future__ import annotations

import os

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, error_report, img_open, parse_args,
                                     parse_option_size)

INT64_MAX = (1 << 63) - 1


def _cvtnum(name: str, value: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    """A size in [lo, hi].  QEMU: cvtnum_full (qemu_strtosz, bytes by
    default)."""
    try:
        n = parse_option_size(name, value)
    except ImgError:
        raise ImgError("Invalid %s specified. You may use k, M, G, T, P or E suffixes for\n"
                       "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
                       % name) from None
    if not lo <= n <= hi:
        raise ImgError("Invalid %s specified. Must be between %d and %d." % (name, lo, hi))
    return n


def img_dd(argv: list[str]) -> int:
    """QEMU: img_dd."""
    opts, args = parse_args(argv, "hf:O:U", ["help", "image-opts", "object=",
                                              "force-share"])
    fmt, out_fmt, image_opts, force_share = None, "raw", False, False
    for o, v in opts:
        if o == "-f":
            fmt = v
        elif o == "-O":
            out_fmt = v
        elif o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
    bsz, count, skip = 512, None, None
    infile = outfile = None
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise ImgError("unrecognized operand %s" % arg)
        if key == "bs":         # cvtnum_full("bs", arg, 1, INT_MAX)
            bsz = _cvtnum("bs", value, 1, 0x7fffffff)
        elif key == "count":
            count = _cvtnum("count", value)
        elif key == "skip":
            skip = _cvtnum("skip", value)
        elif key == "if":
            infile = value
        elif key == "of":
            outfile = value
        else:
            raise ImgError("unrecognized operand %s" % key)
    if infile is None or outfile is None:
        raise ImgError("Must specify both input and output files")
    from gqemu.block import blk_getlength, blk_pread, blk_pwrite
    from gqemu.block.driver import BlockError
    from gqemu.cli.qemu_img_create import create_image
    src = img_open(infile, fmt, False, image_opts=image_opts, force_share=force_share)
    try:
        size = blk_getlength(src)
        if size < 0:
            raise ImgError("Failed to get size for '%s'" % infile)
        in_offset = 0
        if count is not None and count <= INT64_MAX // bsz and count * bsz < size:
            size = count * bsz
        # a skip past the input: an empty output, then the error (img_dd
        # reports it once the output exists and is open)
        past_end = skip is not None and (INT64_MAX // bsz < skip or size < bsz * skip)
        if past_end:
            size = 0
        elif skip is not None:
            in_offset = skip * bsz
        size = 0 if size < in_offset else size - in_offset
        try:
            create_image(outfile, out_fmt, size, None, None, {}, True)
        except ImgError as e:       # bdrv_create's error under img_dd's prefix
            msg = str(e)
            if msg.startswith(outfile + ": "):
                msg = msg[len(outfile) + 2:]
            raise ImgError("%s: error while creating output image: %s" % (outfile, msg),
                           e.status, e.tail) from None
        dst = img_open(outfile, out_fmt, True)
        if past_end:
            error_report("%s: cannot skip to specified offset" % infile)
        try:
            in_pos, out_pos = in_offset, 0
            while out_pos < size:
                n = min(bsz, size - out_pos)
                try:
                    buf = blk_pread(src, in_pos, n)
                except BlockError as e:
                    raise ImgError("error while reading from input image file: %s"
                                   % os.strerror(e.errno)) from None
                in_pos += n
                try:
                    blk_pwrite(dst, out_pos, buf)
                except BlockError as e:
                    raise ImgError("error while writing to output image file: %s"
                                   % os.strerror(e.errno)) from None
                out_pos += n
        finally:
            blk_close(dst)
    finally:
        blk_close(src)
    return 0
