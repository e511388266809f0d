"""``-o help`` / ``-o ?`` of ``qemu-img create`` and ``convert``: the
creation options of the format, followed (when a file name is given) by
those of the protocol the name selects, each once, sorted, in QemuOpts'
help layout.  The option texts are QEMU 7.2's, each driver's
``create_opts``; gqemu accepts fewer of them at creation, and says so there.

QEMU: qemu-img.c print_block_option_help, util/qemu-option.c
(qemu_opts_append, qemu_opts_print_help).
"""
from __future__ import annotations

import sys
from typing import Optional

from gqemu.cli.qemu_img_tool import ImgError

_TYPE_NAMES = {"str": "str", "bool": "bool (on/off)", "num": "num", "size": "size"}


def qemu_opts_print_help(descs: list[tuple[str, str, str]]) -> str:
    """QEMU: qemu_opts_print_help (no caption)."""
    lines = []
    for name, typ, text in descs:
        line = "  %s=<%s>" % (name, _TYPE_NAMES[typ])
        lines.append("%s - %s" % (line.ljust(24), text))
    return "".join(line + "\n" for line in sorted(lines))


def print_block_option_help(filename: Optional[str], fmt: str) -> int:
    """Print the options, or raise ImgError.  QEMU: print_block_option_help."""
    from gqemu.block import bdrv_drivers
    drv = bdrv_drivers.get(fmt)
    if drv is None:
        raise ImgError("Unknown file format '%s'" % fmt)
    if not drv.create_opts:
        raise ImgError("Format driver '%s' does not support image creation" % fmt)
    descs = list(drv.create_opts)
    if filename is not None:
        from gqemu.block.driver import bdrv_find_protocol
        proto = bdrv_find_protocol(filename)
        if proto is None:
            raise ImgError("Unknown protocol '%s'" % filename.split(":")[0])
        if not proto.create_opts:
            raise ImgError("Protocol driver '%s' does not support image creation"
                           % proto.format_name)
        have = {d[0] for d in descs}
        descs += [d for d in proto.create_opts if d[0] not in have]
        sys.stdout.write("Supported options:\n")
    else:
        sys.stdout.write("Supported %s options:\n" % fmt)
    sys.stdout.write(qemu_opts_print_help(descs))
    if filename is None:
        sys.stdout.write("\nThe protocol level may support further options.\n"
                         "Specify the target filename to include those options.\n")
    return 0
