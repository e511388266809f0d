"""``qemu-img amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt]
[-t cache] [--force] -o options filename``.

The ``-o`` lists are checked and joined as qemu-img does (``Invalid option
list``), ``-o help`` / ``-o ?`` list the format's amendable options, and
the options are parsed against that list with QemuOpts' rules and messages
(an option only creation takes gets qemu-img's hint).  The image is opened
read-write and the driver's ``bdrv_amend_options`` applies them
(``gqemu/block/qcow2_amend.py``); ``-p`` prints qemu-img's progress lines.
Every error is one ``<prog>: message`` line (plus QEMU's hint), exit 1.

QEMU: qemu-img.c (img_amend, print_amend_option_help, amend_status_cb,
accumulate_options), util/qemu-option.c (qemu_opts_do_parse,
qemu_opts_print_help, has_help_option).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

from gqemu.cli.qemu_img_convert import QemuProgress
from gqemu.cli.qemu_img_tool import (ImgError, blk_close, error_report, has_help_option,
                                     img_open, is_valid_option_list, parse_args, split_opts,
                                     usage_error)

# QEMU 7.2's format drivers without option amendment (``qemu-img --help``
# minus qcow2 and luks, which have it): ``-f`` with one of these gets
# QEMU's refusal even where gqemu does not model the format.
NO_AMEND_FORMATS = frozenset((
    "blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "ftp", "ftps", "gluster",
    "host_cdrom", "host_device", "http", "https", "iscsi", "iser", "nbd", "nfs",
    "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qed", "quorum",
    "raw", "rbd", "replication", "snapshot-access", "ssh", "throttle", "vdi", "vhdx",
    "vmdk", "vpc", "vvfat"))

_TYPE_NAMES = {"str": "str", "bool": "bool (on/off)", "num": "num", "size": "size"}


class QemuOptsError(Exception):
    """A QemuOpts parse error: ``msg``, then ``hint`` (raw lines)."""

    def __init__(self, msg: str, hint: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.hint = hint


def _parse_number(name: str, value: str) -> int:
    """qemu_strtou64(value, NULL, 0): the whole string, base from the prefix."""
    from gqemu.cutils import _strtou64
    body = value.lstrip(" \t\n\v\f\r").lstrip("+-")
    base = 16 if body[:2].lower() == "0x" else 8 if body[:1] == "0" and len(body) > 1 else 10
    ret, val, end = _strtou64(value, 0, base)
    if ret < 0 or end != len(value):
        raise QemuOptsError("Parameter '%s' expects a number" % name)
    return val


def _parse_value(name: str, typ: str, value: str) -> Any:
    if typ == "bool":
        if value in ("on", "yes", "true", "y"):
            return True
        if value in ("off", "no", "false", "n"):
            return False
        raise QemuOptsError("Parameter '%s' expects 'on' or 'off'" % name)
    if typ == "num":
        return _parse_number(name, value)
    if typ == "size":
        from gqemu.block.block_int import BlockError, parse_option_size
        try:
            size, warning = parse_option_size(name, value)
        except BlockError as e:
            raise QemuOptsError(e.msg, e.hint or "")
        if warning:                     # at every parse, as QEMU's do_strtosz warns
            error_report("warning: " + warning)
        return size
    return value


def qemu_opts_do_parse(text: str, descs: dict[str, str]) -> dict[str, Any]:
    """Parse ``text`` against ``descs`` (name -> type); a later value of an
    option wins.  Raises QemuOptsError at the first bad item.
    QEMU: qemu_opts_do_parse (no implied first name)."""
    out: dict[str, Any] = {}
    for item in split_opts(text):
        name, eq, value = item.partition("=")
        if not eq:
            value = "on"
            if name.startswith("no"):
                name, value = name[2:], "off"
        if name not in descs:
            raise QemuOptsError("Invalid parameter '%s'" % name)
        out[name] = _parse_value(name, descs[name], value)
    return out


def print_amend_option_help(fmt: str) -> int:
    """QEMU: print_amend_option_help."""
    from gqemu.block import bdrv_drivers
    drv = bdrv_drivers.get(fmt)
    if drv is None and fmt not in NO_AMEND_FORMATS:
        raise ImgError("Unknown file format '%s'" % fmt)
    if drv is None or drv.bdrv_amend_options is None:
        raise ImgError("Format driver '%s' does not support option amendment" % fmt)
    lines = []
    for name, typ, text in drv.amend_opts:
        line = "  %s=<%s>" % (name, _TYPE_NAMES[typ])
        lines.append("%s - %s" % (line.ljust(24), text))
    sys.stdout.write("Amend options for '%s':\n" % fmt)
    sys.stdout.write("".join(line + "\n" for line in sorted(lines)))
    return 0


def img_amend(argv: list[str]) -> int:
    """QEMU: img_amend."""
    opts, args = parse_args(argv, "ho:f:t:pq", ["help", "object=", "image-opts", "force"])
    options: Optional[str] = None
    fmt: Optional[str] = None
    cache, progress, quiet, image_opts, force = "writeback", False, False, False, False
    for o, v in opts:
        if o == "-o":
            if not is_valid_option_list(v):
                raise ImgError("Invalid option list: %s" % v)
            options = v if options is None else options + "," + v
        elif o == "-f":
            fmt = v
        elif o == "-t":
            cache = v
        elif o == "-p":
            progress = True
        elif o == "-q":
            quiet = True
        elif o == "--image-opts":
            image_opts = True
        elif o == "--force":
            force = True
    if options is None:
        raise usage_error("Must specify options (-o)")
    bar = QemuProgress(progress and not quiet, 1.0)
    try:
        return _amend(bar, options, fmt, args, cache, image_opts, force)
    except ImgError as e:               # reported before the progress ends, as qemu-img
        for line in str(e).split("\n"):
            error_report(line)
        sys.stderr.write(e.tail)
        sys.stderr.flush()
        return e.status
    finally:
        bar.qemu_progress_end()


def _amend(bar: QemuProgress, options: str, fmt: Optional[str], args: list[str],
           cache: str, image_opts: bool, force: bool) -> int:
    if fmt and has_help_option(options):
        return print_amend_option_help(fmt)
    if len(args) != 1:
        raise ImgError("Expecting one image file name")
    from gqemu.block import blk_bs
    from gqemu.block.drive_opts import CACHE_MODES
    if cache not in CACHE_MODES:
        raise ImgError("Invalid cache option: %s" % cache)
    blk = img_open(args[0], fmt, True, image_opts=image_opts,
                   cache="none" if cache == "off" else cache)
    try:
        bs: Any = blk_bs(blk)
        fmt = bs.drv.format_name
        if has_help_option(options):
            return print_amend_option_help(fmt)
        drv = bs.drv
        if drv.bdrv_amend_options is None:
            raise ImgError("Format driver '%s' does not support option amendment" % fmt)
        descs = {name: typ for name, typ, _ in drv.amend_opts}
        try:
            values = qemu_opts_do_parse(options, descs)
        except QemuOptsError as err:
            hint = err.hint
            create = dict(descs, **dict(getattr(drv, "create_only_opts", ())))
            try:
                qemu_opts_do_parse(options, create)
                hint += "This option is only supported for image creation\n"
            except QemuOptsError:
                pass
            raise ImgError(err.msg, tail=hint)

        def amend_status_cb(bs: Any, offset: int, total_work_size: int) -> None:
            bar.qemu_progress_print(100.0 * offset / total_work_size, 0)

        bar.qemu_progress_print(0.0, 0)
        ret, msg = drv.bdrv_amend_options(bs, values, amend_status_cb, force)
        bar.qemu_progress_print(100.0, 0)
        if ret < 0:
            first, _, hint = (msg or os.strerror(-ret)).partition("\n")
            raise ImgError(first, tail=hint + "\n" if hint else "")
    finally:
        blk_close(blk)
    return 0
