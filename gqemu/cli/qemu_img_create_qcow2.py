"""gqemu-img create -f qcow2 (called by qemu_img_create.py): the ``-o``
options, the ``Formatting ...`` line, and the errors QEMU reports after it
(the option visitor's, then qcow2_co_create's), deleting the half-made file
as QEMU does.

QEMU: block.c bdrv_img_create; block/qcow2.c qcow2_co_create_opts,
qcow2_co_create.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Optional

from gqemu.cli.qemu_img_tool import SECRET_IDS, ImgError, ImgOptError, option_size

QCOW_CRYPT_AES = 1

QCOW2_ONOFF = {"on": True, "off": False, "true": True, "false": False, "yes": True,
               "no": False}


def _int64(v: int) -> int:
    return v - (v >> 63 << 64)


def _set_crypt_method(filename: str, method: int) -> None:
    """An AES-encrypted image is the plain one with ``crypt_method`` set
    (qemu-img derives the key from the secret at open; nothing else is
    stored).  gqemu itself cannot read such an image.
    QEMU: qcow2_set_up_encryption with the "qcow" crypto format."""
    import struct
    fd = os.open(filename, os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack(">I", method), 32)
        os.fsync(fd)
    finally:
        os.close(fd)


def create_qcow2(filename: str, size: int, backing: Optional[str], backing_fmt: Optional[str],
                 o: dict[str, str], quiet: bool, repeat_warnings: "object",
                 path: Optional[str] = None) -> None:
    """Create ``path`` (the host file; default ``filename``, the name the
    messages use).  Raises ImgError / ImgOptError (the latter before
    anything is printed)."""
    path = filename if path is None else path
    from gqemu.block.qcow2_create import Qcow2CreateOptions, qcow2_create_file
    from gqemu.block.qcow2_header import Qcow2OpenError
    c = Qcow2CreateOptions(size=size, backing_file=backing, backing_fmt=backing_fmt)
    compat = encryption = None
    compression = "zlib"
    for k, v in o.items():
        if k == "cluster_size":
            c.cluster_size = option_size(k, v, filename)
        elif k == "compat":
            compat = v
        elif k == "refcount_bits":
            try:
                c.refcount_bits = int(v)
            except ValueError:
                raise ImgOptError("%s: Parameter 'refcount_bits' expects a number"
                                  % filename) from None
        elif k in ("lazy_refcounts", "extended_l2", "encryption"):
            if v not in QCOW2_ONOFF:
                raise ImgOptError("%s: Parameter '%s' expects 'on' or 'off'" % (filename, k))
            if k == "encryption":
                encryption = QCOW2_ONOFF[v]
            else:
                setattr(c, k, QCOW2_ONOFF[v])
        elif k == "preallocation":
            c.preallocation = v
        elif k == "compression_type":
            compression = v
        elif k == "encrypt.key-secret":
            pass
        else:
            raise ImgOptError("%s: Invalid parameter '%s'" % (filename, k))
    words = []
    if encryption is not None:
        words.append("encryption=%s" % ("on" if encryption else "off"))
    if "encrypt.key-secret" in o:
        words.append("encrypt.key-secret=%s" % o["encrypt.key-secret"])
    words += ["cluster_size=%d" % _int64(c.cluster_size),
              "extended_l2=%s" % ("on" if c.extended_l2 else "off")]
    if "preallocation" in o:
        words.append("preallocation=%s" % c.preallocation)
    words += ["compression_type=%s" % compression, "size=%d" % _int64(size)]
    if compat is not None:
        words.append("compat=%s" % compat)
    if backing:
        words.append("backing_file=%s" % backing.replace(",", ",,"))
    if backing_fmt:
        words.append("backing_fmt=%s" % backing_fmt)
    words.append("lazy_refcounts=%s" % ("on" if c.lazy_refcounts else "off"))
    words.append("refcount_bits=%d" % c.refcount_bits)
    if not quiet:
        sys.stdout.write("Formatting '%s', fmt=qcow2 %s\n" % (filename, " ".join(words)))
    repeat_warnings()       # type: ignore[operator]
    try:
        # the option visitor's checks, in the order of BlockdevCreateOptionsQcow2
        if compat is not None and compat not in ("0.10", "v2", "1.1", "v3"):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'version' does not accept value "
                                 "'%s'" % compat)
        c.version = 2 if compat in ("0.10", "v2") else 3
        if encryption:      # the legacy AES format: the header only names the method
            key = o.get("encrypt.key-secret")
            if key is None:
                raise Qcow2OpenError(errno.EINVAL, "Parameter 'encrypt.key-secret' is "
                                     "required for cipher")
            if key not in SECRET_IDS:
                raise Qcow2OpenError(errno.EINVAL, "No secret with id '%s'" % key)
        if c.preallocation not in ("off", "metadata", "falloc", "full"):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'preallocation' does not accept "
                                 "value '%s'" % c.preallocation)
        if compression not in ("zlib", "zstd"):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'compression-type' does not accept "
                                 "value '%s'" % compression)
        from gqemu.block.qcow2_compress import zstd_module
        if compression == "zstd" and zstd_module() is None:     # QEMU without CONFIG_ZSTD
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'compression-type' does not accept "
                                 "value 'zstd'")
        c.compression_type = compression
        qcow2_create_file(path, c)
        if encryption:
            _set_crypt_method(path, QCOW_CRYPT_AES)
    except Qcow2OpenError as e:
        try:
            os.unlink(path)
        except OSError:
            pass
        if e.errno == errno.EFBIG:       # bdrv_img_create's better message
            raise ImgError("%s: The image size is too large for file format 'qcow2' (try "
                           "using a larger cluster size)" % filename) from None
        raise ImgError("%s: %s" % (filename, e.msg)) from None
