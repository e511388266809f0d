"""``-drive`` options: split a spec into what the BlockBackend keeps (cache
mode, read-only, error policy, sharing) and what goes to the driver graph.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: blockdev.c (blockdev_init, parse_block_error_action),
block.c (bdrv_parse_cache_mode, bdrv_parse_discard_flags).
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from gqemu.block.driver import (BDRV_O_COPY_ON_READ, BDRV_O_IO_URING, BDRV_O_NATIVE_AIO,
                                BDRV_O_NOCACHE, BDRV_O_NO_FLUSH, BDRV_O_NOWAIT, BDRV_O_RDWR, BDRV_O_UNMAP, BlockError,
                                qemu_opt_bool)

__all__ = ["DriveOptions", "parse_drive_options", "parse_drive_spec",
           "BLOCKDEV_ON_ERROR_REPORT", "BLOCKDEV_ON_ERROR_IGNORE",
           "BLOCKDEV_ON_ERROR_ENOSPC", "BLOCKDEV_ON_ERROR_STOP",
           "BLOCKDEV_ON_ERROR_AUTO"]

# QAPI BlockdevOnError
BLOCKDEV_ON_ERROR_REPORT = 0
BLOCKDEV_ON_ERROR_IGNORE = 1
BLOCKDEV_ON_ERROR_ENOSPC = 2
BLOCKDEV_ON_ERROR_STOP = 3
BLOCKDEV_ON_ERROR_AUTO = 4

# Keys that belong to the device/machine, not to the block layer.
DEVICE_KEYS = ("if", "index", "bus", "unit", "media", "id", "serial", "model",
               "cyls", "heads", "secs", "trans", "addr", "boot")


class DriveOptions:
    """What ``blk_new_open`` needs besides the graph's own options."""

    def __init__(self) -> None:
        self.flags = BDRV_O_RDWR
        self.enable_write_cache = True
        self.on_read_error = BLOCKDEV_ON_ERROR_REPORT
        self.on_write_error = BLOCKDEV_ON_ERROR_ENOSPC
        self.share_rw: Optional[bool] = None     # None: share all (tools)
        self.detect_zeroes = "off"
        self.device: dict[str, Any] = {}
        self.filename: Optional[str] = None
        self.bdrv_options: dict[str, Any] = {}


def parse_block_error_action(buf: str, is_read: bool) -> int:
    """QEMU: parse_block_error_action.  Raises BlockError."""
    if buf == "ignore":
        return BLOCKDEV_ON_ERROR_IGNORE
    if not is_read and buf == "enospc":
        return BLOCKDEV_ON_ERROR_ENOSPC
    if buf == "stop":
        return BLOCKDEV_ON_ERROR_STOP
    if buf == "report":
        return BLOCKDEV_ON_ERROR_REPORT
    raise BlockError(errno.EINVAL, "'%s' invalid %s error action"
                     % (buf, "read" if is_read else "write"))


# cache mode -> (flags, writethrough)
_CACHE_MODE_FLAGS = {"off": (BDRV_O_NOCACHE, False), "none": (BDRV_O_NOCACHE, False),
                     "directsync": (BDRV_O_NOCACHE, True), "writeback": (0, False),
                     "unsafe": (BDRV_O_NO_FLUSH, False), "writethrough": (0, True)}
CACHE_MODES = tuple(_CACHE_MODE_FLAGS)


def bdrv_parse_cache_mode(mode: str) -> tuple[int, bool]:
    """(flags, writethrough).  QEMU: bdrv_parse_cache_mode.  Raises BlockError."""
    if mode not in _CACHE_MODE_FLAGS:
        raise BlockError(errno.EINVAL, "invalid cache option")
    return _CACHE_MODE_FLAGS[mode]


def parse_drive_options(options: Optional[dict], flags: int = 0) -> DriveOptions:
    """Split ``-drive``-style keys.  Raises BlockError with QEMU's messages."""
    opts = dict(options or {})
    d = DriveOptions()
    d.flags |= flags
    d.filename = opts.pop("file", None) if isinstance(opts.get("file"), str) else None
    for key in DEVICE_KEYS:
        if key in opts:
            d.device[key] = opts.pop(key)
    cache = opts.pop("cache", None)
    if cache is not None:
        cflags, writethrough = bdrv_parse_cache_mode(str(cache))
        d.flags |= cflags
        d.enable_write_cache = not writethrough
    if qemu_opt_bool(opts, "cache.direct", bool(d.flags & BDRV_O_NOCACHE)):
        d.flags |= BDRV_O_NOCACHE
    else:
        d.flags &= ~BDRV_O_NOCACHE
    if qemu_opt_bool(opts, "cache.no-flush", bool(d.flags & BDRV_O_NO_FLUSH)):
        d.flags |= BDRV_O_NO_FLUSH
    else:
        d.flags &= ~BDRV_O_NO_FLUSH
    d.enable_write_cache = qemu_opt_bool(opts, "cache.writeback", d.enable_write_cache)
    ro = qemu_opt_bool(opts, "read-only", False)
    ro = qemu_opt_bool(opts, "readonly", ro)
    if ro:
        d.flags &= ~BDRV_O_RDWR
    rerror = opts.pop("rerror", None)
    if rerror is not None:
        d.on_read_error = parse_block_error_action(str(rerror), True)
    werror = opts.pop("werror", None)
    if werror is not None:
        d.on_write_error = parse_block_error_action(str(werror), False)
    discard = opts.pop("discard", None)
    if discard is not None:
        if discard in ("unmap", "on"):
            d.flags |= BDRV_O_UNMAP
        elif discard in ("ignore", "off"):
            d.flags &= ~BDRV_O_UNMAP
        else:
            raise BlockError(errno.EINVAL, "Invalid discard option")
    dz = opts.pop("detect-zeroes", None)
    if dz is not None:
        if dz not in ("off", "on", "unmap"):
            raise BlockError(errno.EINVAL, "invalid parameter value: %s" % dz)
        if dz == "unmap" and not d.flags & BDRV_O_UNMAP:
            raise BlockError(errno.EINVAL, "setting detect-zeroes to unmap is not "
                             "allowed without setting discard operation to unmap")
        d.detect_zeroes = str(dz)
    if qemu_opt_bool(opts, "copy-on-read", False):
        d.flags |= BDRV_O_COPY_ON_READ  # (on a read-only node: refused by bdrv_open)
    aio = opts.pop("aio", None)
    if aio is not None:                 # QEMU: bdrv_parse_aio (+ gqemu's nowait)
        if aio == "native":
            d.flags |= BDRV_O_NATIVE_AIO
        elif aio == "io_uring":
            d.flags |= BDRV_O_IO_URING
        elif aio == "nowait":
            d.flags |= BDRV_O_NOWAIT
        elif aio != "threads":
            raise BlockError(errno.EINVAL, "invalid aio option")
    if "share-rw" in opts:
        d.share_rw = qemu_opt_bool(opts, "share-rw", False)
    elif d.device.get("if", "none") != "none":
        d.share_rw = False          # a guest device: others may only read
    d.bdrv_options = opts
    return d


def qemu_opts_split(spec: str) -> list[str]:
    """Split a QemuOpts string at single commas; ``,,`` is a literal comma.
    QEMU: get_opt_value / opts_do_parse."""
    items: list[str] = []
    cur: list[str] = []
    i = 0
    n = len(spec)
    while i < n:
        c = spec[i]
        if c == ",":
            if i + 1 < n and spec[i + 1] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    items.append("".join(cur))
    return items


def parse_drive_spec(spec: str) -> dict:
    """``key=value,key=value`` (``,,`` escapes a comma) into a dict.  A first
    item without ``=`` is the file name.  Raises BlockError."""
    items = qemu_opts_split(spec)
    out: dict = {}
    for n, item in enumerate(items):
        if not item:
            continue
        if "=" not in item:
            if n == 0:
                out["file"] = item
                continue
            raise BlockError(errno.EINVAL, "Invalid parameter '%s'" % item)
        k, v = item.split("=", 1)
        out[k] = v
    return out
