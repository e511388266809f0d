"""The io_uring ring itself, what liburing does for QEMU: set-up, the
shared mappings, getting and publishing SQEs, reading CQEs.

No liburing: ``io_uring_setup`` and ``io_uring_enter`` are called through
ctypes, and the SQ ring, CQ ring and SQE array are ``mmap``-ed from the
ring's fd.  Head and tail are aligned 32-bit words of that shared mapping,
read and written in place; x86-64's store order is what makes an SQE
visible before the tail that publishes it (the system call numbers are
x86-64's too, like KVM here).  ``iovec_array`` builds the C iovec arrays
both AIO engines (io_uring.py, linux_aio.py) hand to the kernel.

Must not import: anything above the block layer.
QEMU: liburing (queue.c, setup.c), as block/io_uring.c uses it.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct
from typing import Any, Optional

# <linux/io_uring.h>
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_OP_READV = 1
IORING_OP_WRITEV = 2
IORING_OP_FSYNC = 3
IORING_OP_READ = 22
IORING_OP_WRITE = 23
IORING_FSYNC_DATASYNC = 1 << 0
_NR_IO_URING_SETUP = 425               # x86-64
_NR_IO_URING_ENTER = 426

# struct io_uring_params: 10 u32, then io_sqring_offsets and
# io_cqring_offsets (8 u32 and a u64 each)
_PARAMS = struct.Struct("<10I8IQ8IQ")
# struct io_uring_sqe: opcode, flags, ioprio, fd, off, addr, len,
# rw_flags, user_data, buf_index, personality, splice_fd_in, addr3, pad
IO_URING_SQE = struct.Struct("<BBHiQQIIQHHiQQ")
_CQE = struct.Struct("<Qi")            # user_data, res (flags not needed)
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)

_syscall_enter: Any = None


def libc_syscall(nargs: int) -> Any:
    """glibc's syscall(2) as a ctypes function of ``nargs`` longs (the
    number first), errno kept for ``ctypes.get_errno``: one function object
    per caller, so each keeps its own argument types (both AIO engines)."""
    f = ctypes.CDLL(None, use_errno=True)["syscall"]
    f.restype = ctypes.c_long
    f.argtypes = (ctypes.c_long,) * nargs
    return f


class IoUring:
    """One io_uring instance: its fd and the three shared mappings.
    QEMU: struct io_uring (liburing)."""

    def __init__(self, entries: int) -> None:
        global _syscall_enter
        if _syscall_enter is None:
            _syscall_enter = libc_syscall(7)
        params = ctypes.create_string_buffer(_PARAMS.size)
        fd = libc_syscall(3)(_NR_IO_URING_SETUP, entries, ctypes.addressof(params))
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.fd = fd
        try:
            self._map(_PARAMS.unpack(params.raw))
        except BaseException:
            os.close(fd)
            raise

    def _map(self, p: tuple) -> None:
        sq_entries, cq_entries, features = p[0], p[1], p[5]
        sq_head, sq_tail, sq_mask, _e, _f, _d, sq_array = p[10:17]
        cq_head, cq_tail, cq_mask, _e, _o, cqes = p[19:25]
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_SHARED | _MAP_POPULATE
        sq_size = sq_array + sq_entries * 4
        cq_size = cqes + cq_entries * 16         # sizeof(struct io_uring_cqe)
        if features & IORING_FEAT_SINGLE_MMAP:
            sq_size = cq_size = max(sq_size, cq_size)
        self.sq_map = mmap.mmap(self.fd, sq_size, flags, prot, offset=IORING_OFF_SQ_RING)
        self.cq_map = (self.sq_map if features & IORING_FEAT_SINGLE_MMAP else
                       mmap.mmap(self.fd, cq_size, flags, prot, offset=IORING_OFF_CQ_RING))
        self.sqes = mmap.mmap(self.fd, sq_entries * IO_URING_SQE.size, flags, prot,
                              offset=IORING_OFF_SQES)
        self.sq32 = memoryview(self.sq_map).cast("I")
        self.cq32 = memoryview(self.cq_map).cast("I")
        self.sq_entries = sq_entries
        self.sq_head, self.sq_tail = sq_head >> 2, sq_tail >> 2
        self.sq_mask = self.sq32[sq_mask >> 2]
        self.cq_head, self.cq_tail = cq_head >> 2, cq_tail >> 2
        self.cq_mask = self.cq32[cq_mask >> 2]
        self.cqes = cqes
        for i in range(sq_entries):          # SQ slot i always holds SQE i
            self.sq32[(sq_array >> 2) + i] = i
        self.sqe_tail = self.sq32[self.sq_tail]   # SQEs filled, not yet published

    def get_sqe(self) -> int:
        """The offset of a free SQE, or -1 when the SQ ring is full.
        QEMU: io_uring_get_sqe."""
        tail = self.sqe_tail
        if (tail - self.sq32[self.sq_head]) & 0xffffffff >= self.sq_entries:
            return -1
        self.sqe_tail = (tail + 1) & 0xffffffff
        return (tail & self.sq_mask) * IO_URING_SQE.size

    def submit(self) -> int:
        """Publish the filled SQEs and enter the kernel with every SQE it
        has not taken yet: the number it took, or -errno.
        QEMU: io_uring_submit."""
        sq32 = self.sq32
        sq32[self.sq_tail] = tail = self.sqe_tail
        n = (tail - sq32[self.sq_head]) & 0xffffffff
        ret = _syscall_enter(_NR_IO_URING_ENTER, self.fd, n, 0, 0, 0, 0)
        return ret if ret >= 0 else -ctypes.get_errno()

    def unpublish(self) -> None:
        """Take back the SQEs the kernel has not taken (after a refused
        submission), so that no later submission sends them."""
        self.sqe_tail = self.sq32[self.sq_head]
        self.sq32[self.sq_tail] = self.sqe_tail

    def cq_ready(self) -> bool:
        """QEMU: io_uring_cq_ready."""
        cq32 = self.cq32
        return cq32[self.cq_tail] != cq32[self.cq_head]

    def pop_cqe(self) -> Optional[tuple[int, int]]:
        """The oldest CQE's (user_data, res), consumed; None when empty.
        QEMU: io_uring_peek_cqe + io_uring_cqe_seen."""
        cq32 = self.cq32
        head = cq32[self.cq_head]
        if head == cq32[self.cq_tail]:
            return None
        cqe = _CQE.unpack_from(self.cq_map, self.cqes + (head & self.cq_mask) * 16)
        cq32[self.cq_head] = (head + 1) & 0xffffffff
        return cqe

    def close(self) -> None:
        self.sq32.release()
        self.cq32.release()
        for m in {id(x): x for x in (self.sq_map, self.cq_map, self.sqes)}.values():
            m.close()
        os.close(self.fd)
        self.fd = -1


def iovec_array(views: list, skip: int) -> tuple[Any, int, int]:
    """A C iovec array for ``views`` after their first ``skip`` bytes:
    (what keeps it alive, its address, its count).  A read-only buffer (a
    write's) is copied, since ctypes can only point at writable memory."""
    pieces = []
    for mv in views:
        n = len(mv)
        if skip >= n:               # (an empty buffer too: nothing to point at)
            skip -= n
            continue
        pieces.append(mv[skip:] if skip else mv)
        skip = 0
    arr = (ctypes.c_uint64 * (2 * len(pieces)))()
    keep: list[Any] = [arr]
    for i, mv in enumerate(pieces):
        try:
            c = ctypes.c_char.from_buffer(mv)
        except TypeError:               # read-only
            mv = bytearray(mv)
            c = ctypes.c_char.from_buffer(mv)
        keep.append(c)
        arr[2 * i] = ctypes.addressof(c)
        arr[2 * i + 1] = len(mv)
    return keep, ctypes.addressof(arr), len(pieces)
