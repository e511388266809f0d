"""Compressing and decompressing one qcow2 cluster with the image's
compression type: zlib (raw deflate, 12-bit window) or zstd (one zstd
frame; the ``zstandard`` module, without which gqemu, like a QEMU built
without zstd, knows no zstd images).

Context: any (no I/O).  QEMU: block/qcow2-threads.c (qcow2_zlib_compress,
qcow2_zstd_compress, qcow2_zlib_decompress, qcow2_zstd_decompress).
"""
from __future__ import annotations

from typing import Any, Optional
import zlib

QCOW2_COMPRESSION_TYPE_ZLIB = 0
QCOW2_COMPRESSION_TYPE_ZSTD = 1


def zstd_module() -> Any:
    """The ``zstandard`` module, or None (QEMU: CONFIG_ZSTD)."""
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def qcow2_compress(compression_type: int, data: bytes) -> bytes:
    """QEMU: qcow2_co_compress (the caller writes ``data`` uncompressed
    when the result is not shorter than a cluster)."""
    if compression_type == QCOW2_COMPRESSION_TYPE_ZSTD:
        return zstd_module().ZstdCompressor().compress(data)
    comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
    return comp.compress(data) + comp.flush()


def qcow2_decompress(compression_type: int, buf: bytes, size: int) -> Optional[bytes]:
    """Exactly ``size`` bytes, or None (-EIO).  QEMU: qcow2_co_decompress."""
    try:
        if compression_type == QCOW2_COMPRESSION_TYPE_ZSTD:
            zstd = zstd_module()
            d = zstd.ZstdDecompressor().decompressobj()
            out = d.decompress(buf)
        else:
            out = zlib.decompressobj(-12).decompress(buf, size)
    except Exception:                   # zlib.error, zstd.ZstdError
        return None
    return out[:size] if len(out) >= size else None
