"""blkdebug event numbers and names: QAPI ``BlkdebugEvent`` in QEMU 7.2 order
(the first 43 are QEMU 2.8's).  Drivers emit them with
``BLKDBG_EVENT(bs.file, BLKDBG_...)``; blkdebug config files name them.

Must not import: anything.
QEMU: qapi/block-core.json BlkdebugEvent, include/block/block.h.
"""
from __future__ import annotations

BLKDBG_L1_UPDATE = 0
BLKDBG_L1_GROW_ALLOC_TABLE = 1
BLKDBG_L1_GROW_WRITE_TABLE = 2
BLKDBG_L1_GROW_ACTIVATE_TABLE = 3
BLKDBG_L2_LOAD = 4
BLKDBG_L2_UPDATE = 5
BLKDBG_L2_UPDATE_COMPRESSED = 6
BLKDBG_L2_ALLOC_COW_READ = 7
BLKDBG_L2_ALLOC_WRITE = 8
BLKDBG_READ_AIO = 9
BLKDBG_READ_BACKING_AIO = 10
BLKDBG_READ_COMPRESSED = 11
BLKDBG_WRITE_AIO = 12
BLKDBG_WRITE_COMPRESSED = 13
BLKDBG_VMSTATE_LOAD = 14
BLKDBG_VMSTATE_SAVE = 15
BLKDBG_COW_READ = 16
BLKDBG_COW_WRITE = 17
BLKDBG_REFTABLE_LOAD = 18
BLKDBG_REFTABLE_GROW = 19
BLKDBG_REFTABLE_UPDATE = 20
BLKDBG_REFBLOCK_LOAD = 21
BLKDBG_REFBLOCK_UPDATE = 22
BLKDBG_REFBLOCK_UPDATE_PART = 23
BLKDBG_REFBLOCK_ALLOC = 24
BLKDBG_REFBLOCK_ALLOC_HOOKUP = 25
BLKDBG_REFBLOCK_ALLOC_WRITE = 26
BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS = 27
BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE = 28
BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE = 29
BLKDBG_CLUSTER_ALLOC = 30
BLKDBG_CLUSTER_ALLOC_BYTES = 31
BLKDBG_CLUSTER_FREE = 32
BLKDBG_FLUSH_TO_OS = 33
BLKDBG_FLUSH_TO_DISK = 34
BLKDBG_PWRITEV_RMW_HEAD = 35
BLKDBG_PWRITEV_RMW_AFTER_HEAD = 36
BLKDBG_PWRITEV_RMW_TAIL = 37
BLKDBG_PWRITEV_RMW_AFTER_TAIL = 38
BLKDBG_PWRITEV = 39
BLKDBG_PWRITEV_ZERO = 40
BLKDBG_PWRITEV_DONE = 41
BLKDBG_EMPTY_IMAGE_PREPARE = 42
BLKDBG_L1_SHRINK_WRITE_TABLE = 43
BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS = 44
BLKDBG_COR_WRITE = 45
BLKDBG_CLUSTER_ALLOC_SPACE = 46
BLKDBG_NONE = 47
BLKDBG__MAX = 48

# index -> name, as in config files
BLKDBG_EVENT_NAMES: tuple[str, ...] = (
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table",
    "l1_grow_activate_table", "l2_load", "l2_update", "l2_update_compressed",
    "l2_alloc_cow_read", "l2_alloc_write", "read_aio", "read_backing_aio",
    "read_compressed", "write_aio", "write_compressed", "vmstate_load",
    "vmstate_save", "cow_read", "cow_write", "reftable_load", "reftable_grow",
    "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
    "refblock_alloc_write", "refblock_alloc_write_blocks",
    "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os",
    "flush_to_disk", "pwritev_rmw_head", "pwritev_rmw_after_head",
    "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev", "pwritev_zero",
    "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
)


def blkdebug_event_by_name(name: str) -> int:
    """The event number for ``name``, or -1."""
    try:
        return BLKDBG_EVENT_NAMES.index(name)
    except ValueError:
        return -1
