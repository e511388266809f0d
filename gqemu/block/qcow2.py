"""The qcow2 format driver: open (every header check of reliability 2.1),
read, allocating write, compressed clusters, zero writes, discard, block
status, flush and close.

The driver instance is the node's state (QEMU's ``BDRVQcow2State``); all
metadata I/O goes through ``bdrv_co_preadv/pwritev(bs.file)``.  Image
creation lives in ``qcow2_create.py``, check and repair in ``qcow2_check.py``.
Zero writes, discard, writing back the caches and block status are
``Qcow2MetadataOps``'s (qcow2_metadata_ops.py), which this driver class
derives from.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: block/qcow2.c.
"""
from __future__ import annotations

import errno
import functools
import os
from typing import Any

from gqemu.coroutine import (aio_co_schedule, coroutine_fn,
                             qemu_co_mutex_lock, qemu_co_mutex_unlock,
                             qemu_coroutine_self, qemu_coroutine_yield)
from gqemu.block.driver import (
    BDRV_O_CHECK, BDRV_O_NO_BACKING, BDRV_O_RDWR, BDRV_REQ_MAY_UNMAP, BlockError,
    BLKDBG_EVENT, bdrv_register, error_report)
from gqemu.block.blkdebug_events import (
    BLKDBG_READ_AIO, BLKDBG_VMSTATE_LOAD, BLKDBG_VMSTATE_SAVE)
from gqemu.block.driver import bdrv_getlength as bdrv_node_getlength
from gqemu.block.block_int import BDRV_MAX_LENGTH
from gqemu.block.io import bdrv_co_preadv
from gqemu.block.io_misc import bdrv_run_co
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_memset, qemu_iovec_slice, qemu_iovec_to_buf
from gqemu.block.qcow2_cache import qcow2_cache_flush
from gqemu.block.qcow2_check import qcow2_co_check
from gqemu.block.qcow2_crypto import qcow2_co_preadv_encrypted
from gqemu.block.aio_task import (aio_task_pool_new, aio_task_pool_start_task,
                                 aio_task_pool_status, aio_task_pool_wait_all)
from gqemu.block.qcow2_alloc import qcow2_alloc_host_offset
from gqemu.block.qcow2_amend import (QCOW2_AMEND_OPTS, QCOW2_CREATE_ONLY_OPTS, QCOW2_CREATE_OPTS,
                                     qcow2_amend_options)
from gqemu.block.qcow2_data_file import (
    qcow2_data_file_info, qcow2_open_data_file, qcow2_take_data_file_options)
from gqemu.block.qcow2_link import qcow2_handle_l2meta
from gqemu.block.qcow2_cluster import qcow2_get_host_offset
from gqemu.block.qcow2_header import (
    QCOW2_COMPAT_LAZY_REFCOUNTS, QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY,
    qcow2_probe)
from gqemu.block.qcow2_l2 import (
    QCOW2_SUBCLUSTER_COMPRESSED, QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
    QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN)
from gqemu.block.qcow2_metadata_ops import Qcow2MetadataOps
from gqemu.block.qcow2_open import (
    QCOW2_CHAIN_KEY, backing_reference_error, qcow2_do_open, qcow2_open_backing)
from gqemu.block.qcow2_header_update import qcow2_mark_clean
from gqemu.block.qcow2_overlap import qcow2_pre_write_overlap_check
from gqemu.block.qcow2_resize import qcow2_co_truncate
from gqemu.block.qcow2_state import Qcow2BDS
from gqemu.block.qcow2_rw import (
    qcow2_co_preadv_compressed, qcow2_co_pwritev_task, qcow2_co_read_backing,
    qcow2_co_write_compressed_cluster)
from gqemu.block.qcow2_zstd import compression_type_name, qcow2_compress

EIO, ENOTSUP = errno.EIO, errno.ENOTSUP
QCOW2_MAX_WORKERS = 8          # parts of one request in flight at once


@bdrv_register
class BDRVQcow2State(Qcow2MetadataOps):
    """bdrv_qcow2: the vtable, and (as an instance) one image's state."""

    format_name = "qcow2"
    supports_backing = True
    create_opts = QCOW2_CREATE_OPTS

    amend_opts = QCOW2_AMEND_OPTS
    create_only_opts = QCOW2_CREATE_ONLY_OPTS

    bdrv_probe = staticmethod(qcow2_probe)

    # ------------------------------------------------------------- open

    def qcow2_open(self, bs: Qcow2BDS, options: dict, flags: int) -> None:
        """Open the image: validate, load L1/reftable/snapshots, open the
        backing chain, repair a dirty image.  Raises BlockError.
        Context: loop (drives the coroutine itself).  QEMU: qcow2_open."""
        chain = options.pop(QCOW2_CHAIN_KEY, ())
        backing_opts = {k[len("backing."):]: options.pop(k)
                        for k in [k for k in options if k.startswith("backing.")]}
        data_ref, data_opts = qcow2_take_data_file_options(options)
        self.read_only = not flags & BDRV_O_RDWR
        self.flags = flags
        self.open_options = dict(options)
        ret = bdrv_run_co(bs, qcow2_do_open, bs, flags, options)
        if isinstance(ret, BlockError):
            raise ret
        if ret is not None:
            raise BlockError(ret.errno, str(ret), ret.hint)
        qcow2_open_data_file(bs, data_ref, data_opts, flags)
        bs.total_sectors = self.size // 512
        backing_reference_error(options, backing_opts, flags)
        if self.backing_file and not flags & BDRV_O_NO_BACKING:
            qcow2_open_backing(bs, self, flags, chain, backing_opts)
        else:                      # unused: the generic layer refuses them
            options.update(("backing." + k, v) for k, v in backing_opts.items())
        if not self.read_only and self.incompatible_features & QCOW2_INCOMPAT_DIRTY \
                and not flags & BDRV_O_CHECK:
            res = bdrv_run_co(bs, qcow2_co_check, bs, 3)
            if res.ret < 0 or res.check_errors:
                raise BlockError(errno.EIO, "Could not repair dirty image: %s"
                                 % os.strerror(-res.ret if res.ret < 0 else EIO))
        bs.supported_zero_flags = BDRV_REQ_MAY_UNMAP
        self.opened = True

    bdrv_open = qcow2_open

    def qcow2_close(self, bs: Qcow2BDS) -> None:
        """Write back the caches and clear the dirty bit.  QEMU: qcow2_close."""
        if self.opened and not self.read_only and not self.disabled:
            bdrv_run_co(bs, qcow2_inactivate, bs)

    bdrv_close = qcow2_close

    def qcow2_amend(self, bs: Qcow2BDS, opts: dict, status_cb: Any,
                    force: bool = False) -> tuple[int, str]:
        """``qemu-img amend``: see qcow2_amend.py.  Context: loop.
        Returns: (0, "") or (-errno, message).  QEMU: qcow2_amend_options."""
        return bdrv_run_co(bs, qcow2_amend_options, bs, opts, status_cb, force)

    bdrv_amend_options = qcow2_amend

    def qcow2_getlength(self, bs: Qcow2BDS) -> int:
        return bs.total_sectors * 512

    bdrv_getlength = qcow2_getlength
    bdrv_co_truncate = staticmethod(qcow2_co_truncate)    # qcow2_resize.py

    def qcow2_refresh_limits(self, bs: Qcow2BDS) -> None:
        """QEMU: qcow2_refresh_limits."""
        bs.bl.request_alignment = 512 if self.crypt_method_header else 1   # the cipher's sector
        bs.bl.pdiscard_alignment = self.cluster_size
        bs.bl.pwrite_zeroes_alignment = self.subcluster_size

    bdrv_refresh_limits = qcow2_refresh_limits

    def qcow2_get_info(self, bs: Qcow2BDS) -> dict:
        """QEMU: qcow2_get_info."""
        return {"cluster_size": self.cluster_size,
                "vm_state_offset": self.qcow2_vm_state_offset()}

    bdrv_get_info = qcow2_get_info

    def qcow2_get_specific_info(self, bs: Qcow2BDS) -> dict:
        """The "Format specific information" of qemu-img/qemu-io info, in
        QEMU's print order.  QEMU: qcow2_get_specific_info."""
        info: dict = {"compat": "0.10" if self.qcow_version < 3 else "1.1",
                      "compression type": compression_type_name(
                          self.header.compression_type)}
        if self.qcow_version >= 3:
            info["lazy refcounts"] = bool(self.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS)
            from gqemu.block.qcow2_bitmap import Qcow2BitmapError, qcow2_get_bitmap_info_list
            try:
                bitmaps = bdrv_run_co(bs, qcow2_get_bitmap_info_list, bs)
            except Qcow2BitmapError:
                bitmaps = None
            if bitmaps is not None:
                info["bitmaps"] = bitmaps
        info["refcount bits"] = self.refcount_bits
        qcow2_data_file_info(bs, info)
        if self.crypt_method_header:
            info["encrypt"] = {"format": "aes"}
        if self.qcow_version >= 3:
            info["corrupt"] = bool(self.incompatible_features & QCOW2_INCOMPAT_CORRUPT)
            info["extended l2"] = self.extended_l2
        return info

    bdrv_get_specific_info = qcow2_get_specific_info

    @coroutine_fn
    def qcow2_co_writev_vmstate(self, bs: Qcow2BDS, qiov: QEMUIOVector, pos: int) -> int:
        """Save VM state past the end of the disk.  QEMU: qcow2_co_writev_vmstate."""
        BLKDBG_EVENT(bs.file, BLKDBG_VMSTATE_SAVE)
        offset = self.qcow2_vm_state_offset() + pos
        if offset > BDRV_MAX_LENGTH or qiov.size > BDRV_MAX_LENGTH - offset:
            return -errno.EIO       # (measured: the request past the area is checked)
        return self.qcow2_co_pwritev(bs, offset, qiov.size, qiov, 0)

    bdrv_co_writev_vmstate = qcow2_co_writev_vmstate

    @coroutine_fn
    def qcow2_co_readv_vmstate(self, bs: Qcow2BDS, qiov: QEMUIOVector, pos: int) -> int:
        """QEMU: qcow2_co_readv_vmstate."""
        BLKDBG_EVENT(bs.file, BLKDBG_VMSTATE_LOAD)
        offset = self.qcow2_vm_state_offset() + pos
        if offset > BDRV_MAX_LENGTH or qiov.size > BDRV_MAX_LENGTH - offset:
            return -errno.EIO
        return self.qcow2_co_preadv(bs, offset, qiov.size, qiov, 0)

    bdrv_co_readv_vmstate = qcow2_co_readv_vmstate

    def qcow2_vm_state_offset(self) -> int:
        """QEMU: qcow2_vm_state_offset."""
        return self.l1_vm_state_index << (self.cluster_bits + self.l2_bits)

    def qcow2_has_zero_init(self, bs: Qcow2BDS) -> int:
        return 0 if bs.backing is not None else 1

    bdrv_has_zero_init = qcow2_has_zero_init

    # ------------------------------------------------------------ reads

    @coroutine_fn
    def qcow2_co_preadv(self, bs: Qcow2BDS, offset: int, nbytes: int,
                        qiov: QEMUIOVector, flags: int) -> int:
        """Read guest data: map each run under the lock, then read it from
        the file, the backing file, a compressed cluster, or zeroes.
        Context: coroutine.  Returns: 0 or -errno.  QEMU: qcow2_co_preadv_part."""
        s = self
        done = 0
        while nbytes:
            if s.disabled:
                return -EIO
            qemu_co_mutex_lock(s.lock)
            ret, t, cur, host = qcow2_get_host_offset(bs, offset, nbytes)
            qemu_co_mutex_unlock(s.lock)
            if ret < 0:
                return ret
            if t == QCOW2_SUBCLUSTER_NORMAL:
                BLKDBG_EVENT(bs.file, BLKDBG_READ_AIO)
                if s.crypto is not None:
                    ret = qcow2_co_preadv_encrypted(bs, host, offset, cur, qiov, done)
                else:
                    child = s.data_file             # qcow2_data_child(bs)
                    ret = bdrv_co_preadv(bs.file if child is None else child, host, cur,
                                         qiov if done == 0 and cur == qiov.size
                                         else qemu_iovec_slice(qiov, done, cur), 0)
            elif t in (QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC):
                ret = qcow2_co_read_backing(bs, offset, cur, qiov, done)
            elif t == QCOW2_SUBCLUSTER_COMPRESSED:
                ret = qcow2_co_preadv_compressed(bs, host, offset, cur, qiov, done)
            else:
                qemu_iovec_memset(qiov, done, 0, cur)
                ret = 0
            if ret < 0:
                return ret
            offset += cur
            nbytes -= cur
            done += cur
        return 0

    bdrv_co_preadv = qcow2_co_preadv

    # ----------------------------------------------------------- writes

    @coroutine_fn
    def qcow2_co_pwritev(self, bs: Qcow2BDS, offset: int, nbytes: int,
                         qiov: QEMUIOVector, flags: int) -> int:
        """Allocating write: map or allocate as much contiguous host space
        as possible under the lock, write the data (see
        qcow2_co_pwritev_task; when the request needs more than one part,
        the parts run in an AioTaskPool), repeat.  Context: coroutine.
        Returns: 0 or -errno.
        QEMU: qcow2_co_pwritev_part / qcow2_co_pwritev_task."""
        s = self
        done = 0
        aio = None
        ret = 0
        while nbytes and aio_task_pool_status(aio) == 0:
            if s.disabled:
                ret = -EIO
                break
            qemu_co_mutex_lock(s.lock)
            ret, cur, host, metas = qcow2_alloc_host_offset(bs, offset, nbytes)
            if ret >= 0 and not s.has_data_file:     # data file writes hit no metadata
                ret = qcow2_pre_write_overlap_check(bs, 0, host, cur)
            if ret < 0:
                qcow2_handle_l2meta(bs, metas, False)
                qemu_co_mutex_unlock(s.lock)
                break
            qemu_co_mutex_unlock(s.lock)
            if aio is None and cur != nbytes:
                aio = aio_task_pool_new(QCOW2_MAX_WORKERS)
            part = qemu_iovec_slice(qiov, done, cur)
            if aio is None:
                ret = qcow2_co_pwritev_task(bs, host, offset, cur, part, metas)
                if ret < 0:
                    break
            else:
                # the part's data write runs in its own coroutine while the
                # next part is allocated (its L2 update comes later)
                aio_task_pool_start_task(aio, functools.partial(
                    qcow2_co_pwritev_task, bs, host, offset, cur, part, metas))
            offset += cur
            nbytes -= cur
            done += cur
        if aio is not None:
            aio_task_pool_wait_all(aio)
            if ret == 0:
                ret = aio_task_pool_status(aio)
        return ret

    bdrv_co_pwritev = qcow2_co_pwritev

    @coroutine_fn
    def qcow2_co_pwritev_compressed(self, bs: Qcow2BDS, offset: int, nbytes: int,
                                    qiov: QEMUIOVector) -> int:
        """Write whole clusters compressed (zlib or zstd, qcow2_zstd.py);
        the target must be unallocated.  Context: coroutine.
        QEMU: qcow2_co_pwritev_compressed_part."""
        s = self
        cs = s.cluster_size
        if s.has_data_file:
            return -ENOTSUP
        if nbytes == 0:
            # QEMU truncates the file to its own length here (a no-op)
            length = bdrv_node_getlength(bs.file.bs)
            return length if length < 0 else 0
        if offset & (cs - 1):
            return -errno.EINVAL
        if nbytes & (cs - 1) and offset + nbytes != bs.total_sectors * 512:
            return -errno.EINVAL            # checked before any cluster is written
        done = 0
        aio = None
        ret = 0
        while nbytes > done and aio_task_pool_status(aio) == 0:
            cur = min(cs, nbytes - done)
            if aio is None and cur != nbytes:
                aio = aio_task_pool_new(QCOW2_MAX_WORKERS)
            task = functools.partial(self._compressed_task, bs, offset + done, cur,
                                     qemu_iovec_slice(qiov, done, cur))
            if aio is None:
                ret = task()
            else:
                aio_task_pool_start_task(aio, task)
            done += cur
        if aio is not None:
            aio_task_pool_wait_all(aio)
            if ret == 0:
                ret = aio_task_pool_status(aio)
        return ret

    @coroutine_fn
    def _compressed_task(self, bs: Qcow2BDS, offset: int, cur: int,
                         qiov: QEMUIOVector) -> int:
        """One cluster: compress it (QEMU does that in a worker thread, so
        every task of the request gets this far before any allocates; here
        the coroutine yields once to the event loop), then store it
        compressed, or normally if it does not shrink.
        QEMU: qcow2_co_pwritev_compressed_task."""
        cs = self.cluster_size
        buf = bytearray(cs)
        qemu_iovec_to_buf(qiov, 0, buf, cur)
        out = qcow2_compress(self.header.compression_type, bytes(buf), cs - 1)
        aio_co_schedule(bs.aio_context, qemu_coroutine_self())  # type: ignore[arg-type]
        qemu_coroutine_yield()
        if out is None:
            return self.qcow2_co_pwritev(bs, offset, cur, qiov, 0)
        return qcow2_co_write_compressed_cluster(bs, offset, out)

    bdrv_co_pwritev_compressed = qcow2_co_pwritev_compressed


@coroutine_fn
def qcow2_inactivate(bs: Qcow2BDS) -> int:
    """Flush both caches and mark the image clean.  QEMU: qcow2_inactivate."""
    s = bs.opaque
    result = 0
    from gqemu.block.qcow2_bitmap import Qcow2BitmapError
    from gqemu.block.qcow2_bitmap_sync import qcow2_store_persistent_dirty_bitmaps
    try:
        qcow2_store_persistent_dirty_bitmaps(bs, True)
    except Qcow2BitmapError as e:
        result = -errno.EINVAL
        error_report("Lost persistent bitmaps during inactivation of node '%s': %s"
                     % (bs.node_name, e.msg))
    ret = qcow2_cache_flush(bs, s.l2_table_cache)
    if ret < 0:
        result = ret
        error_report("Failed to flush the L2 table cache: %s" % os.strerror(-ret))
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret < 0:
        result = ret
        error_report("Failed to flush the refcount block cache: %s" % os.strerror(-ret))
    if result == 0:
        qcow2_mark_clean(bs)
    return result
