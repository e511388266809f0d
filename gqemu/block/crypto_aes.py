"""The legacy qcow/qcow2 AES encryption (crypt_method 1): AES-128-CBC over
512-byte sectors, each sector's IV the "plain64" sector number (64-bit
little-endian, zero-padded to 16 bytes), the key the first 16 bytes of the
secret's UTF-8 text, zero-padded.  Broken by design (QEMU keeps it only to
get data out of old images); gqemu models it for the same reason.

Two backends, the same bytes: the optional ``cryptography`` package
(``pip install gqemu[aes]``, fast) and a pure-Python AES (FIPS-197, with
the usual 32-bit T-tables; about a hundred times slower, fine for small
images and for tests).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: crypto/block-qcow.c (qcrypto_block_qcow_init, _encrypt, _decrypt),
crypto/ivgen-plain64.c, crypto/block.c (qcrypto_block_cipher_*_helper).
"""
from __future__ import annotations

import struct
from typing import Any, Optional

QCRYPTO_BLOCK_QCOW_SECTOR_SIZE = 512
_M64 = (1 << 64) - 1
_BACKEND: Any = None          # the cryptography module's pieces, False if missing

# ------------------------------------------------------ pure-Python AES-128

_T: Optional[tuple] = None    # (S, Si, Te0..3, Td0..3), built on first use


def _tables() -> tuple:
    global _T
    if _T is None:
        exp, log = [0] * 256, [0] * 256
        x = 1
        for i in range(255):                 # powers of the generator 3
            exp[i], log[x] = x, i
            x ^= ((x << 1) ^ (0x11B if x & 0x80 else 0)) & 0xFF
        sbox, inv = [0] * 256, [0] * 256
        for a in range(256):
            b = exp[(255 - log[a]) % 255] if a else 0
            s = b
            for r in range(1, 5):
                s ^= ((b << r) | (b >> (8 - r))) & 0xFF
            sbox[a] = s ^ 0x63
            inv[sbox[a]] = a

        def mul(a: int, b: int) -> int:
            return exp[(log[a] + log[b]) % 255] if a and b else 0

        def rot(t: list[int], n: int) -> list[int]:
            return [((w >> n) | (w << (32 - n))) & 0xFFFFFFFF for w in t]
        te0 = [(mul(s, 2) << 24) | (s << 16) | (s << 8) | mul(s, 3) for s in sbox]
        td0 = [(mul(s, 14) << 24) | (mul(s, 9) << 16) | (mul(s, 13) << 8) | mul(s, 11)
               for s in inv]
        _T = (sbox, inv, te0, rot(te0, 8), rot(te0, 16), rot(te0, 24),
              td0, rot(td0, 8), rot(td0, 16), rot(td0, 24))
    return _T


class _PyAES128:
    """AES-128 on one 16-byte block as four big-endian column words."""

    def __init__(self, key: bytes) -> None:
        sbox, _, _, _, _, _, td0, td1, td2, td3 = _tables()
        w = list(struct.unpack(">4I", key))
        rcon = 1
        for i in range(4, 44):
            t = w[i - 1]
            if i % 4 == 0:
                t = ((sbox[(t >> 16) & 255] << 24) | (sbox[(t >> 8) & 255] << 16)
                     | (sbox[t & 255] << 8) | sbox[t >> 24]) ^ (rcon << 24)
                rcon = ((rcon << 1) ^ (0x11B if rcon & 0x80 else 0)) & 0xFF
            w.append(w[i - 4] ^ t)
        self.ek = w
        dk = list(w[40:44])                     # the equivalent inverse cipher
        for r in range(9, 0, -1):
            dk += [td0[sbox[k >> 24]] ^ td1[sbox[(k >> 16) & 255]]
                   ^ td2[sbox[(k >> 8) & 255]] ^ td3[sbox[k & 255]]
                   for k in w[4 * r:4 * r + 4]]
        self.dk = dk + w[0:4]

    def encrypt(self, s0: int, s1: int, s2: int, s3: int) -> tuple[int, int, int, int]:
        sbox, _, t0, t1, t2, t3 = _tables()[:6]
        k = self.ek
        s0, s1, s2, s3 = s0 ^ k[0], s1 ^ k[1], s2 ^ k[2], s3 ^ k[3]
        for r in range(4, 40, 4):
            s0, s1, s2, s3 = (
                t0[s0 >> 24] ^ t1[(s1 >> 16) & 255] ^ t2[(s2 >> 8) & 255] ^ t3[s3 & 255] ^ k[r],
                t0[s1 >> 24] ^ t1[(s2 >> 16) & 255] ^ t2[(s3 >> 8) & 255] ^ t3[s0 & 255] ^ k[r + 1],
                t0[s2 >> 24] ^ t1[(s3 >> 16) & 255] ^ t2[(s0 >> 8) & 255] ^ t3[s1 & 255] ^ k[r + 2],
                t0[s3 >> 24] ^ t1[(s0 >> 16) & 255] ^ t2[(s1 >> 8) & 255] ^ t3[s2 & 255] ^ k[r + 3])
        S = sbox

        def last(a: int, b: int, c: int, d: int, rk: int) -> int:
            return ((S[a >> 24] << 24) | (S[(b >> 16) & 255] << 16)
                    | (S[(c >> 8) & 255] << 8) | S[d & 255]) ^ rk
        return (last(s0, s1, s2, s3, k[40]), last(s1, s2, s3, s0, k[41]),
                last(s2, s3, s0, s1, k[42]), last(s3, s0, s1, s2, k[43]))

    def decrypt(self, s0: int, s1: int, s2: int, s3: int) -> tuple[int, int, int, int]:
        T = _tables()
        Si, t0, t1, t2, t3 = T[1], T[6], T[7], T[8], T[9]
        k = self.dk
        s0, s1, s2, s3 = s0 ^ k[0], s1 ^ k[1], s2 ^ k[2], s3 ^ k[3]
        for r in range(4, 40, 4):
            s0, s1, s2, s3 = (
                t0[s0 >> 24] ^ t1[(s3 >> 16) & 255] ^ t2[(s2 >> 8) & 255] ^ t3[s1 & 255] ^ k[r],
                t0[s1 >> 24] ^ t1[(s0 >> 16) & 255] ^ t2[(s3 >> 8) & 255] ^ t3[s2 & 255] ^ k[r + 1],
                t0[s2 >> 24] ^ t1[(s1 >> 16) & 255] ^ t2[(s0 >> 8) & 255] ^ t3[s3 & 255] ^ k[r + 2],
                t0[s3 >> 24] ^ t1[(s2 >> 16) & 255] ^ t2[(s1 >> 8) & 255] ^ t3[s0 & 255] ^ k[r + 3])

        def last(a: int, b: int, c: int, d: int, rk: int) -> int:
            return ((Si[a >> 24] << 24) | (Si[(b >> 16) & 255] << 16)
                    | (Si[(c >> 8) & 255] << 8) | Si[d & 255]) ^ rk
        return (last(s0, s3, s2, s1, k[40]), last(s1, s0, s3, s2, k[41]),
                last(s2, s1, s0, s3, k[42]), last(s3, s2, s1, s0, k[43]))


def _iv(sector: int) -> bytes:
    """QEMU: qcrypto_ivgen_plain64_calculate."""
    return struct.pack("<Q", sector & _M64) + bytes(8)


def _backend() -> Any:
    global _BACKEND
    if _BACKEND is None:
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        except ImportError:
            _BACKEND = False
        else:
            _BACKEND = (Cipher, algorithms, modes)
    return _BACKEND or None


class QCryptoBlockQcow:
    """One image's cipher.  ``encrypt``/``decrypt`` work in place on a
    bytearray whose first byte is the guest byte ``offset`` (both
    multiples of 512).  ``pure`` forces the pure-Python AES."""

    sector_size = QCRYPTO_BLOCK_QCOW_SECTOR_SIZE

    def __init__(self, password: str, pure: bool = False) -> None:
        raw = password.encode("utf-8")
        raw = raw[:raw.index(b"\0")] if b"\0" in raw else raw     # strlen()
        self.key = raw[:16].ljust(16, b"\0")
        b = None if pure else _backend()
        if b is not None:
            self._alg = b[1].AES(self.key)
            self._c = b
            self._py = None
        else:
            self._py = _PyAES128(self.key)

    def encrypt(self, offset: int, buf: bytearray) -> None:
        """QEMU: qcrypto_block_qcow_encrypt."""
        sector = offset // 512
        if self._py is not None:
            return self._py_cbc(sector, buf, True)
        Cipher, _, modes = self._c
        mv = memoryview(buf)
        for i in range(0, len(buf), 512):
            enc = Cipher(self._alg, modes.CBC(_iv(sector + (i >> 9)))).encryptor()
            mv[i:i + 512] = enc.update(mv[i:i + 512])

    def decrypt(self, offset: int, buf: bytearray) -> None:
        """QEMU: qcrypto_block_qcow_decrypt.  With ``cryptography``: one
        ECB pass, then each block XORed with the block before it (the
        sector's IV for its first block), in chunks of 1 MiB."""
        sector = offset // 512
        if self._py is not None:
            return self._py_cbc(sector, buf, False)
        Cipher, _, modes = self._c
        ecb = Cipher(self._alg, modes.ECB()).decryptor()
        mv = memoryview(buf)
        for start in range(0, len(buf), 1 << 20):
            chunk = mv[start:start + (1 << 20)]
            n = len(chunk)
            d = ecb.update(chunk)
            first = sector + (start >> 9)
            prev = b"".join([p for j in range(0, n, 512)
                             for p in (_iv(first + (j >> 9)), chunk[j:j + 496])])
            mv[start:start + n] = (int.from_bytes(d, "little")
                                   ^ int.from_bytes(prev, "little")).to_bytes(n, "little")

    def _py_cbc(self, sector: int, buf: bytearray, enc: bool) -> None:
        aes = self._py
        assert aes is not None
        for i in range(0, len(buf), 512):
            p0, p1, p2, p3 = struct.unpack(">4I", _iv(sector + (i >> 9)))
            for j in range(i, i + 512, 16):
                b0, b1, b2, b3 = struct.unpack_from(">4I", buf, j)
                if enc:
                    p0, p1, p2, p3 = aes.encrypt(b0 ^ p0, b1 ^ p1, b2 ^ p2, b3 ^ p3)
                    struct.pack_into(">4I", buf, j, p0, p1, p2, p3)
                else:
                    d0, d1, d2, d3 = aes.decrypt(b0, b1, b2, b3)
                    struct.pack_into(">4I", buf, j, d0 ^ p0, d1 ^ p1, d2 ^ p2, d3 ^ p3)
                    p0, p1, p2, p3 = b0, b1, b2, b3
