"""Resizing a node: the generic checks of ``bdrv_co_truncate`` and the raw
format's and the file protocol's parts of it (preallocation ``off``,
``falloc``, ``full``).  A format driver resizes itself through its
``bdrv_co_truncate(bs, offset, prealloc, zero_write) -> (ret, message)``
slot (qcow2: ``qcow2_resize.py``).

Context: coroutine (``bdrv_truncate`` drives one from the loop).
Returns (0 or -errno, QEMU's one-line message).
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block/io.c (bdrv_co_truncate), block/raw-format.c (raw_co_truncate),
block/file-posix.c (raw_co_truncate, handle_aiocb_truncate).
"""
from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, cast

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import (BDRV_O_RDWR, BlockDriverState, bdrv_getlength,
                                refresh_total_sectors)
from gqemu.block.io_misc import bdrv_run_co
from gqemu.block.block_int import BDRV_MAX_LENGTH

if TYPE_CHECKING:
    from gqemu.block.file_posix import BdrvFile
    from gqemu.block.raw_format import BdrvRaw

PREALLOC_MODES = ("off", "metadata", "falloc", "full")


def _file_truncate(bs: BlockDriverState, offset: int, prealloc: str) -> tuple[int, str]:
    """The host file behind a ``file`` node.  QEMU: raw_co_truncate."""
    drv = cast("BdrvFile", bs.drv)
    try:
        st = os.fstat(drv.fd)
    except OSError as e:
        return -(e.errno or errno.EIO), "Could not resize file: %s" % os.strerror(e.errno or errno.EIO)
    if not stat.S_ISREG(st.st_mode):
        if offset > drv.bdrv_getlength(bs):
            return -errno.EINVAL, "Cannot grow device files"
        return 0, ""
    return _fd_truncate(drv.fd, st.st_size, offset, prealloc)


def allocate_first_block(fd: int, max_size: int) -> None:
    """Write zeroes over the first block of a file just grown from empty,
    so later alignment probing finds an allocated block: 512 bytes when the
    new length is under 4 KiB (so a 259-byte file becomes 512 bytes long,
    as under QEMU), else 4 KiB.  Failures are ignored.
    QEMU: allocate_first_block (called by handle_aiocb_truncate)."""
    import mmap
    size = 512 if max_size < 4096 else 4096
    try:
        os.pwrite(fd, memoryview(mmap.mmap(-1, 4096))[:size], 0)   # page-aligned
    except OSError:
        pass


def _qemu_zero_buffer() -> memoryview:
    """64 KiB of zeroes where QEMU 7.2's are.  handle_aiocb_truncate writes
    them from a g_malloc0'd buffer, which is not page-aligned; on an
    O_DIRECT fd (``-t none``, ``-n``) the kernel takes such a buffer only
    while the write stays inside one page (this host's disks want 512-byte
    aligned memory otherwise).  Measured with qemu-io 7.2: ``truncate -m
    full`` growing by 512 or 1024 bytes succeeds, by 1536 bytes or more
    fails with EINVAL, so QEMU's buffer starts between 1024 and 1536 bytes
    before a page end; gqemu's starts 1040 bytes before one, 16-byte but
    not 512-byte aligned (tests/qemu-io/prealloc_direct.qio).  Buffered
    fds take any buffer."""
    import mmap
    return memoryview(mmap.mmap(-1, 65536 + 4096))[3056:3056 + 65536]


def _fd_truncate(fd: int, cur: int, offset: int, prealloc: str) -> tuple[int, str]:
    """A regular file of ``cur`` bytes to ``offset``.
    QEMU: handle_aiocb_truncate."""
    if cur > offset and prealloc != "off":         # any mode, metadata too
        return -errno.ENOTSUP, "Cannot use preallocation for shrinking files"
    try:
        if prealloc == "falloc":
            if offset > cur:
                os.posix_fallocate(fd, cur, offset - cur)
        elif prealloc == "full":
            os.ftruncate(fd, offset)
            pos, zero = cur, _qemu_zero_buffer()
            while pos < offset:
                pos += os.pwrite(fd, zero[:min(len(zero), offset - pos)], pos)
            os.fsync(fd)
        elif prealloc == "off":
            os.ftruncate(fd, offset)
            if cur == 0 and offset > 0:
                allocate_first_block(fd, offset)
        else:
            return -errno.ENOTSUP, "Unsupported preallocation mode: %s" % prealloc
    except OSError as e:
        ret = e.errno or errno.EIO
        if prealloc != "off":           # QEMU restores the old length
            try:
                os.ftruncate(fd, cur)
            except OSError:
                pass
        what = {"falloc": "Could not preallocate new data",
                "full": "Could not write zeros for preallocation"}.get(prealloc,
                                                                     "Could not resize file")
        return -ret, "%s: %s" % (what, os.strerror(ret))
    return 0, ""


def raw_create_open(filename: str) -> int:
    """Open (or create) the host file of an image being created with
    file-posix's create-time locks (write and resize taken, resize not
    shared), then empty it: a file another user holds, e.g. the source of a
    convert onto itself, is refused untouched.  Returns the fd (closing it
    drops the locks).  Raises BlockError (with QEMU's hint).
    QEMU: raw_co_create (create, take locks, check them, truncate to 0)."""
    import fcntl
    from gqemu.block.block_int import BLK_PERM_RESIZE, BLK_PERM_WRITE, _PERM_NAMES, BlockError
    from gqemu.block.file_posix import (RAW_LOCK_PERM_BASE, RAW_LOCK_SHARED_BASE, _lock_op,
                                        qemu_lock_fd_test)
    try:
        fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        err = e.errno or errno.EIO
        raise BlockError(err, "Could not create '%s': %s" % (filename, os.strerror(err))) \
            from None
    perm, unshared = BLK_PERM_WRITE | BLK_PERM_RESIZE, BLK_PERM_RESIZE
    hint = "Is another process using the image [%s]?" % filename
    try:
        for i in range(len(_PERM_NAMES)):
            for base, bits in ((RAW_LOCK_PERM_BASE, perm), (RAW_LOCK_SHARED_BASE, unshared)):
                if bits >> i & 1:
                    try:
                        _lock_op(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, base + i)
                    except OSError as e:
                        raise BlockError(e.errno or errno.EAGAIN,
                                         "Failed to lock byte %d" % (base + i)) from None
        for i, name in enumerate(_PERM_NAMES):
            if perm >> i & 1 and qemu_lock_fd_test(fd, RAW_LOCK_SHARED_BASE + i):
                raise BlockError(errno.EAGAIN, 'Failed to get "%s" lock' % name, hint)
        for i, name in enumerate(_PERM_NAMES):
            if unshared >> i & 1 and qemu_lock_fd_test(fd, RAW_LOCK_PERM_BASE + i):
                raise BlockError(errno.EAGAIN, 'Failed to get shared "%s" lock' % name, hint)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)
    except OSError as e:
        os.close(fd)
        err = e.errno or errno.EIO
        raise BlockError(err, "Could not resize file: %s" % os.strerror(err)) from None
    except BlockError:
        os.close(fd)
        raise
    return fd


def file_create(filename: str, size: int, prealloc: str = "off") -> tuple[int, str]:
    """Create (or empty) a host file of ``size`` bytes, preallocated as
    asked.  QEMU: raw_co_create (file-posix)."""
    if prealloc not in PREALLOC_MODES:
        return -errno.EINVAL, "invalid parameter value: %s" % prealloc
    try:
        fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        return -(e.errno or errno.EIO), "Could not create '%s': %s" % (
            filename, os.strerror(e.errno or errno.EIO))
    try:
        os.ftruncate(fd, 0)
        return _fd_truncate(fd, 0, size, prealloc)
    except OSError as e:
        return -(e.errno or errno.EIO), "Could not resize file: %s" % os.strerror(
            e.errno or errno.EIO)
    finally:
        os.close(fd)


@coroutine_fn
def bdrv_co_truncate(bs: BlockDriverState, offset: int, exact: bool = True,
                     prealloc: str = "off") -> tuple[int, str]:
    """Resize ``bs`` to ``offset`` bytes.  QEMU: bdrv_co_truncate."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM, "No medium inserted"
    if offset < 0:
        return -errno.EINVAL, "Image size cannot be negative"
    if offset > BDRV_MAX_LENGTH:                  # QEMU: bdrv_check_request
        return -errno.EIO, "offset(%d) exceeds maximum(%d)" % (offset, BDRV_MAX_LENGTH)
    if prealloc not in PREALLOC_MODES:
        return -errno.EINVAL, "Invalid preallocation mode '%s'" % prealloc
    if not bs.open_flags & BDRV_O_RDWR:
        return -errno.EACCES, "Image is read-only"
    old_size = bdrv_getlength(bs)
    fmt = drv.format_name
    co_truncate = getattr(drv, "bdrv_co_truncate", None)
    if co_truncate is not None:
        zero_write = False
        if bs.backing is not None and offset > old_size:
            zero_write = bdrv_getlength(bs.backing.bs) > old_size
        ret, msg = co_truncate(bs, offset, prealloc, zero_write)
    elif fmt == "raw" and bs.file is not None and not drv.bdrv_file_open:
        raw = cast("BdrvRaw", drv)
        if raw.has_size:
            return -errno.ENOTSUP, "Cannot resize fixed-size raw disks"
        if (1 << 63) - 1 - offset < raw.offset:
            return -errno.EINVAL, "Disk size too large for the chosen offset"
        ret, msg = bdrv_co_truncate(bs.file.bs, offset + raw.offset, exact, prealloc)
        if ret >= 0:
            raw.size = offset
    elif drv.bdrv_truncate is not None and getattr(drv, "fd", None) is not None:
        ret, msg = _file_truncate(bs, offset, prealloc)
    elif drv.is_filter and bs.file is not None:  # copy-on-read, compress: the
        ret, msg = bdrv_co_truncate(bs.file.bs, offset, exact, prealloc)  # filtered
    else:
        return -errno.ENOTSUP, "Image format driver does not support resize"
    if ret < 0:
        return ret, msg
    refresh_total_sectors(bs, offset >> 9)
    for bm in bs.dirty_bitmaps:         # QEMU: bdrv_dirty_bitmap_truncate
        bm.truncate(offset)
    return 0, ""


def bdrv_truncate(bs: BlockDriverState, offset: int, exact: bool = True,
                  prealloc: str = "off") -> tuple[int, str]:
    """From the main loop.  QEMU: bdrv_truncate (blk_truncate)."""
    return bdrv_run_co(bs, bdrv_co_truncate, bs, offset, exact, prealloc)
