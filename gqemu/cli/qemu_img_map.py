"""gqemu-img map, and the block-status walk down a backing chain that
map, compare (qemu_img_compare.py) and convert share.

QEMU: qemu-img.c img_map (get_block_status); block/io.c
bdrv_co_common_block_status_above.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from gqemu.block.block_int import (BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA,
                                   BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO)
from gqemu.block.io_misc import bdrv_co_get_block_status
from gqemu.cli.qemu_img_tool import ImgError, blk_close, img_open, parse_args, usage_error
from gqemu.cli.qemu_img_out import run_co

if TYPE_CHECKING:
    from gqemu.block.block_backend import BlockBackend

IO_BUF_SIZE = 2 * 1024 * 1024


# --------------------------------------------------------------------- map


def img_map(argv: list[str]) -> int:
    """QEMU: img_map (7.2: --image-opts, -U, -s/--start-offset,
    -l/--max-length)."""
    from gqemu.cli.qemu_img_tool import cvtnum
    opts, args = parse_args(argv, "hf:s:l:U", ["help", "format=", "output=", "object=",
                                               "image-opts", "force-share",
                                               "start-offset=", "max-length="])
    fmt, output, image_opts, force_share = None, "human", False, False
    start, max_length = 0, -1
    for o, v in opts:
        if o in ("-f", "--format"):
            fmt = v
        elif o == "--output":
            output = v
        elif o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o in ("-s", "--start-offset"):
            start = cvtnum("start offset", v)
        elif o in ("-l", "--max-length"):
            max_length = cvtnum("max length", v)
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    if output not in ("human", "json"):
        raise ImgError("--output must be used with human or json as argument.")
    blk = img_open(args[0], fmt, image_opts=image_opts, force_share=force_share)
    try:
        ret, text = run_co(map_co, blk, output, start, max_length)
    finally:
        blk_close(blk)
    sys.stdout.write(text)
    if ret == 1:
        raise ImgError("File contains external, encrypted or compressed clusters.")
    if ret < 0:
        raise ImgError("Could not read file metadata: %s" % os.strerror(-ret))
    return 0


def bdrv_skip_filters(bs: Any) -> Any:
    """The first node below ``bs`` that is not a filter (blkdebug,
    copy-on-read, raw without offset/size pass everything to their file
    child).  QEMU: bdrv_skip_filters."""
    while bs.drv is not None and bs.drv.is_filter and bs.file is not None \
            and not getattr(bs.drv, "offset", 0) and not getattr(bs.drv, "has_size", False):
        bs = bs.file.bs
    return bs


def get_block_status(bs: Any, offset: int, nbytes: int) -> tuple[int, dict]:
    """One map entry, looking down the backing chain (filters skipped, so a
    blkdebug node's image shows its backing files).  Context: coroutine.
    QEMU: get_block_status (qemu-img.c) over bdrv_block_status."""
    depth = 0
    while True:
        bs = bdrv_skip_filters(bs)
        ret, n, host, f = bdrv_co_get_block_status(bs, offset, nbytes)
        if ret < 0:
            return ret, {}
        if n <= 0:                  # past the end of a shorter backing file
            n, ret, f = nbytes, BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED, None
        nbytes = n
        if ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO) or bs.backing is None:
            break
        bs = bs.backing.bs
        depth += 1
    has_offset = bool(ret & BDRV_BLOCK_OFFSET_VALID)
    e = {"start": offset, "length": nbytes, "depth": depth,
         "present": bool(ret & BDRV_BLOCK_ALLOCATED), "zero": bool(ret & BDRV_BLOCK_ZERO),
         "data": bool(ret & BDRV_BLOCK_DATA), "has_offset": has_offset,
         "offset": host if has_offset else 0,
         "filename": f.filename if f is not None and has_offset else None}
    return 0, e


def _mergeable(c: dict, n: dict) -> bool:
    if not c["length"]:
        return False
    for k in ("zero", "data", "depth", "present", "has_offset", "filename"):
        if c[k] != n[k]:
            return False
    return not c["has_offset"] or c["offset"] + c["length"] == n["offset"]


def _dump(output: str, e: dict, nxt: Any, out: list[str]) -> int:
    if output == "human":
        if e["data"] and not e["has_offset"]:
            return -1
        if e["data"] and not e["zero"]:
            out.append("%-16s%-16s%-16s%s\n" % (_hx(e["start"]), _hx(e["length"]),
                                               _hx(e["offset"]), e["filename"]))
        if nxt is not None and (not nxt["data"] or nxt["zero"]):
            nxt["data"], nxt["zero"] = False, True
        return 0
    s = ('{ "start": %d, "length": %d, "depth": %d, "present": %s, "zero": %s, "data": %s'
         % (e["start"], e["length"], e["depth"], _b(e["present"]), _b(e["zero"]), _b(e["data"])))
    if e["has_offset"]:
        s += ', "offset": %d' % e["offset"]
    out.append(s + "}" + (",\n" if nxt is not None else ""))
    return 0


def _hx(v: int) -> str:
    return "%#x" % v if v else "0"


def _b(v: bool) -> str:
    return "true" if v else "false"


def map_co(blk: BlockBackend, output: str, start: int = 0, max_length: int = -1) -> tuple[int, str]:
    """Context: coroutine.  QEMU: img_map's loop (an entry of length 0 at
    ``start`` when it is at or past the end)."""
    from gqemu.block import blk_bs, blk_getlength
    bs = blk_bs(blk)
    length = blk_getlength(blk)
    if max_length != -1:
        length = min(start + max_length, length)
    out = ["%-16s%-16s%-16s%s\n" % ("Offset", "Length", "Mapped to", "File")
           if output == "human" else "["]
    curr: dict = {"start": start, "length": 0, "depth": 0, "present": False,
                  "zero": False, "data": False, "has_offset": False, "offset": 0,
                  "filename": None}
    while curr["start"] + curr["length"] < length:
        off = curr["start"] + curr["length"]
        ret, nxt = get_block_status(bs, off, length - off)
        if ret < 0:
            return ret, "".join(out)
        if curr["length"] and _mergeable(curr, nxt):
            curr["length"] += nxt["length"]
            continue
        if curr["length"] and _dump(output, curr, nxt, out) < 0:
            return 1, "".join(out)
        curr = nxt
    if _dump(output, curr, None, out) < 0:
        return 1, "".join(out)
    if output == "json":
        out.append("]\n")
    return 0, "".join(out)
