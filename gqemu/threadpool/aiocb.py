"""Worker-thread side of file-posix: ``aio_worker`` and the ``handle_aiocb_*``
functions.  The only code that runs in worker threads besides the pool.

A worker sees nothing but its ``RawPosixAIOData``: the fd, the offset, and
the caller's buffers as memoryviews, which ``os.preadv``/``os.pwritev`` fill
or drain directly (no copy).  OS errors become ``-errno`` in one place,
``aio_worker``; a short read is zero-filled and succeeds, a short write is
-EINVAL, as in QEMU.

Must not import: gqemu.block or anything above it; never touches
greenlets, the hub, or loop objects.
QEMU: block/raw-posix.c (2.8): aio_worker, handle_aiocb_*.
"""
from __future__ import annotations

import errno
import mmap
import os
from typing import Any, Optional

from gqemu.trace import trace_event

__all__ = [
    "RawPosixAIOData", "aio_worker", "handle_aiocb_rw", "handle_aiocb_rw_vector",
    "handle_aiocb_rw_linear", "handle_aiocb_flush", "handle_aiocb_discard",
    "handle_aiocb_write_zeroes", "qemu_preadv", "qemu_pwritev",
    "QEMU_AIO_READ", "QEMU_AIO_WRITE", "QEMU_AIO_IOCTL", "QEMU_AIO_FLUSH",
    "QEMU_AIO_DISCARD", "QEMU_AIO_WRITE_ZEROES", "QEMU_AIO_TYPE_MASK",
    "QEMU_AIO_MISALIGNED", "QEMU_AIO_BLKDEV",
]

trace_handle_aiocb_rw = trace_event("handle_aiocb_rw",
                                    "fd %d offset %d count %d type %d niov %d")

QEMU_AIO_READ = 0x0001
QEMU_AIO_WRITE = 0x0002
QEMU_AIO_IOCTL = 0x0004
QEMU_AIO_FLUSH = 0x0008
QEMU_AIO_DISCARD = 0x0010
QEMU_AIO_WRITE_ZEROES = 0x0020
QEMU_AIO_TYPE_MASK = (QEMU_AIO_READ | QEMU_AIO_WRITE | QEMU_AIO_IOCTL |
                      QEMU_AIO_FLUSH | QEMU_AIO_DISCARD | QEMU_AIO_WRITE_ZEROES)
QEMU_AIO_MISALIGNED = 0x1000
QEMU_AIO_BLKDEV = 0x2000

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc: Any = None


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with a mode (os.posix_fallocate has none).  Raises OSError."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                  ctypes.c_int64]
        _libc = lib
    if _libc.fallocate(fd, mode, offset, length) != 0:
        import ctypes
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class RawPosixAIOData:
    """One request for a worker.  QEMU: RawPosixAIOData."""

    __slots__ = ("aio_fildes", "aio_iov", "aio_niov", "aio_nbytes", "aio_offset",
                 "aio_type", "buf_align", "is_odirect", "has_fallocate",
                 "discard_zeroes")

    def __init__(self, fd: int, offset: int, nbytes: int, aio_type: int,
                 iov: Optional[list] = None) -> None:
        self.aio_fildes = fd
        self.aio_offset = offset
        self.aio_nbytes = nbytes
        self.aio_type = aio_type
        self.aio_iov = iov if iov is not None else []
        self.aio_niov = len(self.aio_iov)
        self.buf_align = 4096
        self.is_odirect = False
        self.has_fallocate = True
        self.discard_zeroes = True


def qemu_preadv(fd: int, iov: list, offset: int) -> int:
    """QEMU: qemu_preadv."""
    return os.preadv(fd, iov, offset)


def qemu_pwritev(fd: int, iov: list, offset: int) -> int:
    """QEMU: qemu_pwritev."""
    return os.pwritev(fd, iov, offset)


def handle_aiocb_rw_vector(aiocb: RawPosixAIOData) -> int:
    """One preadv/pwritev straight into the caller's buffers.
    Context: worker.  Returns: bytes transferred.  Raises OSError.
    QEMU: handle_aiocb_rw_vector."""
    if aiocb.aio_type & QEMU_AIO_WRITE:
        return qemu_pwritev(aiocb.aio_fildes, aiocb.aio_iov, aiocb.aio_offset)
    return qemu_preadv(aiocb.aio_fildes, aiocb.aio_iov, aiocb.aio_offset)


def handle_aiocb_rw_linear(aiocb: RawPosixAIOData, buf: memoryview) -> int:
    """pread/pwrite until done or EOF.  Context: worker.
    Returns: bytes transferred.  Raises OSError.
    QEMU: handle_aiocb_rw_linear."""
    offset = 0
    fd = aiocb.aio_fildes
    nbytes = aiocb.aio_nbytes
    is_write = aiocb.aio_type & QEMU_AIO_WRITE
    while offset < nbytes:
        try:
            if is_write:
                n = os.pwrite(fd, buf[offset:nbytes], aiocb.aio_offset + offset)
            else:
                n = os.preadv(fd, [buf[offset:nbytes]], aiocb.aio_offset + offset)
        except OSError as e:
            # O_DIRECT reads past a non-aligned EOF fail with EINVAL: EOF.
            if (e.errno == errno.EINVAL and aiocb.is_odirect and not is_write
                    and offset > 0):
                break
            raise
        if n == 0:
            break
        offset += n
    return offset


def handle_aiocb_rw(aiocb: RawPosixAIOData) -> int:
    """Vectored I/O when the buffers are usable as they are, else one
    aligned bounce buffer.  Context: worker.  Returns: bytes transferred.
    Raises OSError.  QEMU: handle_aiocb_rw."""
    if trace_handle_aiocb_rw.enabled:
        trace_handle_aiocb_rw(aiocb.aio_fildes, aiocb.aio_offset, aiocb.aio_nbytes,
                              aiocb.aio_type, aiocb.aio_niov)
    if not aiocb.aio_type & QEMU_AIO_MISALIGNED:
        if aiocb.aio_niov == 1:
            return handle_aiocb_rw_linear(aiocb, aiocb.aio_iov[0])
        nbytes = handle_aiocb_rw_vector(aiocb)
        if nbytes == aiocb.aio_nbytes or nbytes == 0:
            return nbytes
        # A short transfer: finish it through the bounce path below (QEMU
        # falls through the same way).
    # Misaligned buffers (O_DIRECT): gather into an aligned bounce buffer.
    size = max(aiocb.aio_nbytes, 1)
    size = -(-size // aiocb.buf_align) * aiocb.buf_align
    bounce = memoryview(mmap.mmap(-1, size))
    try:
        if aiocb.aio_type & QEMU_AIO_WRITE:
            pos = 0
            for mv in aiocb.aio_iov:
                bounce[pos:pos + len(mv)] = mv
                pos += len(mv)
        nbytes = handle_aiocb_rw_linear(aiocb, bounce)
        if not aiocb.aio_type & QEMU_AIO_WRITE:
            pos = 0
            for mv in aiocb.aio_iov:
                take = min(len(mv), nbytes - pos)
                if take <= 0:
                    break
                mv[:take] = bounce[pos:pos + take]
                pos += take
        return nbytes
    finally:
        bounce.release()


def handle_aiocb_flush(aiocb: RawPosixAIOData) -> int:
    """fdatasync.  Context: worker.  Returns: 0.  Raises OSError.
    QEMU: handle_aiocb_flush."""
    os.fdatasync(aiocb.aio_fildes)
    return 0


_NOTSUP = (errno.ENODEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY)


def handle_aiocb_discard(aiocb: RawPosixAIOData) -> int:
    """Punch a hole.  Context: worker.  Returns: 0 or -ENOTSUP.
    Raises OSError.  QEMU: handle_aiocb_discard."""
    if not aiocb.has_fallocate:
        return -errno.ENOTSUP
    try:
        _fallocate(aiocb.aio_fildes, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   aiocb.aio_offset, aiocb.aio_nbytes)
    except OSError as e:
        if e.errno in _NOTSUP:
            return -errno.ENOTSUP
        raise
    return 0


def handle_aiocb_write_zeroes(aiocb: RawPosixAIOData) -> int:
    """Zero a range with fallocate: ZERO_RANGE, else PUNCH_HOLE (then
    allocate back); -ENOTSUP lets the generic layer write zeroes.
    Context: worker.  Returns: 0 or -ENOTSUP.  Raises OSError.
    QEMU: handle_aiocb_write_zeroes."""
    if not aiocb.has_fallocate:
        return -errno.ENOTSUP
    fd, off, n = aiocb.aio_fildes, aiocb.aio_offset, aiocb.aio_nbytes
    try:
        _fallocate(fd, FALLOC_FL_ZERO_RANGE, off, n)
        return 0
    except OSError as e:
        if e.errno not in _NOTSUP and e.errno != errno.EINVAL:
            raise
    try:
        _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n)
        try:
            _fallocate(fd, 0, off, n)
        except OSError:
            pass
        return 0
    except OSError as e:
        if e.errno in _NOTSUP or e.errno == errno.EINVAL:
            return -errno.ENOTSUP
        raise


def aio_worker(arg: RawPosixAIOData) -> int:
    """Run one request and map the result: 0 for a full transfer, a short
    read zero-filled to success, a short write -EINVAL, an OSError -errno.
    Context: worker thread.  Returns: 0 or -errno.  QEMU: aio_worker."""
    aiocb = arg
    typ = aiocb.aio_type & QEMU_AIO_TYPE_MASK
    try:
        if typ == QEMU_AIO_READ:
            ret = handle_aiocb_rw(aiocb)
            nbytes = aiocb.aio_nbytes
            if 0 <= ret < nbytes:
                _iov_memset(aiocb.aio_iov, ret, nbytes - ret)
                ret = nbytes
            return 0 if ret == nbytes else -errno.EINVAL
        if typ == QEMU_AIO_WRITE:
            ret = handle_aiocb_rw(aiocb)
            return 0 if ret == aiocb.aio_nbytes else -errno.EINVAL
        if typ == QEMU_AIO_FLUSH:
            return handle_aiocb_flush(aiocb)
        if typ == QEMU_AIO_DISCARD:
            return handle_aiocb_discard(aiocb)
        if typ == QEMU_AIO_WRITE_ZEROES:
            return handle_aiocb_write_zeroes(aiocb)
        return -errno.EINVAL
    except OSError as e:
        return -(e.errno or errno.EIO)


def _iov_memset(iov: list, offset: int, nbytes: int) -> None:
    for mv in iov:
        n = len(mv)
        if offset >= n:
            offset -= n
            continue
        take = min(n - offset, nbytes)
        mv[offset:offset + take] = bytes(take)
        nbytes -= take
        offset = 0
        if nbytes <= 0:
            break
