"""gqemu-img measure, and the typed ``-o`` parsing it shares with create.

``measure`` prints the file size an image converted to (or created in) the
output format needs: ``required size``, ``fully allocated size`` and, for
a v3 qcow2 target measured from an image that can hold persistent
bitmaps, ``bitmaps size``.

QEMU: qemu-img.c img_measure; util/qemu-option.c (qemu_opts_do_parse over
the driver's create_opts plus file-posix's).
"""
from __future__ import annotations

import sys
from typing import Any, Optional

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, cvtnum, error_report, img_open,
                                     parse_args)
from gqemu.cli.qemu_img_out import dump_json, run_co

# QemuOpts types of the create options (the drivers' create_opts): the
# format's, then file-posix's; the formats qemu-img measure knows
SIZE, NUMBER, BOOL = "size", "num", "bool"
MEASURE_FORMATS = ("raw", "qcow2")


def qemu_opt_parse_bool(key: str, text: str) -> bool:
    """QEMU: parse_option_bool over qapi_bool_parse."""
    if text in ("on", "yes", "true", "y"):
        return True
    if text in ("off", "no", "false", "n"):
        return False
    raise ImgError("Parameter '%s' expects 'on' or 'off'" % key)


def qemu_opt_parse_number(key: str, text: str) -> int:
    """An unsigned 64-bit number (C's strtoull: a minus sign wraps).
    QEMU: parse_option_number over qemu_strtou64."""
    t = text.strip(" \t\n\v\f\r")
    neg = t.startswith("-")
    body = t[1:] if t[:1] in "+-" else t
    try:
        if body[:2].lower() == "0x" and len(body) > 2:
            val = int(body[2:], 16)
        elif body.startswith("0") and len(body) > 1:
            val = int(body[1:], 8)
        else:
            val = int(body, 10)
        if not body[-1:].isalnum() or val >> 64:
            raise ValueError
    except ValueError:
        raise ImgError("Parameter '%s' expects a number" % key) from None
    return (-val if neg else val) & ((1 << 64) - 1)


def parse_create_opts(fmt: str, options: list[str]) -> dict[str, Any]:
    """The ``-o`` lists (``,,`` escapes a comma; the last value of a key
    wins) checked against the format's create options and parsed to their
    types.  Raises ImgError with QEMU's message (a size's hint lines go to
    stderr first).  QEMU: qemu_opts_do_parse."""
    from gqemu.block.block_int import BlockError, parse_option_size
    from gqemu.block import bdrv_drivers
    types = {name: typ for name, typ, _ in bdrv_drivers[fmt].create_opts}
    for name, typ, _ in bdrv_drivers["file"].create_opts:
        types.setdefault(name, typ)
    out: dict[str, Any] = {}
    for text in options:
        for item in text.replace(",,", "\0").split(","):
            if not item:
                continue
            key, eq, val = item.replace("\0", ",").partition("=")
            val = val if eq else "on"
            kind = types.get(key)
            if kind is None:
                raise ImgError("Invalid parameter '%s'" % key)
            if kind == SIZE:
                try:
                    out[key], warning = parse_option_size(key, val)
                except BlockError as e:
                    error_report(e.msg)
                    sys.stderr.write(e.hint)
                    raise ImgError("") from None
                if warning:
                    error_report("warning: " + warning)
            elif kind == NUMBER:
                out[key] = qemu_opt_parse_number(key, val)
            elif kind == BOOL:
                out[key] = qemu_opt_parse_bool(key, val)
            else:
                out[key] = val
    return out


def _parse_measure_args(argv: list[str]) -> dict[str, Any]:
    opts, args = parse_args(argv, "hf:O:o:l:U", ["help", "image-opts", "object=", "output=",
                                                 "size=", "force-share"],
                              glibc_errors=True)
    a: dict[str, Any] = {"fmt": None, "out_fmt": "raw", "options": [], "snapshot": None,
                         "force_share": False, "image_opts": False, "json": False,
                         "size": None, "filename": None}
    for o, v in opts:
        if o == "-f":
            a["fmt"] = v
        elif o == "-O":
            a["out_fmt"] = v
        elif o == "-o":
            a["options"].append(v)
        elif o == "-l":
            a["snapshot"] = v
        elif o in ("-U", "--force-share"):
            a["force_share"] = True
        elif o == "--image-opts":
            a["image_opts"] = True
        elif o == "--output":
            if v not in ("json", "human"):
                raise ImgError("--output must be used with human or json as argument.")
            a["json"] = v == "json"
        elif o == "--size":
            a["size"] = cvtnum("image size", v)
    if len(args) > 1:
        raise ImgError("At most one filename argument is allowed.")
    a["filename"] = args[0] if args else None
    if a["filename"] is None and (a["image_opts"] or a["fmt"] or a["snapshot"]):
        raise ImgError("--image-opts, -f, and -l require a filename argument.")
    if a["filename"] is not None and a["size"] is not None:
        raise ImgError("--size N cannot be used together with a filename.")
    if a["filename"] is None and a["size"] is None:
        raise ImgError("Either --size N or one filename must be specified.")
    return a


def _load_snapshot(blk: Any, name: str) -> None:
    """``-l``: read the image as it was in snapshot ``name`` (an ID or a
    name, or ``snapshot.id=...,snapshot.name=...``).  Raises ImgError.
    QEMU: bdrv_snapshot_load_tmp(_by_id_or_name)."""
    from gqemu.block import blk_bs
    from gqemu.block.qcow2_snapshot_tmp import bdrv_snapshot_load_tmp
    from gqemu.cli.qemu_img_tool import parse_snapshot_param
    sn_id: Optional[str] = None
    sn_name: Optional[str] = name
    if name.startswith("snapshot."):
        fields = parse_snapshot_param(name)
        sn_id, sn_name = fields.get("id"), fields.get("name")
    ret, msg = run_co(bdrv_snapshot_load_tmp, blk_bs(blk), sn_id, sn_name,
                      not name.startswith("snapshot."))
    if ret < 0:
        raise ImgError("Failed to load snapshot: %s" % msg)


def img_measure(argv: list[str]) -> int:
    """QEMU: img_measure."""
    from gqemu.block import blk_bs
    from gqemu.block.block_int import BlockError
    from gqemu.block.qcow2_measure import qcow2_measure, raw_measure
    from gqemu.block.io_status import bdrv_co_block_status_above
    a = _parse_measure_args(argv)
    blk = None
    try:
        if a["filename"] is not None:
            blk = img_open(a["filename"], a["fmt"], image_opts=a["image_opts"],
                           force_share=a["force_share"])
            if a["snapshot"] is not None:
                _load_snapshot(blk, a["snapshot"])
        out_fmt = a["out_fmt"]
        if out_fmt not in MEASURE_FORMATS:
            from gqemu.block import bdrv_drivers
            if out_fmt in bdrv_drivers or out_fmt in ("vmdk", "vpc", "vdi", "vhdx", "qed",
                                                      "luks", "parallels", "qcow", "cloop",
                                                      "dmg", "bochs", "vvfat", "file"):
                raise ImgError("Block driver '%s' does not support size measurement"
                               % out_fmt)
            raise ImgError("Unknown file format '%s'" % out_fmt)
        try:
            opts = parse_create_opts(out_fmt, a["options"])
        except ImgError as e:
            if str(e):
                error_report(str(e))
            raise ImgError("Invalid options for file format '%s'" % out_fmt) from None
        if a["size"] is not None:
            opts["size"] = a["size"]
        in_bs = blk_bs(blk) if blk is not None else None

        def status(bs: Any, offset: int, nbytes: int) -> tuple[int, int]:
            return run_co(bdrv_co_block_status_above, bs, None, offset, nbytes)
        try:
            info = qcow2_measure(opts, in_bs, status) if out_fmt == "qcow2" \
                else raw_measure(opts, in_bs)
        except BlockError as e:
            raise ImgError(e.msg) from None
    finally:
        if blk is not None:
            blk_close(blk)
    if a["json"]:
        d: dict = {}
        if info.bitmaps is not None:
            d["bitmaps"] = _int64(info.bitmaps)
        d["required"] = _int64(info.required)
        d["fully-allocated"] = _int64(info.fully_allocated)
        dump_json(d)
    else:
        sys.stdout.write("required size: %d\nfully allocated size: %d\n"
                         % (info.required, info.fully_allocated))
        if info.bitmaps is not None:
            sys.stdout.write("bitmaps size: %d\n" % info.bitmaps)
    return 0


def _int64(v: int) -> int:
    """QAPI's uint64 fields go out through a signed QNum."""
    return v - (v >> 63 << 64)

