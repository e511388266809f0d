"""qcow2 on-disk header: constants, parsing, open-time validation, extensions.

Pure functions over bytes: nothing here does I/O, so the checks of
reliability section 2.1 can be tested without a block graph.  The driver
(``qcow2.py``) reads the bytes and calls these in ``qcow2_do_open``'s order.

Must not import: anything above ``gqemu.block``; the block graph itself.

QEMU: block/qcow2.h, the header half of block/qcow2.c.
"""
from __future__ import annotations

import errno
import struct

QCOW_MAGIC = 0x514649FB                     # "QFI\xfb"
QCOW_MAGIC_BYTES = b"QFI\xfb"

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
DEFAULT_CLUSTER_SIZE = 65536

QCOW_MAX_CRYPT_CLUSTERS = 32
QCOW_MAX_SNAPSHOTS = 65536
QCOW_MAX_REFTABLE_SIZE = 8 * 1024 * 1024    # S_8MiB
QCOW_MAX_CLUSTER_OFFSET = (1 << 56) - 1
QCOW_MAX_L1_SIZE = 32 * 1024 * 1024         # S_32MiB
QCOW_MAX_SNAPSHOTS_SIZE = 64 * 1024 * 1024
QCOW_MAX_SNAPSHOT_EXTRA_DATA = 1024
INT64_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1

L1E_SIZE = 8
L2E_SIZE_NORMAL = 8
L2E_SIZE_EXTENDED = 16
REFTABLE_ENTRY_SIZE = 8

QCOW_OFLAG_COPIED = 1 << 63
QCOW_OFLAG_COMPRESSED = 1 << 62
QCOW_OFLAG_ZERO = 1 << 0
L1E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L1E_RESERVED_MASK = 0x7F000000000001FF
L2E_STD_RESERVED_MASK = 0x3F000000000001FE
REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
REFT_RESERVED_MASK = 0x1FF

QCOW_EXTL2_SUBCLUSTERS_PER_CLUSTER = 32
QCOW_L2_BITMAP_ALL_ALLOC = (1 << 32) - 1
QCOW_L2_BITMAP_ALL_ZEROES = QCOW_L2_BITMAP_ALL_ALLOC << 32
QCOW2_COMPRESSED_SECTOR_SIZE = 512

# feature bits
QCOW2_INCOMPAT_DIRTY = 1 << 0
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_INCOMPAT_COMPRESSION = 1 << 3
QCOW2_INCOMPAT_EXTL2 = 1 << 4
QCOW2_INCOMPAT_MASK = (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT
                       | QCOW2_INCOMPAT_DATA_FILE | QCOW2_INCOMPAT_COMPRESSION
                       | QCOW2_INCOMPAT_EXTL2)
QCOW2_COMPAT_LAZY_REFCOUNTS = 1 << 0
QCOW2_COMPAT_FEAT_MASK = QCOW2_COMPAT_LAZY_REFCOUNTS
QCOW2_AUTOCLEAR_BITMAPS = 1 << 0
QCOW2_AUTOCLEAR_DATA_FILE_RAW = 1 << 1
QCOW2_AUTOCLEAR_MASK = QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_FILE_RAW   # the ones kept alive

QCOW2_FEAT_TYPE_INCOMPATIBLE = 0
QCOW2_FEAT_TYPE_COMPATIBLE = 1
QCOW2_FEAT_TYPE_AUTOCLEAR = 2

# header extensions
QCOW2_EXT_MAGIC_END = 0
QCOW2_EXT_MAGIC_BACKING_FORMAT = 0xE2792ACA
QCOW2_EXT_MAGIC_FEATURE_TABLE = 0x6803F857
QCOW2_EXT_MAGIC_CRYPTO_HEADER = 0x0537BE77
QCOW2_EXT_MAGIC_BITMAPS = 0x23852875
QCOW2_EXT_MAGIC_DATA_FILE = 0x44415441

QCOW2_COMPRESSION_TYPE_ZLIB = 0
QCOW2_COMPRESSION_TYPE_ZSTD = 1

# the feature-name table qemu-img 7.2 writes, in its order
QCOW2_FEATURE_TABLE = [
    (QCOW2_FEAT_TYPE_INCOMPATIBLE, 0, "dirty bit"),
    (QCOW2_FEAT_TYPE_INCOMPATIBLE, 1, "corrupt bit"),
    (QCOW2_FEAT_TYPE_INCOMPATIBLE, 2, "external data file"),
    (QCOW2_FEAT_TYPE_INCOMPATIBLE, 3, "compression type"),
    (QCOW2_FEAT_TYPE_INCOMPATIBLE, 4, "extended L2 entries"),
    (QCOW2_FEAT_TYPE_COMPATIBLE, 0, "lazy refcounts"),
    (QCOW2_FEAT_TYPE_AUTOCLEAR, 0, "bitmaps"),
    (QCOW2_FEAT_TYPE_AUTOCLEAR, 1, "raw external data"),
]

# QCowHeader: big-endian, 104 bytes (v3) + compression_type and padding (112)
_HDR = struct.Struct(">IIQIIQIIQQIIQQQQII")
_HDR_V3_LEN = 104
QCOW2_HEADER_SIZE = 112                     # sizeof(QCowHeader) today
_HDR_V2_LEN = 72


class Qcow2OpenError(Exception):
    """An image refused at open: ``errno`` and QEMU's one-line message."""

    def __init__(self, err: int, msg: str, hint: str = "") -> None:
        super().__init__(msg)
        self.errno = err
        self.msg = msg
        self.hint = hint          # a second line, as QEMU's error_append_hint


def qcow2_probe(buf: bytes, filename: str) -> int:
    """Score 100 for the magic and version >= 2.  QEMU: qcow2_probe."""
    if len(buf) >= 8 and buf[:4] == QCOW_MAGIC_BYTES and \
            struct.unpack(">I", buf[4:8])[0] >= 2:
        return 100
    return 0


def c_hex(v: int) -> str:
    """C's ``%#x``/``%#" PRIx64``: ``0`` for zero, ``0x..`` otherwise."""
    return "%#x" % v if v else "0"


class QCowHeader:
    """The fixed header fields (QEMU: ``QCowHeader``).  A plain class:
    a dataclass compiles its methods at import time, on every qcow2 open."""

    __slots__ = ("magic", "version", "backing_file_offset", "backing_file_size",
                 "cluster_bits", "size", "crypt_method", "l1_size", "l1_table_offset",
                 "refcount_table_offset", "refcount_table_clusters", "nb_snapshots",
                 "snapshots_offset", "incompatible_features", "compatible_features",
                 "autoclear_features", "refcount_order", "header_length",
                 "compression_type")

    def __init__(self, magic: int = QCOW_MAGIC, version: int = 3,
                 backing_file_offset: int = 0, backing_file_size: int = 0,
                 cluster_bits: int = 16, size: int = 0, crypt_method: int = 0,
                 l1_size: int = 0, l1_table_offset: int = 0,
                 refcount_table_offset: int = 0, refcount_table_clusters: int = 0,
                 nb_snapshots: int = 0, snapshots_offset: int = 0,
                 incompatible_features: int = 0, compatible_features: int = 0,
                 autoclear_features: int = 0, refcount_order: int = 4,
                 header_length: int = QCOW2_HEADER_SIZE,
                 compression_type: int = 0) -> None:
        self.magic = magic
        self.version = version
        self.backing_file_offset = backing_file_offset
        self.backing_file_size = backing_file_size
        self.cluster_bits = cluster_bits
        self.size = size
        self.crypt_method = crypt_method
        self.l1_size = l1_size
        self.l1_table_offset = l1_table_offset
        self.refcount_table_offset = refcount_table_offset
        self.refcount_table_clusters = refcount_table_clusters
        self.nb_snapshots = nb_snapshots
        self.snapshots_offset = snapshots_offset
        self.incompatible_features = incompatible_features
        self.compatible_features = compatible_features
        self.autoclear_features = autoclear_features
        self.refcount_order = refcount_order
        self.header_length = header_length
        self.compression_type = compression_type

    def __repr__(self) -> str:
        return "QCowHeader(%s)" % ", ".join("%s=%r" % (n, getattr(self, n))
                                            for n in self.__slots__)


def qcow2_header_unpack(buf: bytes | bytearray) -> QCowHeader:
    """Decode the first 112 bytes (zero-filled if shorter, as QEMU's read is).

    Context: any.  Returns: the header with v2 defaults applied, unvalidated.
    QEMU: block/qcow2.c qcow2_do_open (be*_to_cpus of the header).
    """
    buf = bytes(buf[:QCOW2_HEADER_SIZE]).ljust(QCOW2_HEADER_SIZE, b"\0")
    f = _HDR.unpack_from(buf, 0)
    h = QCowHeader(*f)
    h.compression_type = buf[104]
    if h.version == 2:
        h.incompatible_features = h.compatible_features = 0
        h.autoclear_features = 0
        h.refcount_order = 4
        h.header_length = _HDR_V2_LEN
        h.compression_type = 0
    elif h.header_length <= _HDR_V3_LEN:
        h.compression_type = 0
    return h


def qcow2_header_pack(h: QCowHeader) -> bytes:
    """Encode the header: 72 bytes for v2, ``header_length`` bytes for v3.

    Context: any.  Returns: the bytes.  QEMU: block/qcow2.c qcow2_update_header.
    """
    raw = _HDR.pack(h.magic, h.version, h.backing_file_offset,
                    h.backing_file_size, h.cluster_bits, h.size,
                    h.crypt_method, h.l1_size, h.l1_table_offset,
                    h.refcount_table_offset, h.refcount_table_clusters,
                    h.nb_snapshots, h.snapshots_offset,
                    h.incompatible_features, h.compatible_features,
                    h.autoclear_features, h.refcount_order, h.header_length)
    if h.version == 2:
        return raw[:_HDR_V2_LEN]
    raw += bytes([h.compression_type]) + b"\0" * 7
    return raw[:max(h.header_length, _HDR_V3_LEN)]


def qcow2_check_header_fields(h: QCowHeader) -> None:
    """The header-only checks of ``qcow2_do_open`` up to the extensions.

    Context: any.  Raises: Qcow2OpenError with QEMU's message.
    QEMU: block/qcow2.c qcow2_do_open (magic .. backing_file_offset).
    """
    if h.magic != QCOW_MAGIC:
        raise Qcow2OpenError(errno.EINVAL, "Image is not in qcow2 format")
    if h.version < 2 or h.version > 3:
        raise Qcow2OpenError(errno.ENOTSUP,
                             "Unsupported qcow2 version %d" % h.version)
    if h.cluster_bits < MIN_CLUSTER_BITS or h.cluster_bits > MAX_CLUSTER_BITS:
        raise Qcow2OpenError(errno.EINVAL,
                             "Unsupported cluster size: 2^%u" % h.cluster_bits)
    cluster_size = 1 << h.cluster_bits
    if h.version >= 3 and h.header_length < _HDR_V3_LEN:
        raise Qcow2OpenError(errno.EINVAL, "qcow2 header too short")
    if h.header_length > cluster_size:
        raise Qcow2OpenError(errno.EINVAL, "qcow2 header exceeds cluster size")
    if h.backing_file_offset > cluster_size:
        raise Qcow2OpenError(errno.EINVAL, "Invalid backing file offset")
    if h.header_length > _HDR_V3_LEN:
        from gqemu.block.qcow2_zstd import compression_type_supported
        if not compression_type_supported(h.compression_type):     # zstd: optional
            raise Qcow2OpenError(errno.ENOTSUP, "qcow2: unknown compression "
                                 "type: %u" % h.compression_type)
    if h.compression_type == 0 and (h.incompatible_features
                                    & QCOW2_INCOMPAT_COMPRESSION):
        raise Qcow2OpenError(errno.EINVAL, "qcow2: Compression type incompatible "
                             "feature bit must not be set")
    if h.compression_type != 0 and not (h.incompatible_features
                                        & QCOW2_INCOMPAT_COMPRESSION):
        raise Qcow2OpenError(errno.EINVAL, "qcow2: Compression type incompatible "
                             "feature bit must be set")


class Qcow2Extensions:
    """What the header extensions said (QEMU: fields of BDRVQcow2State)."""

    __slots__ = ("backing_format", "feature_table", "unknown", "has_data_file",
                 "has_crypto", "data_file", "bitmaps")

    def __init__(self) -> None:
        self.backing_format: str | None = None
        self.feature_table: list[tuple[int, int, str]] | None = None
        self.unknown: list[tuple[int, bytes]] = []
        self.has_data_file = False
        self.has_crypto = False
        self.data_file: str | None = None      # the external data file's name
        self.bitmaps: bytes | None = None     # the bitmaps extension's data


def qcow2_read_extensions(cluster0: bytes | bytearray, start: int, end: int) -> Qcow2Extensions:
    """Parse the extensions between ``start`` (header_length) and ``end``.

    Context: any.  Raises: Qcow2OpenError("Header extension too large").
    QEMU: block/qcow2.c qcow2_read_extensions.
    """
    ext = Qcow2Extensions()
    buf = bytes(cluster0).ljust(end, b"\0")
    off = start
    while off < end:
        if off + 8 > end:
            raise Qcow2OpenError(errno.EINVAL, "Header extension too large")
        magic, length = struct.unpack_from(">II", buf, off)
        off += 8
        if length > end - off:
            raise Qcow2OpenError(errno.EINVAL, "Header extension too large")
        data = buf[off:off + length]
        if magic == QCOW2_EXT_MAGIC_END:
            return ext
        if magic == QCOW2_EXT_MAGIC_BACKING_FORMAT:
            if length >= 16:
                raise Qcow2OpenError(errno.EINVAL, "ERROR: ext_backing_format: "
                                     "len=%u too large (>=16)" % length)
            ext.backing_format = data.split(b"\0")[0].decode("latin-1")
        elif magic == QCOW2_EXT_MAGIC_FEATURE_TABLE:
            table = []                  # QEMU reads entries up to an empty name,
            padded = data.ljust(length + 48, b"\0")   # a short last one zero-padded
            for i in range(0, length, 48):
                t, bit = padded[i], padded[i + 1]
                name = padded[i + 2:i + 48].split(b"\0")[0].decode("latin-1")
                if not name:
                    break
                table.append((t, bit, name))
            ext.feature_table = table
        elif magic == QCOW2_EXT_MAGIC_DATA_FILE:
            ext.has_data_file = True
            ext.data_file = data.decode("utf-8", "replace")
        elif magic == QCOW2_EXT_MAGIC_BITMAPS:
            ext.bitmaps = bytes(data)
        else:
            if magic == QCOW2_EXT_MAGIC_CRYPTO_HEADER:
                ext.has_crypto = True
            ext.unknown.append((magic, data))
        off += (length + 7) & ~7
    return ext


def report_unsupported_feature(table: list[tuple[int, int, str]] | None,
                               mask: int) -> str:
    """The "Unsupported qcow2 feature(s): ..." message.

    Context: any.  QEMU: block/qcow2.c report_unsupported_feature.
    """
    names = []
    for t, bit, name in table or []:
        if not name:
            break
        if t == QCOW2_FEAT_TYPE_INCOMPATIBLE and bit < 64 and mask & (1 << bit):
            names.append(name[:46])
            mask &= ~(1 << bit)
    if mask:
        names.append("Unknown incompatible feature: %x" % mask)
    return "Unsupported qcow2 feature(s): " + ", ".join(names)


def qcow2_validate_table(offset: int, entries: int, entry_len: int,
                         max_size_bytes: int, cluster_size: int,
                         table_name: str) -> None:
    """Bound a table's size before it is ever allocated or read.

    Context: any.  Raises: Qcow2OpenError ("%s too large" EFBIG,
    "%s offset invalid" EINVAL).  QEMU: block/qcow2.c qcow2_validate_table.
    """
    if entries > max_size_bytes // entry_len:
        raise Qcow2OpenError(errno.EFBIG, "%s too large" % table_name)
    if (INT64_MAX - entries * entry_len < offset
            or offset & (cluster_size - 1)):
        raise Qcow2OpenError(errno.EINVAL, "%s offset invalid" % table_name)


def size_to_l1(cluster_bits: int, l2_bits: int, size: int) -> int:
    """Number of L1 entries needed for ``size`` bytes.  QEMU: size_to_l1."""
    shift = cluster_bits + l2_bits
    return (size + (1 << shift) - 1) >> shift


def pack_extension(magic: int, data: bytes) -> bytes:
    """One ``{u32 magic, u32 len, data, pad to 8}`` record."""
    pad = (-len(data)) % 8
    return struct.pack(">II", magic, len(data)) + data + b"\0" * pad


def pack_feature_table() -> bytes:
    """The feature-name table extension as qemu-img writes it."""
    out = b""
    for t, bit, name in QCOW2_FEATURE_TABLE:
        out += bytes([t, bit]) + name.encode().ljust(46, b"\0")
    return pack_extension(QCOW2_EXT_MAGIC_FEATURE_TABLE, out)


def qcow2_build_header_cluster(h: QCowHeader, cluster_size: int,
                               backing_format: str | None,
                               unknown: list[tuple[int, bytes]],
                               backing_file: str | None,
                               extra_header: bytes = b"",
                               data_file: str | None = None, bitmaps: bytes = b"") -> bytes:
    """Header + extensions + backing name, as one cluster-0 image.

    Sets ``h.backing_file_offset/size``.  Raises Qcow2OpenError(ENOSPC) when
    it does not fit.  Context: any.  QEMU: block/qcow2.c qcow2_update_header.
    """
    exts = b""
    if h.version >= 3 or backing_format:
        if backing_format:
            exts += pack_extension(QCOW2_EXT_MAGIC_BACKING_FORMAT,
                                   backing_format.encode())
    if data_file:
        exts += pack_extension(QCOW2_EXT_MAGIC_DATA_FILE, data_file.encode())
    if h.version >= 3 and cluster_size > 4096:     # QEMU leaves it out of small clusters
        exts += pack_feature_table()
    if bitmaps:
        exts += pack_extension(QCOW2_EXT_MAGIC_BITMAPS, bitmaps)
    for magic, data in unknown:
        exts += pack_extension(magic, data)
    exts += struct.pack(">II", QCOW2_EXT_MAGIC_END, 0)
    head_len = len(qcow2_header_pack(h)) + len(extra_header)
    name = backing_file.encode() if backing_file else b""
    total = head_len + len(exts) + len(name)
    if total > cluster_size:
        raise Qcow2OpenError(errno.ENOSPC, "Header too large for cluster 0")
    if name:
        h.backing_file_offset = head_len + len(exts)
        h.backing_file_size = len(name)
    else:
        h.backing_file_offset = h.backing_file_size = 0
    out = qcow2_header_pack(h) + extra_header + exts + name
    return out
