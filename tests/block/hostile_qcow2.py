"""Hand-packed qcow2 images for the hostile-image tests: every byte is laid
out here with ``struct`` (the qcow2 spec, docs/interop/qcow2.txt), so the
tests do not lean on gqemu's own writer being right.

``Layout`` is a small, self-consistent v3 (or v2) image: header in cluster 0,
refcount table in cluster 1, one refcount block in cluster 2, the L1 table in
cluster 3, one L2 table in cluster 4 and data clusters from 5 on, every
cluster's refcount 1.  A test changes a field (``hdr``), an entry
(``l1``/``l2``/``reftable``/``refblock``), appends header extensions or
snapshots, then calls ``build()``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = 0x514649FB
QCOW_OFLAG_COPIED = 1 << 63
QCOW_OFLAG_COMPRESSED = 1 << 62
QCOW_OFLAG_ZERO = 1

EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_CRYPTO = 0x0537BE77
EXT_BITMAPS = 0x23852875
EXT_DATA_FILE = 0x44415441


def ext(etype: int, data: bytes, length: int | None = None) -> bytes:
    """One header extension: type, length (``length`` overrides the real
    one, for lying extensions), the data padded to 8 bytes."""
    n = len(data) if length is None else length
    pad = (-len(data)) % 8
    return struct.pack(">II", etype, n) + data + b"\0" * pad


@dataclass
class Layout:
    cluster_bits: int = 12
    version: int = 3
    size: int = 1 << 20
    data_clusters: int = 2              # data clusters mapped at guest 0, 1, ...
    hdr: dict = field(default_factory=dict)   # header field overrides
    extensions: list = field(default_factory=list)  # raw bytes from ext()
    backing: bytes = b""
    l1: dict = field(default_factory=dict)    # index -> raw entry overrides
    l2: dict = field(default_factory=dict)
    reftable: dict = field(default_factory=dict)
    refblock: dict = field(default_factory=dict)  # index -> 16-bit refcount
    snapshots: bytes = b""              # raw snapshot table, at its own cluster
    nb_snapshots: int = 0
    tail: bytes = b""                   # appended after the last cluster
    truncate: int | None = None         # cut the file to this many bytes

    @property
    def cs(self) -> int:
        return 1 << self.cluster_bits

    def off(self, cluster: int) -> int:
        return cluster * self.cs

    # clusters: 0 hdr, 1 reftable, 2 refblock, 3 L1, 4 L2, 5.. data, then snapshots
    @property
    def snap_cluster(self) -> int:
        return 5 + self.data_clusters

    def build(self) -> bytes:
        cs = self.cs
        nclusters = self.snap_cluster + (1 if self.snapshots else 0)
        img = bytearray(nclusters * cs)
        l2_entries = cs // 8
        l1_size = max(1, -(-self.size // (l2_entries * cs)))
        fields = dict(
            magic=MAGIC, version=self.version, backing_file_offset=0, backing_file_size=0,
            cluster_bits=self.cluster_bits, size=self.size, crypt_method=0,
            l1_size=l1_size, l1_table_offset=self.off(3),
            refcount_table_offset=self.off(1), refcount_table_clusters=1,
            nb_snapshots=self.nb_snapshots,
            snapshots_offset=self.off(self.snap_cluster) if self.snapshots else 0,
            incompatible_features=0, compatible_features=0, autoclear_features=0,
            refcount_order=4, header_length=112 if self.version >= 3 else 72)
        fields.update(self.hdr)
        hdr = struct.pack(">IIQIIQIIQQIIQ", fields["magic"], fields["version"],
                          fields["backing_file_offset"], fields["backing_file_size"],
                          fields["cluster_bits"], fields["size"], fields["crypt_method"],
                          fields["l1_size"], fields["l1_table_offset"],
                          fields["refcount_table_offset"], fields["refcount_table_clusters"],
                          fields["nb_snapshots"], fields["snapshots_offset"])
        if self.version >= 3:
            hdr += struct.pack(">QQQII", fields["incompatible_features"],
                               fields["compatible_features"], fields["autoclear_features"],
                               fields["refcount_order"], fields["header_length"])
            hdr += bytes(8)                     # compression type (zlib), padding
        exts = b"".join(self.extensions)
        if self.version >= 3 or exts:
            exts += struct.pack(">II", 0, 0)
        blob = hdr + exts
        if self.backing:
            boff = len(blob)
            if "backing_file_offset" not in self.hdr:
                blob_fields = struct.pack(">QI", boff, len(self.backing))
                blob = blob[:8] + blob_fields + blob[20:]
            blob += self.backing
        img[0:len(blob)] = blob[:cs] if len(blob) > cs else blob
        # refcount table and block
        struct.pack_into(">Q", img, self.off(1), self.off(2))
        for i, v in self.reftable.items():
            struct.pack_into(">Q", img, self.off(1) + 8 * i, v)
        for c in range(nclusters):
            struct.pack_into(">H", img, self.off(2) + 2 * c, 1)
        for i, v in self.refblock.items():
            struct.pack_into(">H", img, self.off(2) + 2 * i, v)
        # L1 -> L2 -> data
        struct.pack_into(">Q", img, self.off(3), self.off(4) | QCOW_OFLAG_COPIED)
        for i, v in self.l1.items():
            struct.pack_into(">Q", img, self.off(3) + 8 * i, v)
        for i in range(self.data_clusters):
            struct.pack_into(">Q", img, self.off(4) + 8 * i,
                             self.off(5 + i) | QCOW_OFLAG_COPIED)
            img[self.off(5 + i):self.off(6 + i)] = bytes([0x11 * (i + 1) & 0xFF]) * cs
        for i, v in self.l2.items():
            struct.pack_into(">Q", img, self.off(4) + 8 * i, v)
        if self.snapshots:
            img[self.off(self.snap_cluster):self.off(self.snap_cluster) + len(self.snapshots)] \
                = self.snapshots
        img += self.tail
        if self.truncate is not None:
            del img[self.truncate:]
        return bytes(img)


def snapshot_entry(l1_offset: int, l1_size: int, sid: bytes = b"1", name: bytes = b"s",
                   extra: bytes | None = None, extra_len: int | None = None,
                   id_len: int | None = None, name_len: int | None = None) -> bytes:
    """One snapshot table entry (padded to 8), with lengths a test may fake."""
    if extra is None:
        extra = struct.pack(">QQ", 0, 1 << 20)   # vm_state_size_large, disk_size
    e = struct.pack(">QIHHIIQII", l1_offset, l1_size,
                    len(sid) if id_len is None else id_len,
                    len(name) if name_len is None else name_len,
                    0, 0, 0, 0, len(extra) if extra_len is None else extra_len)
    e += extra + sid + name
    return e + b"\0" * ((-len(e)) % 8)


def qcow1(size: int = 1 << 20, cluster_bits: int = 12, l2_bits: int = 9, crypt: int = 0,
          l1: dict | None = None, l2: dict | None = None, backing: bytes = b"",
          backing_size: int | None = None, l1_offset: int = 0x1000,
          truncate: int | None = None) -> bytes:
    """A qcow (version 1) image: the 48-byte header, the backing name after
    it, the L1 table at ``l1_offset``, one L2 table and one data cluster
    (guest cluster 0 holds 0x11 bytes), then entry overrides."""
    cs = 1 << min(max(cluster_bits, 9), 16)      # the layout's, whatever the header says
    l2_bits_l = min(max(l2_bits, 6), 13)
    l2_off = 2 * cs if not 2 * cs <= l1_offset < 16 * cs else l1_offset + cs
    data_off = l2_off + max(cs, 8 << l2_bits_l)
    data_off = -(-data_off // cs) * cs
    img = bytearray(data_off + cs)
    hdr = struct.pack(">IIQIIQBBHIQ", MAGIC, 1, 48 if backing else 0,
                      len(backing) if backing_size is None else backing_size, 0, size,
                      cluster_bits & 0xFF, l2_bits & 0xFF, 0, crypt, l1_offset)
    img[0:48] = hdr
    img[48:48 + len(backing)] = backing
    if l1_offset + 8 <= len(img):
        struct.pack_into(">Q", img, l1_offset, l2_off)
        for i, v in (l1 or {}).items():
            struct.pack_into(">Q", img, l1_offset + 8 * i, v)
    struct.pack_into(">Q", img, l2_off, data_off)
    for i, v in (l2 or {}).items():
        struct.pack_into(">Q", img, l2_off + 8 * i, v)
    img[data_off:data_off + cs] = b"\x11" * cs
    if truncate is not None:
        del img[truncate:]
    return bytes(img)
