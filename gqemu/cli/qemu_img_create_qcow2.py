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

from gqemu.cli.qemu_img_tool import ImgError, ImgOptError, option_size

QCOW_CRYPT_AES = 1

QCOW2_ONOFF = {"on": True, "off": False, "true": True, "false": False, "yes": True,
               "no": False}


def _int64(v: int) -> int:
    return v - (v >> 63 << 64)


def _set_crypt_method(filename: str, method: int) -> None:
    """An AES-encrypted image is the plain one with ``crypt_method`` set
    (qemu-img derives the key from the secret at open; nothing else is
    stored; qcow2_crypto.py reads and writes it).
    QEMU: qcow2_set_up_encryption with the "qcow" crypto format."""
    import struct
    fd = os.open(filename, os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack(">I", method), 32)
        os.fsync(fd)
    finally:
        os.close(fd)


# qcow2's encryption create options, in the order of its create_opts list
ENCRYPT_OPTS = ("encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg",
                "encrypt.cipher-mode", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg",
                "encrypt.hash-alg", "encrypt.iter-time")


def _encrypt_format(o: dict[str, str], encryption: Optional[bool]) -> Optional[str]:
    """The encryption format asked for ("aes" or None), with the errors of
    qcow2_co_create_opts (``encryption=on`` is the alias of
    ``encrypt.format=aes``) and of the QAPI visitor.  Raises Qcow2OpenError.
    QEMU: qcow2_co_create_opts, QCryptoBlockCreateOptions."""
    from gqemu.block.qcow2_header import Qcow2OpenError
    fmt = o.get("encrypt.format")
    if encryption:
        if fmt is not None:
            raise Qcow2OpenError(errno.EINVAL, "'encrypt.format' and its alias 'encryption' "
                                 "can't be used at the same time")
        fmt = "aes"
    if fmt is None:
        if any(k.startswith("encrypt.") for k in o):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'encrypt.format' is missing")
        return None
    if fmt not in ("aes", "luks"):
        raise Qcow2OpenError(errno.EINVAL, "Parameter 'format' does not accept value '%s'"
                             % fmt)
    if fmt == "luks":
        raise Qcow2OpenError(errno.ENOTSUP, "LUKS encryption (encrypt.format=luks) is not "
                             "supported by gqemu")
    for k in ENCRYPT_OPTS[2:]:
        if k in o:
            raise Qcow2OpenError(errno.EINVAL, "Parameter '%s' is unexpected" % k)
    return fmt


def _check_key_secret(key: Optional[str]) -> None:
    """QEMU: qcrypto_block_qcow_create / qcrypto_block_qcow_init."""
    from gqemu.block.crypto_secret import qcrypto_secret_lookup_as_utf8
    from gqemu.block.qcow2_header import Qcow2OpenError
    if key is None:
        raise Qcow2OpenError(errno.EINVAL, "Parameter 'encrypt.key-secret' is required "
                             "for cipher")
    password, msg = qcrypto_secret_lookup_as_utf8(key)
    if password is None:
        raise Qcow2OpenError(errno.EINVAL, msg)


def create_qcow2(filename: str, size: int, backing: Optional[str], backing_fmt: Optional[str],
                 o: dict[str, str], quiet: bool, repeat_warnings: "object",
                 path: Optional[str] = None) -> None:
    """Create ``path`` (the host file; default ``filename``, the name the
    messages use).  Raises ImgError / ImgOptError (the latter before
    anything is printed)."""
    path = filename if path is None else path
    from gqemu.block.qcow2_create import (Qcow2CreateOptions, qcow2_create_file,
                                          qcow2_validate_create_options)
    from gqemu.block.qcow2_header import Qcow2OpenError
    c = Qcow2CreateOptions(size=size, backing_file=backing, backing_fmt=backing_fmt)
    compat = encryption = hint = None
    compression = "zlib"
    for k, v in o.items():
        if k == "cluster_size":
            c.cluster_size = option_size(k, v, filename)
        elif k == "compat":
            compat = v
        elif k == "refcount_bits":
            from gqemu.cutils import qemu_strtol
            ret, c.refcount_bits = qemu_strtol(v)        # QemuOpts' number: base 0
            if ret < 0:
                raise ImgOptError("%s: Parameter 'refcount_bits' expects a number"
                                  % filename)
        elif k == "data_file":
            c.data_file = v
        elif k in ("lazy_refcounts", "extended_l2", "encryption", "data_file_raw"):
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
        elif k in ENCRYPT_OPTS:
            pass
        elif k == "extent_size_hint":     # the file protocol's option; an XFS hint
            hint = option_size(k, v, filename)
        else:
            raise ImgOptError("%s: Invalid parameter '%s'" % (filename, k))
    words = []
    if encryption is not None:
        words.append("encryption=%s" % ("on" if encryption else "off"))
    words += ["%s=%s" % (k, o[k]) for k in ENCRYPT_OPTS if k in o]
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
    if c.data_file is not None:
        words.append("data_file=%s" % c.data_file.replace(",", ",,"))
    if "data_file_raw" in o:
        words.append("data_file_raw=%s" % ("on" if c.data_file_raw else "off"))
    words.append("lazy_refcounts=%s" % ("on" if c.lazy_refcounts else "off"))
    words.append("refcount_bits=%d" % c.refcount_bits)
    if hint is not None:            # the protocol's options come last
        words.append("extent_size_hint=%d" % hint)
    if not quiet:
        sys.stdout.write("Formatting '%s', fmt=qcow2 %s\n" % (filename, " ".join(words)))
    repeat_warnings()       # type: ignore[operator]
    if hint is not None and hint > 0xFFFFFFFF:     # file-posix's create, before the file
        raise ImgError("%s: Extent size hint is too large" % filename)
    try:
        # the option visitor's checks, in the order of BlockdevCreateOptionsQcow2
        if compat is not None and compat not in ("0.10", "v2", "1.1", "v3"):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'version' does not accept value "
                                 "'%s'" % compat)
        c.version = 2 if compat in ("0.10", "v2") else 3
        encrypt = _encrypt_format(o, encryption)
        if c.preallocation not in ("off", "metadata", "falloc", "full"):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'preallocation' does not accept "
                                 "value '%s'" % c.preallocation)
        from gqemu.block.qcow2_zstd import zstd_module
        if compression not in ("zlib", "zstd") or (compression == "zstd"
                                                   and zstd_module() is None):
            raise Qcow2OpenError(errno.EINVAL, "Parameter 'compression-type' does not accept "
                                 "value '%s'" % compression)
        c.compression_type = int(compression == "zstd")
        if encrypt:
            qcow2_validate_create_options(c)     # its errors come before the key's
            _check_key_secret(o.get("encrypt.key-secret"))
        qcow2_create_file(path, c)
        if encrypt:
            _set_crypt_method(path, QCOW_CRYPT_AES)
    except Qcow2OpenError as e:
        # QEMU deletes both files (those it made, when it failed to make one)
        for name in getattr(e, "delete", (path, c.data_file)):
            try:
                if name:
                    os.unlink(name)
            except OSError:
                pass
        if e.errno == errno.EFBIG:       # bdrv_img_create's better message
            raise ImgError("%s: The image size is too large for file format 'qcow2' (try "
                           "using a larger cluster size)" % filename) from None
        raise ImgError("%s: %s" % (filename, e.msg),
                       tail=e.hint + "\n" if e.hint else "") from None
