"""qcow2 legacy AES encryption (crypt_method 1): the ``encrypt.*`` open
options, setting up the cipher from ``encrypt.key-secret`` (not for a
BDRV_O_NO_IO open, as qemu-img info's), and the data-path helpers: reading
a normal cluster through a bounce buffer that is decrypted, encrypting the
data of a write and the copy-on-write regions.  The IV of every 512-byte
sector is its guest sector number (legacy AES does not use the physical
offset, LUKS would).  LUKS (crypt_method 2) stays refused, after QEMU's checks of its CRYPTO
header extension.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2.c (qcow2_update_options_prep's encryption part,
qcow2_do_open's crypto set-up, qcow2_co_preadv_encrypted,
qcow2_co_pwritev_task's crypt_buf), block/qcow2-cluster.c (perform_cow),
block/qcow2-threads.c (qcow2_co_encdec).
"""
from __future__ import annotations

import errno
import struct
from typing import Any, Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.block_int import BDRV_O_NO_IO
from gqemu.block.io import bdrv_co_preadv
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_from_buf, qemu_iovec_to_buf
from gqemu.block.qcow2_header import Qcow2OpenError
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2State

QCOW_CRYPT_NONE = 0
QCOW_CRYPT_AES = 1
QCOW_CRYPT_LUKS = 2


def qcow2_crypto_check_method(s: Qcow2State, crypt_method: int) -> None:
    """The header's crypt_method.  QEMU: qcow2_do_open."""
    if crypt_method > QCOW_CRYPT_LUKS:          # printed as QEMU's int
        raise Qcow2OpenError(errno.EINVAL, "Unsupported encryption method %d"
                             % (crypt_method - (crypt_method >> 31 << 32)))
    s.crypt_method_header = crypt_method     # LUKS: refused in qcow2_crypto_luks_open


LUKS_MAGIC = b"LUKS\xba\xbe"


def qcow2_crypto_luks_open(s: Qcow2State, crypto_ext: Optional[bytes], flags: int,
                           read_file: Any) -> None:
    """The CRYPTO header extension and the LUKS method, checked in QEMU's
    order (qcow2_read_extensions, then qcow2_do_open's "Missing CRYPTO
    header"); gqemu opens no LUKS volume, so a well-formed one ends with
    the key-secret error QEMU gives when none is set.  ``read_file(offset,
    n)`` reads the image file.  Raises Qcow2OpenError."""
    luks = s.crypt_method_header == QCOW_CRYPT_LUKS
    if crypto_ext is not None:
        if not luks:
            raise Qcow2OpenError(errno.EINVAL, "CRYPTO header extension only expected "
                                 "with LUKS encryption method")
        if len(crypto_ext) != 16:
            raise Qcow2OpenError(errno.EINVAL, "CRYPTO header extension size %d, but "
                                 "expected size 16" % len(crypto_ext))
        offset = struct.unpack(">QQ", crypto_ext)[0]
        if offset % s.cluster_size:
            raise Qcow2OpenError(errno.EINVAL, "Encryption header offset '%d' is not a "
                                 "multiple of cluster size '%d'" % (offset, s.cluster_size))
        if flags & BDRV_O_NO_IO and read_file(offset, 6) != LUKS_MAGIC:
            raise Qcow2OpenError(errno.EINVAL, "Volume is not in LUKS format")
    elif luks and not flags & BDRV_O_NO_IO:
        raise Qcow2OpenError(errno.EINVAL, "Missing CRYPTO header for crypt method %d"
                             % QCOW_CRYPT_LUKS)
    if luks:
        raise Qcow2OpenError(errno.EINVAL, "Parameter 'encrypt.key-secret' is required "
                             "for cipher")


def qcow2_crypto_update_options(s: Qcow2State, options: dict) -> None:
    """Take the ``encrypt.*`` options out of ``options`` and check
    ``encrypt.format`` against the header.  Raises Qcow2OpenError.
    QEMU: qcow2_update_options_prep (encryption)."""
    enc = {k[len("encrypt."):]: options.pop(k)
           for k in [k for k in options if k.startswith("encrypt.")]}
    fmt = enc.get("format")
    if s.crypt_method_header == QCOW_CRYPT_NONE:
        if fmt is not None:
            raise Qcow2OpenError(errno.EINVAL, "No encryption in image header, but options "
                                 "specified format '%s'" % fmt)
        return
    if fmt is not None and fmt != "aes":
        raise Qcow2OpenError(errno.EINVAL, "Header reported 'aes' encryption format but "
                             "options specify '%s'" % fmt)
    s.crypto_key_secret = enc.get("key-secret")


def qcow2_crypto_open(s: Qcow2State, flags: int) -> None:
    """Set up the cipher (an image opened without I/O needs no key).
    Raises Qcow2OpenError.  QEMU: qcow2_do_open -> qcrypto_block_open ->
    qcrypto_block_qcow_open / _init."""
    if s.crypt_method_header != QCOW_CRYPT_AES or flags & BDRV_O_NO_IO:
        return
    if s.crypto_key_secret is None:
        raise Qcow2OpenError(errno.EINVAL, "Parameter 'encrypt.key-secret' is required "
                             "for cipher")
    from gqemu.block.crypto_secret import qcrypto_secret_lookup_as_utf8
    password, msg = qcrypto_secret_lookup_as_utf8(s.crypto_key_secret)
    if password is None:
        raise Qcow2OpenError(errno.EINVAL, msg)
    from gqemu.block.crypto_aes import QCryptoBlockQcow
    s.crypto = QCryptoBlockQcow(password)


@coroutine_fn
def qcow2_co_preadv_encrypted(bs: Qcow2BDS, host: int, offset: int, cur: int,
                              qiov: QEMUIOVector, done: int) -> int:
    """Read ``cur`` bytes of a normal cluster into a bounce buffer and
    decrypt them there.  Context: coroutine.  Returns 0 or -errno.
    QEMU: qcow2_co_preadv_encrypted."""
    s = bs.opaque
    buf = bytearray(cur)
    ret = bdrv_co_preadv(bs.file, host, cur, QEMUIOVector([buf]), 0)
    if ret < 0:
        return ret
    s.crypto.decrypt(offset, buf)
    qemu_iovec_from_buf(qiov, done, buf, cur)
    return 0


def qcow2_encrypt_qiov(s: Qcow2State, offset: int, nbytes: int,
                       qiov: QEMUIOVector) -> QEMUIOVector:
    """The guest data of a write at ``offset``, encrypted in a new buffer.
    QEMU: qcow2_co_pwritev_task (crypt_buf, qcow2_co_encrypt)."""
    buf = bytearray(nbytes)
    qemu_iovec_to_buf(qiov, 0, buf, nbytes)
    s.crypto.encrypt(offset, buf)
    return QEMUIOVector([buf])
