"""The name a node graph goes by (``qemu-img info``'s ``image:``, the base
directory of relative backing names): a plain name when one can reopen the
same graph (``exact_filename``), else ``json:{...}`` with the options that
matter.

- a protocol node (file, host_device, null-co): its file name;
- blkdebug: ``blkdebug:CONFIG:IMAGE`` unless it has options besides the
  config file and the image (rules, ``align``, ...);
- a format node: its file's name, unless it has options that change what
  it shows (raw's ``offset`` / ``size``);
- quorum: always ``json:``, its explicit strong options and its children.

Key order inside ``json:{...}`` is gqemu's (driver, options, children);
QEMU prints its QDict's hash order.
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block.c (bdrv_refresh_filename, bdrv_dirname), blkdebug.c
(blkdebug_refresh_filename), raw-format.c (raw_strong_runtime_opts),
quorum.c (quorum_gather_child_options).
"""
from __future__ import annotations

import os
from typing import Any, Optional

__all__ = ["bdrv_refresh_filename", "bdrv_dirname", "bdrv_full_backing_filename"]


def _leaf(bs: Any) -> Any:
    while bs.file is not None:
        bs = bs.file.bs
    return bs


def _refresh(bs: Any) -> tuple[Optional[str], dict]:
    """(exact filename or None, full options) of the graph below ``bs``."""
    drv = bs.drv
    name = drv.format_name
    if bs.file is None and bs.children:          # quorum: no primary child
        opts = {"driver": name}
        opts.update(drv.strong_opts)
        opts["children"] = [_refresh(c.bs)[1] for c in bs.children]
        return None, opts
    if bs.file is None:
        return bs.filename, {"driver": name, "filename": bs.filename}
    child_exact, child_opts = _refresh(bs.file.bs)
    if name == "blkdebug":
        opts = {"driver": name}
        if drv.config_file:
            opts["config"] = drv.config_file
        opts.update(drv.strong_opts)
        opts["image"] = child_opts
        exact = None
        if child_exact and not drv.strong_opts:
            exact = "blkdebug:%s:%s" % (drv.config_file, child_exact)
        return exact, opts
    opts = {"driver": name}
    if name == "raw":
        if drv.offset:
            opts["offset"] = drv.offset
        if drv.has_size:
            opts["size"] = drv.size
    strong = len(opts) > 1
    opts["file"] = child_opts
    return (None if strong else child_exact), opts


def bdrv_refresh_filename(bs: Any) -> str:
    """The graph's name: exact, or ``json:`` and its options.
    QEMU: bdrv_refresh_filename."""
    exact, opts = _refresh(bs)
    if exact:
        return exact
    import json             # only for a json: name: kept off the one-shot start-up
    return "json:" + json.dumps(opts)


def bdrv_dirname(bs: Any) -> Optional[str]:
    """The folder relative names are taken from (with its '/', or empty):
    that of the node at the bottom of the primary (``file``) children; None
    when that node has no plain name (quorum's children have no common
    folder).  QEMU: bdrv_dirname (path_combine(exact_filename, ""))."""
    leaf = _leaf(bs)
    if leaf.children:
        return None         # "Cannot generate a base directory for quorum nodes"
    name = leaf.filename or ""
    i = name.rfind("/")
    return name[:i + 1] if i >= 0 else ""


def bdrv_full_backing_filename(bs: Any, backing: str) -> Optional[str]:
    """``backing`` as the image's folder makes it, or None when the image
    has no folder.  QEMU: bdrv_make_absolute_filename."""
    head = backing.split("/")[0]
    if not backing or os.path.isabs(backing) or ":" in head:     # path_has_protocol
        return backing
    folder = bdrv_dirname(bs)
    return None if folder is None else folder + backing
