"""gqemu-img create -f qcow (version 1; called by qemu_img_create.py): the
``-o`` options, the ``Formatting ...`` line, the errors QEMU reports
before and after creating the file, and the image itself: the 48-byte
header, the backing file name, the L1 table as zeroed sectors.

QEMU 7.2 leaves the file it created behind when the format layer fails
(an empty file: qcow_co_create truncates it before writing), unlike
qcow2.  An AES-encrypted image differs only in ``crypt_method`` (the key
comes from the secret at open; nothing else is stored).

QEMU: block/qcow.c qcow_co_create_opts, qcow_co_create;
block/file-posix.c raw_co_create_opts.
"""
from __future__ import annotations

import os
import struct
import sys
from typing import Callable, Optional

from gqemu.cli.qemu_img_tool import ImgError, ImgOptError, option_size

QCOW_MAGIC = 0x514649FB
QCOW_CRYPT_AES = 1
HEADER = struct.Struct(">IIQIIQBBHIQ")          # QCowHeader, 48 bytes
BOOLS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}

# qcow's create options, then file-posix's, in the order of their lists
# (qemu_opts_print prints them in this order)
_ORDER = ("backing_file", "backing_fmt", "encryption", "encrypt.format",
          "encrypt.key-secret", "nocow", "preallocation", "extent_size_hint")


def _int64(v: int) -> int:
    return v - (v >> 63 << 64)


def qcow_image(size: int, backing: Optional[str], crypt: int) -> bytes:
    """The bytes of a new qcow image of ``size`` bytes (rounded up to a
    sector).  QEMU: qcow_co_create."""
    size = -(-size // 512) * 512
    name = (backing or "").encode()
    header_size = HEADER.size + len(name)
    # a backing file: 512-byte clusters, so no unmodified sector is copied
    cluster_bits, l2_bits = (9, 12) if backing else (12, 9)
    header_size = (header_size + 7) & ~7
    shift = cluster_bits + l2_bits
    l1_size = (size + (1 << shift) - 1) >> shift
    head = HEADER.pack(QCOW_MAGIC, 1, HEADER.size if backing else 0, len(name), 0, size,
                       cluster_bits, l2_bits, 0, crypt, header_size)
    head += name
    l1 = -(-l1_size * 8 // 512) * 512
    return head + bytes(header_size - len(head) + l1)


def create_qcow(filename: str, size: int, backing: Optional[str], backing_fmt: Optional[str],
                o: dict[str, str], quiet: bool, repeat_warnings: Callable[[], None],
                path: str) -> None:
    """Create the host file ``path`` (``filename`` in messages).  Raises
    ImgError / ImgOptError (the latter before anything is printed)."""
    hint: Optional[int] = None
    for k, v in o.items():
        if k in ("encryption", "nocow"):
            if v not in BOOLS:
                raise ImgOptError("%s: Parameter '%s' expects 'on' or 'off'" % (filename, k))
        elif k == "extent_size_hint":
            hint = option_size(k, v, filename)
        elif k not in _ORDER:
            raise ImgOptError("%s: Invalid parameter '%s'" % (filename, k))
    words = ["size=%d" % _int64(size)]
    if backing:
        words.append("backing_file=%s" % backing.replace(",", ",,"))
    if backing_fmt:
        words.append("backing_fmt=%s" % backing_fmt)
    for k in _ORDER[2:]:
        if k in o:
            v = o[k]
            if k == "extent_size_hint":
                v = "%d" % (hint or 0)
            elif k in ("encryption", "nocow"):
                v = "on" if BOOLS[v] else "off"
            words.append("%s=%s" % (k, v))
    if not quiet:
        sys.stdout.write("Formatting '%s', fmt=qcow %s\n" % (filename, " ".join(words)))
    repeat_warnings()
    encrypt = o.get("encrypt.format")
    if "encryption" in o and BOOLS[o["encryption"]]:
        if encrypt is not None:          # qdict_rename_keys, before the file exists
            raise ImgError("%s: 'encrypt.format' and its alias 'encryption' can't be used "
                           "at the same time" % filename)
        encrypt = "aes"
    # file-posix's create: its option errors, then the file
    prealloc = o.get("preallocation", "off")
    if prealloc not in ("off", "falloc", "full"):
        raise ImgError("%s: invalid parameter value: %s" % (filename, prealloc))
    if hint is not None and hint > 0xFFFFFFFF:
        raise ImgError("%s: Extent size hint is too large" % filename)
    from gqemu.block.driver import BlockError
    from gqemu.block.io_truncate import file_create, raw_create_open
    try:
        os.close(raw_create_open(path))
    except BlockError as e:
        raise ImgError("%s: %s" % (filename, e.msg), tail=e.hint + "\n" if e.hint else "")
    ret, msg = file_create(path, -(-size // 512) * 512, prealloc)
    if ret < 0:
        raise ImgError("%s: %s" % (filename, msg))
    # the format layer: the option visitor, then qcow_co_create
    os.truncate(path, 0)
    if encrypt is None and any(k.startswith("encrypt.") for k in o):
        raise ImgError("%s: Parameter 'encrypt.format' is missing" % filename)
    if encrypt is not None and encrypt not in ("aes", "luks"):
        raise ImgError("%s: Parameter 'encrypt.format' does not accept value '%s'"
                       % (filename, encrypt))
    if size == 0:
        raise ImgError("%s: Image size is too small, cannot be zero length" % filename)
    if encrypt == "luks":
        raise ImgError("%s: Unsupported encryption format" % filename)
    if encrypt:
        from gqemu.block.crypto_secret import qcrypto_secret_lookup_as_utf8
        key = o.get("encrypt.key-secret")
        if key is None:
            raise ImgError("%s: Parameter 'encrypt.key-secret' is required for cipher"
                           % filename)
        password, msg = qcrypto_secret_lookup_as_utf8(key)
        if password is None:
            raise ImgError("%s: %s" % (filename, msg))
    with open(path, "r+b") as f:
        f.write(qcow_image(size, backing, QCOW_CRYPT_AES if encrypt else 0))
