"""qcow2 per-image state: the overlap-check kinds, the metadata cache
structures, and the typed fields of one open image.

The bottom of the qcow2 modules: it imports no other qcow2 module, and every
qcow2 module may import it.  The driver class (``qcow2.BDRVQcow2State``)
derives from ``Qcow2State`` and adds the vtable methods; ``bs.opaque`` of a
qcow2 node is that instance.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, any other gqemu.block.qcow2*
module except qcow2_header.

QEMU: block/qcow2.h (BDRVQcow2State, QCow2MetadataOverlap), the structs of
block/qcow2-cache.c.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from gqemu.coroutine import CoMutex
from gqemu.block.driver import BdrvChild, BlockDriver, BlockDriverState
# INT64_MAX aligned down to 1 GiB: no request may reach past it.  QEMU: BDRV_MAX_LENGTH
from gqemu.block.block_int import BDRV_MAX_LENGTH  # noqa: F401 (re-exported)

# overlap-check kinds.  QEMU: QCow2MetadataOverlap
QCOW2_OL_MAIN_HEADER = 1 << 0
QCOW2_OL_ACTIVE_L1 = 1 << 1
QCOW2_OL_ACTIVE_L2 = 1 << 2
QCOW2_OL_REFCOUNT_TABLE = 1 << 3
QCOW2_OL_REFCOUNT_BLOCK = 1 << 4
QCOW2_OL_SNAPSHOT_TABLE = 1 << 5
QCOW2_OL_INACTIVE_L1 = 1 << 6
QCOW2_OL_INACTIVE_L2 = 1 << 7
QCOW2_OL_BITMAP_DIRECTORY = 1 << 8
QCOW2_OL_CONSTANT = (QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1
                     | QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_SNAPSHOT_TABLE
                     | QCOW2_OL_BITMAP_DIRECTORY)
QCOW2_OL_CACHED = (QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2
                   | QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_INACTIVE_L1)
QCOW2_OL_ALL = QCOW2_OL_CACHED | QCOW2_OL_INACTIVE_L2
# Why clusters are freed; whether the freed range is discarded in the file
# is ``discard_passthrough[type]`` (pass-discard-* options; ALWAYS is always
# passed, NEVER never).  QEMU: enum qcow2_discard_type
QCOW2_DISCARD_NEVER = 0
QCOW2_DISCARD_ALWAYS = 1
QCOW2_DISCARD_REQUEST = 2
QCOW2_DISCARD_SNAPSHOT = 3
QCOW2_DISCARD_OTHER = 4
QCOW2_DISCARD_MAX = 5
metadata_ol_names = ["qcow2_header", "active L1 table", "active L2 table",
                     "refcount table", "refcount block", "snapshot table",
                     "inactive L1 table", "inactive L2 table", "bitmap directory"]


class Qcow2CachedTable:
    """One cached cluster.  QEMU: Qcow2CachedTable."""

    __slots__ = ("offset", "data", "dirty", "ref", "lru", "idx")

    def __init__(self, idx: int = 0) -> None:
        self.idx = idx                       # slot number
        self.offset = 0
        self.data = bytearray()
        self.dirty = False
        self.ref = 0
        self.lru = 0


class Qcow2Cache:
    """An LRU cache of ``size`` tables.  QEMU: Qcow2Cache."""

    def __init__(self, name: str, num_tables: int, table_size: int) -> None:
        self.name = name                     # "l2" or "refcount"
        # slots get their Qcow2CachedTable when first taken (qcow2_cache_slot):
        # a cache can have 2^18 slots and an open must not build them all
        self.entries: list[Qcow2CachedTable | None] = [None] * num_tables
        self.free = list(range(num_tables))  # sorted slots never used (lru 0)
        self.by_offset: dict[int, Qcow2CachedTable] = {}
        self.table_size = table_size
        self.depends: Qcow2Cache | None = None
        self.depends_on_flush = False
        self.lru_counter = 0

class Qcow2State(BlockDriver):
    """The fields of one open qcow2 image.  QEMU: BDRVQcow2State."""

    # geometry and header fields, set by qcow2_do_open (QEMU: BDRVQcow2State)
    qcow_version: int
    cluster_bits: int
    cluster_size: int
    subclusters_per_cluster: int
    subcluster_size: int
    subcluster_bits: int
    extended_l2: bool
    l2_entry_size: int
    l2_bits: int
    l2_size: int
    l1_size: int
    l1_table_offset: int
    l1_vm_state_index: int
    refcount_order: int
    refcount_bits: int
    refcount_max: int
    refcount_block_bits: int
    refcount_block_size: int
    refcount_table_offset: int
    refcount_table_size: int
    size: int
    csize_shift: int
    csize_mask: int
    cluster_offset_mask: int
    incompatible_features: int
    compatible_features: int
    autoclear_features: int
    use_lazy_refcounts: bool
    unknown_header_fields: bytes
    flags: int
    open_options: dict          # as given to open: truncate recomputes the caches
    # the metadata caches, created by qcow2_do_open
    l2_table_cache: Qcow2Cache
    refcount_block_cache: Qcow2Cache

    def __init__(self) -> None:
        self.lock = CoMutex()
        self.cluster_allocs: list[Any] = []
        self.snapshots: list[Any] = []
        self.snapshots_offset = self.snapshots_size = self.nb_snapshots = 0
        self.l1_table: list[int] = []
        self.refcount_table: list[int] = []
        self.signaled_corruption = False
        self.disabled = False
        self.read_only = True
        self.open_options = {}
        # freed host ranges waiting to be discarded in the file; while
        # cache_discards is set (a discard or zeroing) they are merged and
        # issued at its end.  QEMU: s->discards, s->cache_discards
        self.discards: list[list[int]] = []
        self.cache_discards = False
        self.free_cluster_index = 0
        self.highest_alloc = 0                   # end of the clusters we allocated
        self.free_byte_offset = 0
        self.overlap_check = QCOW2_OL_CACHED
        # speed only (qcow2_overlap._table_targets): per table ("l1", "reft")
        # a copy of it, the clusters its entries point to (with the number
        # of entries for each), the number of unaligned entries, the last
        # changed entry
        self.overlap_sets: dict[str, Any] = {}
        # the other runtime options (qcow2_options sets them at open)
        self.use_lazy_refcounts = False
        self.discard_passthrough = [False, True, False, True, False]   # by QCOW2_DISCARD_*
        self.l2_slice_size = 0
        self.l2_cache_entry_size = 0
        self.cache_clean_interval = 600
        self.crypt_method_header = 0             # QCOW_CRYPT_* (qcow2_crypto.py)
        self.crypto: Any = None                  # the cipher, once set up
        self.crypto_key_secret: Optional[str] = None
        self.header: Any = None
        self.ext: Any = None
        self.backing_file: Optional[str] = None
        self.backing_format: Optional[str] = None
        # the external data file (qcow2_data_file.py): its child (None: the
        # data lives in bs->file) and the name the header extension holds
        self.data_file: Optional[BdrvChild] = None
        self.has_data_file = False               # incompatible bit 2 (set at open)
        self.image_data_file: Optional[str] = None
        self.opened = False
        # the bitmaps extension (qcow2_bitmap.py)
        self.nb_bitmaps = self.bitmap_directory_offset = self.bitmap_directory_size = 0
        self.bitmaps_stale = False


if TYPE_CHECKING:
    class Qcow2BDS(BlockDriverState):
        """For the type checker only: a node whose driver is qcow2, so its
        ``opaque`` is a ``Qcow2State`` and it has a ``file`` child (QEMU's
        ``BDRVQcow2State *s = bs->opaque``).  At run time it is just
        ``BlockDriverState``."""
        drv: Any            # qcow2.BDRVQcow2State: its vtable sits above this module
        opaque: Qcow2State
        file: BdrvChild
else:
    Qcow2BDS = BlockDriverState
