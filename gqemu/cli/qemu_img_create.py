"""gqemu-img create -f qcow2: the ``-o`` options, the ``Formatting ...``
line, and the errors QEMU reports after it (the option visitor's, then
qcow2_co_create's), deleting the half-made file as QEMU does.

QEMU: block.c bdrv_img_create; block/qcow2.c qcow2_co_create_opts,
qcow2_co_create.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Optional

from gqemu.cli.qemu_img_tool import ImgError, ImgOptError, option_size

QCOW2_ONOFF = {"on": True, "off": False, "true": True, "false": False, "yes": True,
               "no": False}


def _int64(v: int) -> int:
    return v - (v >> 63 << 64)


def create_qcow2(filename: str, size: int, backing: Optional[str], backing_fmt: Optional[str],
                 o: dict[str, str], quiet: bool, repeat_warnings: "object") -> None:
    """Raises ImgError / ImgOptError (the latter before anything is printed)."""
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
        else:
            raise ImgOptError("%s: Invalid parameter '%s'" % (filename, k))
    words = []
    if encryption is not None:
        words.append("encryption=%s" % ("on" if encryption else "off"))
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
        if encryption:
            raise Qcow2OpenError(errno.ENOTSUP, "Parameter 'encrypt.key-secret' is required "
                                 "for cipher" if "encrypt.key-secret" not in o else
                                 "Encrypted qcow2 images are not supported by gqemu")
        if c.preallocation not in ("off", "metadata", "falloc", "full"):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'preallocation' does not accept "
                                 "value '%s'" % c.preallocation)
        if compression not in ("zlib", "zstd"):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'compression-type' does not accept "
                                 "value '%s'" % compression)
        if compression != "zlib":
            raise Qcow2OpenError(errno.ENOTSUP, "Compression type '%s' is not supported by "
                                 "gqemu" % compression)
        qcow2_create_file(filename, c)
    except Qcow2OpenError as e:
        try:
            os.unlink(filename)
        except OSError:
            pass
        if e.errno == errno.EFBIG:       # bdrv_img_create's better message
            raise ImgError("%s: The image size is too large for file format 'qcow2' (try "
                           "using a larger cluster size)" % filename) from None
        raise ImgError("%s: %s" % (filename, e.msg)) from None
