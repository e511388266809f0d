"""The block layer: BlockBackend -> driver graph (raw, qcow2, blkdebug over
file-posix or null-co) -> thread pool.  See ARCHITECTURE.md section 3.

Drivers are looked up by name (``bdrv_find_format``, probing,
``bdrv_drivers``), and a driver's module is imported on its first lookup
(module_block.py); importing the package imports none of them.

Must not import: gqemu.hw, gqemu.kvm, gqemu.machine, gqemu.cli or anything
else above the block layer.
"""
from __future__ import annotations

from gqemu.block.accounting import (BLOCK_ACCT_FLUSH, BLOCK_ACCT_READ, BLOCK_ACCT_WRITE,
                                    BlockAcctCookie, BlockAcctStats, block_acct_done,
                                    block_acct_failed, block_acct_invalid,
                                    block_acct_start)
from gqemu.block.blk_error import (BLOCK_DEVICE_IO_STATUS_FAILED,
                                   BLOCK_DEVICE_IO_STATUS_NOSPACE,
                                   BLOCK_DEVICE_IO_STATUS_OK, BLOCK_ERROR_ACTION_IGNORE,
                                   BLOCK_ERROR_ACTION_REPORT, BLOCK_ERROR_ACTION_STOP,
                                   blk_add_resume_handler, blk_add_stop_handler,
                                   blk_error_action, blk_get_error_action,
                                   blk_iostatus_reset, blk_is_stopped, blk_resume)
from gqemu.block.blkdebug_events import BLKDBG_EVENT_NAMES
from gqemu.block.block_backend import (BlockBackend, blk_aio_flush, blk_aio_pdiscard,
                                       blk_aio_preadv, blk_aio_pwrite_zeroes,
                                       blk_aio_pwritev, blk_bs, blk_co_flush,
                                       blk_co_pdiscard, blk_co_preadv,
                                       blk_co_pwrite_zeroes, blk_co_pwritev, blk_drain,
                                       blk_enable_write_cache, blk_flush,
                                       blk_get_aio_context, blk_get_stats, blk_getlength,
                                       blk_is_inserted, blk_is_read_only,
                                       blk_nb_sectors, blk_new_open, blk_pdiscard,
                                       blk_pread, blk_prw, blk_pwrite, blk_pwrite_zeroes,
                                       blk_set_enable_write_cache, blk_set_perm,
                                       blk_unref)
from gqemu.block.drive_opts import (BLOCKDEV_ON_ERROR_ENOSPC, BLOCKDEV_ON_ERROR_IGNORE,
                                    BLOCKDEV_ON_ERROR_REPORT, BLOCKDEV_ON_ERROR_STOP,
                                    parse_drive_spec)
from gqemu.block.driver import (BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA,
                                BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW, BDRV_BLOCK_ZERO,
                                BDRV_O_CACHE_MASK, BDRV_O_CHECK, BDRV_O_COPY_ON_READ,
                                BDRV_O_NATIVE_AIO, BDRV_O_NO_BACKING, BDRV_O_NO_FLUSH,
                                BDRV_O_NO_IO, BDRV_O_NOCACHE, BDRV_O_NOWAIT,
                                BDRV_O_PROTOCOL, BDRV_O_RDWR, BDRV_O_RESIZE,
                                BDRV_O_UNMAP, BDRV_REQ_COPY_ON_READ, BDRV_REQ_FUA,
                                BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK, BDRV_REQ_NO_SERIALISING,
                                BDRV_REQ_WRITE_COMPRESSED, BDRV_REQ_ZERO_WRITE,
                                BDRV_SECTOR_BITS, BDRV_SECTOR_SIZE, BLK_PERM_ALL,
                                BLK_PERM_CONSISTENT_READ, BLK_PERM_RESIZE,
                                BLK_PERM_WRITE, BLK_PERM_WRITE_UNCHANGED, BLKDBG_EVENT,
                                BdrvChild, BlockDriver, BlockDriverState, BlockError,
                                BlockLimits, bdrv_debug_event, bdrv_drivers,
                                bdrv_find_format, bdrv_getlength, bdrv_register,
                                bdrv_unref, qdict_first_key)
from gqemu.block.driver_open import bdrv_open
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwrite_zeroes, bdrv_co_pwritev
from gqemu.block.io_misc import (bdrv_co_flush, bdrv_co_get_block_status, bdrv_co_pdiscard, bdrv_pread, bdrv_pwrite, bdrv_run_co,
                                 bdrv_drain, bdrv_flush, bdrv_pwrite_sync)
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_add, qemu_iovec_concat,
                              qemu_iovec_from_buf, qemu_iovec_init, qemu_iovec_init_buf,
                              qemu_iovec_is_zero, qemu_iovec_memset, qemu_iovec_reset,
                              qemu_iovec_to_buf)

__all__ = [name for name in dir() if not name.startswith("_") and name != "annotations"]
