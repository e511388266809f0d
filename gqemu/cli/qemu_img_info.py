"""qemu-img's info, check and snapshot commands (called by the dispatcher,
``qemu_img.py``); their output is written by ``qemu_img_out.py``.

QEMU: qemu-img.c img_info, img_check, img_snapshot.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, error_report, img_open, parse_args,
                                     usage_error)

if TYPE_CHECKING:                       # the block layer is imported on use
    from gqemu.block.block_backend import BlockBackend


# -------------------------------------------------------------------- info


def _display_name(blk: BlockBackend, filename: str, image_opts: bool) -> str:
    """The name ``info`` shows: for a ``json:``, ``--image-opts`` or
    ``file:`` name, the graph's (refresh_filename.py).
    QEMU: bdrv_refresh_filename."""
    if not filename.startswith(("json:", "file:")) and not image_opts:
        return filename
    from gqemu.block import blk_bs
    from gqemu.block.refresh_filename import bdrv_refresh_filename
    return bdrv_refresh_filename(blk_bs(blk)) or filename


def img_info(argv: list[str]) -> int:
    """QEMU: img_info."""
    opts, args = parse_args(argv, "f:hU", ["format=", "output=", "backing-chain", "help",
                                            "force-share", "image-opts", "object="])
    fmt, output, chain, image_opts, force_share = None, "human", False, False, False
    for o, v in opts:
        if o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o in ("-f", "--format"):
            fmt = v
        elif o == "--output":
            output = v
        elif o == "--backing-chain":
            chain = True
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    if output not in ("human", "json"):
        raise ImgError("--output must be used with human or json as argument.")
    from gqemu.block.driver import BDRV_O_NO_BACKING, BDRV_O_NO_IO
    from gqemu.cli.qemu_img_out import dump_info, image_info
    infos = []
    filename: Optional[str] = args[0]
    seen = set()
    while filename is not None:
        if os.path.realpath(filename) in seen:
            raise ImgError("Backing file '%s' creates an infinite loop." % filename)
        seen.add(os.path.realpath(filename))
        blk = img_open(filename, fmt, False, BDRV_O_NO_BACKING | BDRV_O_NO_IO,
                       image_opts=image_opts,
                       force_share=force_share)
        try:
            info = image_info(blk, _display_name(blk, filename, image_opts))
        finally:
            blk_close(blk)
        infos.append(info)
        image_opts = False
        if not chain:
            break
        filename = info.get("full-backing-filename")
        fmt = info.get("backing-filename-format")
    dump_info(infos, output, chain)
    return 0


# ------------------------------------------------------------------- check


def img_check(argv: list[str]) -> int:
    """QEMU: img_check (exit 0 clean, 1 failed, 2 corrupt, 3 leaks, 63 n/a)."""
    opts, args = parse_args(argv, "hf:r:T:qU", ["format=", "output=", "repair=", "help",
                                                 "force-share", "object=", "image-opts"])
    fmt, output, fix, quiet, image_opts, force_share = None, "human", 0, False, False, False
    cache = "writeback"
    for o, v in opts:
        if o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o in ("-f", "--format"):
            fmt = v
        elif o == "--output":
            output = v
        elif o in ("-r", "--repair"):
            if v == "leaks":
                fix = 1
            elif v == "all":
                fix = 3
            else:
                raise usage_error("Unknown option value for -r "
                                  "(expecting 'leaks' or 'all'): %s" % v)
        elif o == "-T":
            cache = v
        elif o == "-q":
            quiet = True
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    if output not in ("human", "json"):
        raise ImgError("--output must be used with human or json as argument.")
    from gqemu.block.drive_opts import CACHE_MODES
    from gqemu.block.driver import BDRV_O_CHECK
    from gqemu.cli.qemu_img_out import run_check
    if cache not in CACHE_MODES:
        raise ImgError("Invalid source cache option: %s" % cache)
    blk = img_open(args[0], fmt, bool(fix), BDRV_O_CHECK, image_opts=image_opts,
                   force_share=force_share, cache=cache)
    try:
        return run_check(blk, args[0], fix, output, quiet, error_report)
    finally:
        blk_close(blk)


# ---------------------------------------------------------------- snapshot


def img_snapshot(argv: list[str]) -> int:
    """QEMU: img_snapshot."""
    opts, args = parse_args(argv, "la:c:d:hqU", ["help", "force-share", "object=",
                                                  "image-opts"])
    action, name, quiet, image_opts, force_share = None, None, False, False, False
    for o, v in opts:
        if o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o in ("-l", "-a", "-c", "-d"):
            if action is not None:
                raise usage_error("Cannot mix '-l', '-a', '-c', '-d'")
            action, name = o, v
        elif o == "-q":
            quiet = True
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    from gqemu.cli.qemu_img_out import snapshot_action
    # no action: QEMU opens the image read-write and does nothing
    blk = img_open(args[0], None, action != "-l", image_opts=image_opts,
                   force_share=force_share)
    try:
        return snapshot_action(blk, action, name or "", quiet) if action else 0
    finally:
        blk_close(blk)
