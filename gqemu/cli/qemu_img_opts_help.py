"""``-o help`` / ``-o ?`` of ``qemu-img create`` and ``convert``: the
creation options of the format, followed (when a file name is given) by
those of the protocol the name selects, each once, sorted, in QemuOpts'
help layout.  The option texts are QEMU 7.2's (its drivers' create_opts);
gqemu accepts fewer of them at creation, and says so there.

QEMU: qemu-img.c print_block_option_help, util/qemu-option.c
(qemu_opts_append, qemu_opts_print_help).
"""
from __future__ import annotations

import sys
from typing import Optional

from gqemu.cli.qemu_img_tool import ImgError

_SIZE = ("size", "size", "Virtual disk size")
_HOST_PREALLOC = ("preallocation", "str", "Preallocation mode (allowed values: off)")

# driver -> its create_opts (name, QemuOpts type, help); a driver listed by
# gqemu but absent here does not support image creation
CREATE_OPTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "raw": (_SIZE,),
    "qcow2": (
        _SIZE,
        ("compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"),
        ("backing_file", "str", "File name of a base image"),
        ("backing_fmt", "str", "Image format of the base image"),
        ("data_file", "str", "File name of an external data file"),
        ("data_file_raw", "bool", "The external data file must stay valid as a raw image"),
        ("encryption", "bool", "Encrypt the image with format 'aes'. (Deprecated in favor "
                               "of encrypt.format=aes)"),
        ("encrypt.format", "str", "Encrypt the image, format choices: 'aes', 'luks'"),
        ("encrypt.key-secret", "str", "ID of secret providing qcow AES key or LUKS "
                                      "passphrase"),
        ("encrypt.cipher-alg", "str", "Name of encryption cipher algorithm"),
        ("encrypt.cipher-mode", "str", "Name of encryption cipher mode"),
        ("encrypt.ivgen-alg", "str", "Name of IV generator algorithm"),
        ("encrypt.ivgen-hash-alg", "str", "Name of IV generator hash algorithm"),
        ("encrypt.hash-alg", "str", "Name of encryption hash algorithm"),
        ("encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"),
        ("cluster_size", "size", "qcow2 cluster size"),
        ("preallocation", "str", "Preallocation mode (allowed values: off, metadata, "
                                 "falloc, full)"),
        ("lazy_refcounts", "bool", "Postpone refcount updates"),
        ("refcount_bits", "num", "Width of a reference count entry in bits"),
        ("compression_type", "str", "Compression method used for image cluster "
                                    "compression"),
        ("extended_l2", "bool", "Extended L2 tables"),
    ),
    "file": (
        _SIZE,
        ("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
        ("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
        ("extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"),
    ),
    "host_device": (_SIZE, _HOST_PREALLOC),
    "host_cdrom": (_SIZE, _HOST_PREALLOC),
}

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
    if fmt not in bdrv_drivers:
        raise ImgError("Unknown file format '%s'" % fmt)
    if fmt not in CREATE_OPTS:
        raise ImgError("Format driver '%s' does not support image creation" % fmt)
    descs = list(CREATE_OPTS[fmt])
    if filename is not None:
        from gqemu.block.driver import bdrv_find_protocol
        proto = bdrv_find_protocol(filename)
        if proto is None:
            raise ImgError("Unknown protocol '%s'" % filename.split(":")[0])
        pname = proto.format_name
        if pname not in CREATE_OPTS:
            raise ImgError("Protocol driver '%s' does not support image creation" % pname)
        have = {d[0] for d in descs}
        descs += [d for d in CREATE_OPTS[pname] if d[0] not in have]
        sys.stdout.write("Supported options:\n")
    else:
        sys.stdout.write("Supported %s options:\n" % fmt)
    sys.stdout.write(qemu_opts_print_help(descs))
    if filename is None:
        sys.stdout.write("\nThe protocol level may support further options.\n"
                         "Specify the target filename to include those options.\n")
    return 0
