"""qcow2 cluster compression by the image's ``compression_type``: zlib
(raw deflate, window bits 12) from the standard library, zstd from the
``zstandard`` module (an install requirement, see setup.cfg).

Without ``zstandard`` gqemu behaves as a QEMU built without CONFIG_ZSTD:
creating a zstd image fails with "Parameter 'compression-type' does not
accept value 'zstd'", opening one with "qcow2: unknown compression type: 1".

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-threads.c (qcow2_zlib_compress/decompress,
qcow2_zstd_compress/decompress, qcow2_co_compress/decompress).
"""
from __future__ import annotations

import io
import zlib
from typing import Any, Optional

QCOW2_COMPRESSION_TYPE_ZLIB = 0
QCOW2_COMPRESSION_TYPE_ZSTD = 1
ZSTD_CLEVEL_DEFAULT = 3          # libzstd's default level, the one QEMU uses

_zstd: Any = None


def zstd_module() -> Any:
    """The ``zstandard`` module, or None when it is not installed."""
    global _zstd
    if _zstd is None:
        try:
            import zstandard
        except ImportError:
            _zstd = False
        else:
            _zstd = zstandard
    return _zstd or None


def compression_type_supported(ctype: int) -> bool:
    """Whether this build handles ``ctype``.  QEMU: validate_compression_type."""
    if ctype == QCOW2_COMPRESSION_TYPE_ZLIB:
        return True
    return ctype == QCOW2_COMPRESSION_TYPE_ZSTD and zstd_module() is not None


def compression_type_name(ctype: int) -> str:
    return "zstd" if ctype == QCOW2_COMPRESSION_TYPE_ZSTD else "zlib"


def qcow2_zstd_compress(src: bytes, dest_size: int) -> Optional[bytes]:
    """One zstd frame (content size in its header, no checksum), or None
    when it does not fit in ``dest_size`` bytes (QEMU's -ENOMEM).
    QEMU: qcow2_zstd_compress (ZSTD_compressStream2 with ZSTD_e_end)."""
    out = zstd_module().ZstdCompressor(level=ZSTD_CLEVEL_DEFAULT).compress(src)
    return out if len(out) <= dest_size else None


def qcow2_zstd_decompress(src: bytes, dest_size: int) -> Optional[bytes]:
    """Exactly ``dest_size`` bytes of the stream that starts at ``src``
    (the bytes after the first frame are the sector's padding), or None
    (QEMU's -EIO) if the stream is bad or ends early.  The output is
    bounded by ``dest_size`` whatever the frame claims.
    QEMU: qcow2_zstd_decompress (ZSTD_decompressStream until the output
    buffer is full)."""
    z = zstd_module()
    try:
        reader = z.ZstdDecompressor().stream_reader(io.BytesIO(src), read_across_frames=True)
        out = bytearray()
        while len(out) < dest_size:
            chunk = reader.read(dest_size - len(out))
            if not chunk:
                break
            out += chunk
    except z.ZstdError:
        return None
    return bytes(out) if len(out) == dest_size else None


def qcow2_zlib_compress(src: bytes, dest_size: int) -> Optional[bytes]:
    """Raw deflate, window bits 12, level 9 memory; None if larger than
    ``dest_size``.  QEMU: qcow2_zlib_compress."""
    comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
    out = comp.compress(src) + comp.flush()
    return out if len(out) <= dest_size else None


def qcow2_zlib_decompress(src: bytes, dest_size: int) -> Optional[bytes]:
    """QEMU: qcow2_zlib_decompress (Z_STREAM_END or a full buffer)."""
    try:
        out = zlib.decompressobj(-12).decompress(src, dest_size)
    except zlib.error:
        return None
    return out if len(out) == dest_size else None


def qcow2_compress(ctype: int, src: bytes, dest_size: int) -> Optional[bytes]:
    """QEMU: qcow2_co_compress (without the thread pool)."""
    if ctype == QCOW2_COMPRESSION_TYPE_ZSTD:
        return qcow2_zstd_compress(src, dest_size)
    return qcow2_zlib_compress(src, dest_size)


def qcow2_decompress(ctype: int, src: bytes, dest_size: int) -> Optional[bytes]:
    """QEMU: qcow2_co_decompress (without the thread pool)."""
    if ctype == QCOW2_COMPRESSION_TYPE_ZSTD:
        return qcow2_zstd_decompress(src, dest_size)
    return qcow2_zlib_decompress(src, dest_size)
