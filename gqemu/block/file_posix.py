"""The ``file`` protocol driver: a host file through the thread pool.

``raw_co_preadv`` -> ``raw_co_prw`` -> ``paio_submit_co`` ->
``thread_pool_submit_co(aio_worker)``, as in the seed.  Cache modes come in
as open flags (BDRV_O_NOCACHE = O_DIRECT with the probed alignment as
``request_alignment``; writethrough is FUA emulated by a flush above us;
BDRV_O_NO_FLUSH skips flushes).  Image locking uses OFD locks on bytes
100+perm and 200+perm as QEMU >= 2.10 (option ``locking=auto|on|off``).

Option ``aio=threads|native|io_uring|nowait``: ``threads`` (the default) is
the faithful path of the seed.  ``io_uring`` is QEMU's io_uring engine
(gqemu.block.io_uring: reads, writes and flushes go through the context's
ring; no thread).  ``native`` is QEMU's Linux AIO, which needs O_DIRECT as in
QEMU (gqemu.block.linux_aio: reads and writes through the context's
Linux AIO context; flushes stay on the thread pool, as in QEMU 7.2).  ``nowait`` (gqemu's own opt-in
fast path) first tries ``os.preadv(..., RWF_NOWAIT)`` in the coroutine and
goes to the thread pool only when the data is not in the page cache
(EAGAIN) or the read is short.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/raw-posix.c (2.8), locking from block/file-posix.c (2.10).
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
from typing import Any, Callable, Optional

from gqemu.block.driver import (BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID,
                                BDRV_BLOCK_ZERO, BDRV_O_IO_URING, BDRV_O_NATIVE_AIO,
                                BDRV_O_NOCACHE, BDRV_O_NOWAIT,
                                BDRV_O_RDWR, BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK, BLK_PERM_ALL,
                                BlockDriver, BlockDriverState, BlockError,
                                _PERM_NAMES, bdrv_get_aio_context, bdrv_register,
                                qemu_opt_bool, qemu_opt_str)
from gqemu.block.qiov import QEMUIOVector
from gqemu.block.trace_events import trace_paio_submit, trace_paio_submit_co
from gqemu.coroutine import coroutine_fn
from gqemu.threadpool import (aio_get_thread_pool, thread_pool_submit_aio,
                              thread_pool_submit_co)
from gqemu.threadpool.aiocb import (QEMU_AIO_DISCARD, QEMU_AIO_FLUSH,
                                    QEMU_AIO_MISALIGNED, QEMU_AIO_READ,
                                    QEMU_AIO_WRITE, QEMU_AIO_WRITE_ZEROES,
                                    RawPosixAIOData, aio_worker)

__all__ = ["BdrvFile", "paio_submit", "paio_submit_co", "raw_co_prw"]

RAW_LOCK_PERM_BASE = 100
RAW_LOCK_SHARED_BASE = 200
_FLOCK = "hhqqi4x"
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_PAGE = mmap.PAGESIZE
_io_uring: Any = None        # gqemu.block.io_uring, imported by the first aio=io_uring open
_linux_aio: Any = None       # gqemu.block.linux_aio, imported by the first aio=native open


def _setup_aio_engine(ctx: Any, aio: str) -> None:
    """The context's io_uring ring or Linux AIO context, made on first use
    (the engine's module, and ctypes, imported then: not on start-up).
    Raises BlockError with QEMU 7.2's words.  QEMU: raw_open_common's
    aio_setup_linux_io_uring / aio_setup_linux_aio."""
    global _io_uring, _linux_aio
    try:
        if aio == "io_uring":
            import gqemu.block.io_uring as _io_uring
            _io_uring.aio_setup_linux_io_uring(ctx)
        else:
            import gqemu.block.linux_aio as _linux_aio
            _linux_aio.aio_setup_linux_aio(ctx)
    except OSError as e:
        err = e.errno or errno.EIO
        if aio == "io_uring":   # (QEMU 7.2 prints no errno: liburing leaves errno 0)
            msg = "Unable to use io_uring: failed to init linux io_uring ring"
        else:
            msg = "Unable to use native AIO: %s: %s" % (e.strerror, os.strerror(err))
        raise BlockError(err, msg) from None


def _lock_op(fd: int, cmd: int, ltype: int, start: int) -> int:
    res = fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, ltype, os.SEEK_SET, start, 1, 0))
    return struct.unpack(_FLOCK, res)[0]


def qemu_lock_fd_test(fd: int, start: int) -> bool:
    """Whether another open file description holds a lock on ``start``.
    QEMU: qemu_lock_fd_test (exclusive)."""
    return _lock_op(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, start) != fcntl.F_UNLCK


def raw_is_io_aligned(fd: int, buf: memoryview) -> bool:
    """Whether a read of ``buf`` at offset 0 gets past O_DIRECT's alignment
    check (any error but EINVAL counts as aligned).  QEMU: raw_is_io_aligned."""
    try:
        os.preadv(fd, [buf], 0)
    except OSError as e:
        return e.errno != errno.EINVAL
    return True


def _buf_address(mv: memoryview) -> Optional[int]:
    import ctypes         # only O_DIRECT needs it: kept off the start-up path
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(mv))
    except (TypeError, ValueError):
        return None          # read-only or empty: treat as misaligned


@bdrv_register
class BdrvFile(BlockDriver):
    """A host file.  QEMU: bdrv_file (BDRVRawState is this instance)."""

    format_name = "file"
    protocol_name = "file"
    create_opts: tuple[tuple[str, str, str], ...] = (
        ("size", "size", "Virtual disk size"),
        ("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
        ("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
        ("extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"),
    )

    def __init__(self) -> None:
        self.fd = -1
        self.open_flags = 0
        self.needs_alignment = False
        self.buf_align = 1
        self.request_alignment = 1
        self.max_transfer = 0          # block devices: from BLKSECTGET
        self.has_discard = True
        self.has_write_zeroes = True
        self.discard_zeroes = True
        self.has_fallocate = True
        self.use_lock = False
        self.use_nowait = False
        self.use_linux_io_uring = False
        self.use_linux_aio = False
        self.nowait_hits = 0
        self.nowait_misses = 0
        self.perm = 0
        self.shared_perm = BLK_PERM_ALL
        self.locked_perm = 0           # bytes 100+i we hold
        self.locked_shared_perm = 0    # bytes 200+i we hold (perms not shared)

    # ------------------------------------------------------------- open

    def raw_open(self, bs: BlockDriverState, filename: str, options: dict,
                 flags: int) -> None:
        """Open the host file.  Raises BlockError.  QEMU: raw_open_common."""
        filename = str(options.pop("filename", filename))
        if filename.startswith("file:"):
            filename = filename[5:]
            if ":" in filename.split("/")[0]:
                # would read as a protocol prefix: QEMU names it ./NAME
                # (bdrv_parse_filename_strip_prefix)
                filename = "./" + filename
        aio = qemu_opt_str(options, "aio", "native" if flags & BDRV_O_NATIVE_AIO
                           else "io_uring" if flags & BDRV_O_IO_URING else "threads")
        if aio not in ("threads", "native", "io_uring", "nowait"):
            raise BlockError(errno.EINVAL, "invalid parameter value: %s" % aio)
        locking = qemu_opt_str(options, "locking", "auto")
        if locking not in ("auto", "on", "off"):
            raise BlockError(errno.EINVAL, "invalid parameter value: %s" % locking)
        self.use_nowait = (aio == "nowait" or bool(flags & BDRV_O_NOWAIT)) and bool(_RWF_NOWAIT)
        for key in ("drop-cache", "x-check-cache-dropped"):    # no effect in gqemu
            qemu_opt_bool(options, key, False)
        self.use_lock = locking != "off"
        bs.filename = filename
        oflags = os.O_CLOEXEC | (os.O_RDWR if flags & BDRV_O_RDWR else os.O_RDONLY)
        if flags & BDRV_O_NOCACHE:
            oflags |= os.O_DIRECT
        try:
            fd = os.open(filename, oflags)
        except OSError as e:
            raise BlockError(e.errno or errno.EIO, "Could not open '%s': %s"
                             % (filename, os.strerror(e.errno or errno.EIO))) from None
        if aio == "native" and not oflags & os.O_DIRECT:
            os.close(fd)         # (Linux AIO only with O_DIRECT; io_uring needs no check)
            raise BlockError(errno.EINVAL, "aio=native was specified, but it requires "
                             "cache.direct=on, which was not specified.")
        st = os.fstat(fd)
        if self.format_name == "file" and not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise BlockError(errno.EINVAL, "'file' driver requires '%s' to be a regular file"
                             % filename)
        if self.format_name != "file" and not (stat.S_ISCHR(st.st_mode)
                                               or stat.S_ISBLK(st.st_mode)):
            os.close(fd)                   # host_device, host_cdrom (host_device.py)
            raise BlockError(errno.EINVAL, "'%s' driver requires '%s' to be either a "
                             "character or block device" % (self.format_name, filename))
        if aio in ("io_uring", "native"):
            try:
                _setup_aio_engine(bdrv_get_aio_context(bs), aio)
            except BlockError:
                os.close(fd)
                raise
        self.use_linux_io_uring = aio == "io_uring"
        self.use_linux_aio = aio == "native"
        self.fd = fd
        self.open_flags = oflags
        if not stat.S_ISREG(st.st_mode):
            self.discard_zeroes = self.has_write_zeroes = False
        if flags & BDRV_O_NOCACHE:
            self.needs_alignment = True
            self.raw_probe_alignment(bs)

    bdrv_file_open = raw_open

    def raw_probe_alignment(self, bs: BlockDriverState) -> None:
        """Find the O_DIRECT request and buffer alignments by trying reads.
        Raises BlockError.  QEMU: raw_probe_alignment."""
        top = max(4096, _PAGE)             # MAX(MAX_BLOCKSIZE, page size)
        area = mmap.mmap(-1, 2 * top)
        mv = memoryview(area)
        try:
            # QEMU's guesses: 1 byte first (a read that works at any size, e.g.
            # of a file whose blocks are all holes on ext4, means "the safe
            # value", max_align), then 512..4096
            aligns = (1, 512, 1024, 2048, 4096)
            found = next((a for a in aligns if raw_is_io_aligned(self.fd, mv[:a])), 0)
            found = top if found == 1 else found
            buf_found = next((a for a in aligns
                              if raw_is_io_aligned(self.fd, mv[a:a + top])), 0)
            buf_found = found if buf_found == 1 else buf_found
        finally:
            mv.release()
            area.close()
        if not found or not buf_found:
            raise BlockError(errno.EINVAL, "Could not find working O_DIRECT alignment")
        self.request_alignment = found
        self.buf_align = buf_found

    def raw_close(self, bs: BlockDriverState) -> None:
        """QEMU: raw_close.  Closing the fd drops its OFD locks."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    bdrv_close = raw_close

    def raw_refresh_limits(self, bs: BlockDriverState) -> None:
        """QEMU: raw_refresh_limits."""
        bs.bl.request_alignment = self.request_alignment
        bs.bl.max_transfer = self.max_transfer
        bs.bl.min_mem_alignment = self.buf_align
        bs.bl.opt_mem_alignment = max(self.buf_align, _PAGE)
        bs.supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK

    bdrv_refresh_limits = raw_refresh_limits

    def raw_getlength(self, bs: BlockDriverState) -> int:
        """QEMU: raw_getlength.  Returns bytes or -errno."""
        try:
            st = os.fstat(self.fd)
            if stat.S_ISREG(st.st_mode):
                return st.st_size
            return os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as e:
            return -(e.errno or errno.EIO)

    bdrv_getlength = raw_getlength

    def raw_truncate(self, bs: BlockDriverState, offset: int) -> int:
        """QEMU: raw_truncate."""
        try:
            os.ftruncate(self.fd, offset)
        except OSError as e:
            return -(e.errno or errno.EIO)
        return 0

    bdrv_truncate = raw_truncate

    def raw_has_zero_init(self, bs: BlockDriverState) -> int:
        return 1

    bdrv_has_zero_init = raw_has_zero_init

    # ---------------------------------------------------------- locking

    def raw_apply_lock_bytes(self, perm_lock_bits: int, shared_perm_lock_bits: int,
                             unlock: bool) -> None:
        """Hold a shared lock on 100+i for each perm we use and on 200+i for
        each perm we do not share.  QEMU: raw_apply_lock_bytes."""
        fd = self.fd
        for i in range(len(_PERM_NAMES)):
            bit = 1 << i
            for base, want, attr in ((RAW_LOCK_PERM_BASE, perm_lock_bits, "locked_perm"),
                                     (RAW_LOCK_SHARED_BASE, shared_perm_lock_bits,
                                      "locked_shared_perm")):
                held = getattr(self, attr)
                try:
                    if want & bit and not held & bit:
                        _lock_op(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, base + i)
                        setattr(self, attr, held | bit)
                    elif unlock and held & bit and not want & bit:
                        _lock_op(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, base + i)
                        setattr(self, attr, held & ~bit)
                except OSError as e:
                    raise BlockError(e.errno or errno.EAGAIN,
                                     "Failed to lock byte %d" % (base + i)) from None

    def raw_check_lock_bytes(self, bs: BlockDriverState, perm: int, shared: int) -> None:
        """Fail if another user does not share a perm we want, or uses one
        we do not share.  QEMU: raw_check_lock_bytes."""
        hint = "Is another process using the image [%s]?" % bs.filename
        for i, name in enumerate(_PERM_NAMES):
            if perm & (1 << i) and qemu_lock_fd_test(self.fd, RAW_LOCK_SHARED_BASE + i):
                raise BlockError(errno.EAGAIN, 'Failed to get "%s" lock' % name, hint)
        for i, name in enumerate(_PERM_NAMES):
            if not shared & (1 << i) and qemu_lock_fd_test(self.fd, RAW_LOCK_PERM_BASE + i):
                raise BlockError(errno.EAGAIN, 'Failed to get shared "%s" lock' % name,
                                 hint)

    def raw_check_perm(self, bs: BlockDriverState, perm: int, shared: int) -> None:
        """Take the new lock bytes, then test for conflicts; on a conflict
        go back to the old locks.  Raises BlockError.
        QEMU: raw_check_perm (raw_handle_perm_lock PREPARE/ABORT)."""
        if not self.use_lock:
            return
        self.raw_apply_lock_bytes(self.perm | perm, ~self.shared_perm & BLK_PERM_ALL
                                  | ~shared & BLK_PERM_ALL, False)
        try:
            self.raw_check_lock_bytes(bs, perm, shared)
        except BlockError:
            self.raw_apply_lock_bytes(self.perm, ~self.shared_perm & BLK_PERM_ALL, True)
            raise

    bdrv_check_perm = raw_check_perm

    def raw_set_perm(self, bs: BlockDriverState, perm: int, shared: int) -> None:
        """QEMU: raw_set_perm (raw_handle_perm_lock COMMIT)."""
        if self.use_lock:
            self.raw_apply_lock_bytes(perm, ~shared & BLK_PERM_ALL, True)
        self.perm, self.shared_perm = perm, shared

    bdrv_set_perm = raw_set_perm

    # -------------------------------------------------------------- I/O

    @coroutine_fn
    def raw_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                      qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: raw_co_preadv (raw-posix)."""
        return raw_co_prw(bs, offset, nbytes, qiov, QEMU_AIO_READ)

    bdrv_co_preadv = raw_co_preadv

    @coroutine_fn
    def raw_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                       qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: raw_co_pwritev (raw-posix)."""
        return raw_co_prw(bs, offset, nbytes, qiov, QEMU_AIO_WRITE)

    bdrv_co_pwritev = raw_co_pwritev

    def raw_aio_flush(self, bs: BlockDriverState, cb: Callable[[Any, int], Any],
                      opaque: Any) -> Any:
        """fdatasync in a worker; ``cb(opaque, ret)`` from the loop.
        QEMU: raw_aio_flush (2.8)."""
        if self.fd < 0:
            return None
        if self.use_linux_io_uring:
            return _io_uring.luring_aio_flush(
                _io_uring.aio_get_linux_io_uring(bdrv_get_aio_context(bs)), self.fd, cb, opaque)
        return paio_submit(bs, self.fd, 0, None, 0, cb, opaque, QEMU_AIO_FLUSH)

    bdrv_aio_flush = raw_aio_flush

    @coroutine_fn
    def raw_co_pdiscard(self, bs: BlockDriverState, offset: int, nbytes: int) -> int:
        """Punch a hole; -ENOTSUP turns discard off for good.
        QEMU: raw_aio_pdiscard."""
        if not self.has_discard:
            return -errno.ENOTSUP
        ret = paio_submit_co(bs, self.fd, offset, None, nbytes, QEMU_AIO_DISCARD)
        if ret == -errno.ENOTSUP:
            self.has_discard = False
        return ret

    bdrv_co_pdiscard = raw_co_pdiscard

    @coroutine_fn
    def raw_co_pwrite_zeroes(self, bs: BlockDriverState, offset: int, nbytes: int,
                             flags: int) -> int:
        """fallocate zero-range (or discard when unmapping is allowed);
        -ENOTSUP makes io.py write zeroes.  QEMU: raw_co_pwrite_zeroes."""
        if not flags & BDRV_REQ_MAY_UNMAP:
            if not self.has_write_zeroes:
                return -errno.ENOTSUP
            ret = paio_submit_co(bs, self.fd, offset, None, nbytes, QEMU_AIO_WRITE_ZEROES)
            if ret == -errno.ENOTSUP:
                self.has_write_zeroes = False
            return ret
        if self.discard_zeroes and self.has_discard:
            ret = paio_submit_co(bs, self.fd, offset, None, nbytes, QEMU_AIO_DISCARD)
            if ret == -errno.ENOTSUP:
                self.has_discard = False
            return ret
        return -errno.ENOTSUP

    bdrv_co_pwrite_zeroes = raw_co_pwrite_zeroes

    @coroutine_fn
    def raw_co_get_block_status(self, bs: BlockDriverState, offset: int,
                                nbytes: int) -> tuple[int, int, int, Any]:
        """SEEK_DATA/SEEK_HOLE: a data extent up to the next hole (a partial
        block at the end of the file rounded up to request_alignment), a
        hole up to the next data, or the trailing hole.  No information
        means data.  QEMU: raw_co_block_status (find_allocation)."""
        valid = BDRV_BLOCK_OFFSET_VALID
        try:
            data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:       # in a hole that runs to EOF
                return BDRV_BLOCK_ZERO | valid, nbytes, offset, bs
            return BDRV_BLOCK_DATA | valid, nbytes, offset, bs
        if data > offset:                    # in a hole
            return BDRV_BLOCK_ZERO | valid, min(nbytes, data - offset), offset, bs
        try:
            hole = os.lseek(self.fd, offset, os.SEEK_HOLE)
        except OSError:
            return BDRV_BLOCK_DATA | valid, nbytes, offset, bs
        align = max(1, bs.bl.request_alignment)
        pnum = -(-(hole - offset) // align) * align
        return BDRV_BLOCK_DATA | valid, max(align, min(nbytes, pnum)), offset, bs

    bdrv_co_get_block_status = raw_co_get_block_status


def bdrv_qiov_is_aligned(bs: BlockDriverState, qiov: QEMUIOVector) -> bool:
    """Whether every buffer address and length suits O_DIRECT.
    QEMU: bdrv_qiov_is_aligned."""
    align = bs.bl.min_mem_alignment
    for mv in qiov.iov:
        addr = _buf_address(mv)
        if addr is None or addr % align or len(mv) % align:
            return False
    return True


@coroutine_fn
def paio_submit_co(bs: BlockDriverState, fd: int, offset: int,
                   qiov: Optional[QEMUIOVector], count: int, aio_type: int) -> int:
    """Hand one request to the thread pool and yield until it is done.
    Context: coroutine.  Returns: 0 or -errno.  QEMU: paio_submit_co."""
    s: BdrvFile = bs.opaque  # type: ignore[assignment]
    acb = RawPosixAIOData(fd, offset, count, aio_type, qiov.iov if qiov is not None else None)
    if s.needs_alignment:
        acb.is_odirect = True
        acb.buf_align = max(s.buf_align, s.request_alignment)
    acb.has_fallocate = s.has_fallocate
    if trace_paio_submit_co.enabled:
        trace_paio_submit_co(offset, count, aio_type)
    pool = aio_get_thread_pool(bdrv_get_aio_context(bs))
    return thread_pool_submit_co(pool, aio_worker, acb)


def paio_submit(bs: BlockDriverState, fd: int, offset: int, qiov: Optional[QEMUIOVector],
                count: int, cb: Callable[[Any, int], Any], opaque: Any, aio_type: int) -> Any:
    """Hand one request to the thread pool with a completion callback.
    Context: loop or coroutine.  Returns: the pool's acb.  QEMU: paio_submit."""
    acb = RawPosixAIOData(fd, offset, count, aio_type, qiov.iov if qiov is not None else None)
    pool = aio_get_thread_pool(bdrv_get_aio_context(bs))
    req = thread_pool_submit_aio(pool, aio_worker, acb, cb, opaque)
    if trace_paio_submit.enabled:
        trace_paio_submit(req, opaque, offset, count, aio_type)
    return req


@coroutine_fn
def raw_co_prw(bs: BlockDriverState, offset: int, nbytes: int,
               qiov: QEMUIOVector, aio_type: int) -> int:
    """Mark misaligned O_DIRECT buffers, try the RWF_NOWAIT fast path when
    enabled, else submit to the pool.  Context: coroutine.
    Returns: 0 or -errno.  QEMU: raw_co_prw."""
    s: BdrvFile = bs.opaque  # type: ignore[assignment]
    if s.fd < 0:
        return -errno.EIO
    if s.needs_alignment and not bdrv_qiov_is_aligned(bs, qiov):
        aio_type |= QEMU_AIO_MISALIGNED
    elif s.use_linux_io_uring:
        return _io_uring.luring_co_submit(  # type: ignore[no-any-return]
            bs, _io_uring.aio_get_linux_io_uring(bdrv_get_aio_context(bs)),
            s.fd, offset, qiov, aio_type)
    elif s.use_linux_aio:
        return _linux_aio.laio_co_submit(  # type: ignore[no-any-return]
            bs, _linux_aio.aio_get_linux_aio(bdrv_get_aio_context(bs)),
            s.fd, offset, qiov, aio_type)
    elif s.needs_alignment:
        pass
    elif s.use_nowait and aio_type == QEMU_AIO_READ:
        try:
            n = os.preadv(s.fd, qiov.iov, offset, _RWF_NOWAIT)
        except OSError as e:
            if e.errno == errno.EOPNOTSUPP:
                s.use_nowait = False
            n = -1               # EAGAIN (or any error): the pool decides
        if n == nbytes:
            s.nowait_hits += 1
            return 0
        s.nowait_misses += 1
    return paio_submit_co(bs, s.fd, offset, qiov, nbytes, aio_type)
