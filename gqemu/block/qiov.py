"""QEMUIOVector: a scatter/gather list of byte buffers.

Each element of ``iov`` is a 1-D ``memoryview`` of unsigned bytes that points
into the caller's memory (a bytearray, guest RAM, an mmap...).  Nothing here
copies on the read path: slicing a memoryview is free, and the worker thread
reads straight into these views with ``os.preadv``.

Must not import: anything in gqemu above the runtime.
QEMU: util/iov.c, include/qemu/iov.h.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

__all__ = [
    "QEMUIOVector", "qemu_iovec_init", "qemu_iovec_init_buf", "qemu_iovec_add",
    "qemu_iovec_concat", "qemu_iovec_memset", "qemu_iovec_to_buf",
    "qemu_iovec_from_buf", "qemu_iovec_is_zero", "qemu_iovec_reset",
    "qemu_iovec_destroy", "qemu_iovec_slice", "as_byte_view",
]

_ZEROS = bytes(65536)


def as_byte_view(buf: Any) -> memoryview:
    """``buf`` as a flat memoryview of bytes, without copying."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


class QEMUIOVector:
    """``iov``: list of byte memoryviews; ``size``: their total length.
    QEMU: QEMUIOVector."""

    __slots__ = ("iov", "size")

    def __init__(self, bufs: Optional[Iterable[Any]] = None) -> None:
        self.iov: list[memoryview] = []
        self.size = 0
        if bufs is not None:
            for b in bufs:
                qemu_iovec_add(self, b)

    @property
    def niov(self) -> int:
        return len(self.iov)

    def __repr__(self) -> str:
        return "<QEMUIOVector niov=%d size=%d>" % (len(self.iov), self.size)


def qemu_iovec_init(qiov: QEMUIOVector, alloc_hint: int = 0) -> None:
    """Empty ``qiov``.  QEMU: qemu_iovec_init."""
    qiov.iov = []
    qiov.size = 0


def qemu_iovec_init_buf(buf: Any) -> QEMUIOVector:
    """A vector of the single buffer ``buf``.  QEMU: qemu_iovec_init_buf."""
    qiov = QEMUIOVector()
    mv = as_byte_view(buf)
    qiov.iov.append(mv)
    qiov.size = len(mv)
    return qiov


def qemu_iovec_add(qiov: QEMUIOVector, buf: Any, length: Optional[int] = None) -> None:
    """Append ``buf`` (its first ``length`` bytes).  QEMU: qemu_iovec_add."""
    mv = as_byte_view(buf)
    if length is not None and length != len(mv):
        mv = mv[:length]
    if len(mv):
        qiov.iov.append(mv)
        qiov.size += len(mv)


def qemu_iovec_concat(dst: QEMUIOVector, src: QEMUIOVector, soffset: int,
                      sbytes: int) -> None:
    """Append ``sbytes`` bytes of ``src`` starting at ``soffset`` to ``dst``
    (views, not copies).  QEMU: qemu_iovec_concat."""
    assert soffset + sbytes <= src.size, "qemu_iovec_concat past the end"
    for mv in src.iov:
        n = len(mv)
        if soffset >= n:
            soffset -= n
            continue
        if sbytes <= 0:
            break
        take = min(n - soffset, sbytes)
        dst.iov.append(mv[soffset:soffset + take] if take != n else mv)
        dst.size += take
        sbytes -= take
        soffset = 0


def qemu_iovec_slice(src: QEMUIOVector, offset: int, nbytes: int) -> QEMUIOVector:
    """A new vector viewing ``nbytes`` of ``src`` from ``offset``."""
    if offset == 0 and nbytes == src.size:
        return src
    q = QEMUIOVector()
    qemu_iovec_concat(q, src, offset, nbytes)
    return q


def _segments(qiov: QEMUIOVector, offset: int,
              nbytes: int) -> Iterator[tuple[memoryview, int, int, int]]:
    """Walk ``nbytes`` of the vector from ``offset``: yields (segment,
    offset in it, bytes to take, bytes done before it)."""
    done = 0
    for mv in qiov.iov:
        n = len(mv)
        if offset >= n:
            offset -= n
            continue
        if done >= nbytes:
            break
        take = min(n - offset, nbytes - done)
        yield mv, offset, take, done
        done += take
        offset = 0


def qemu_iovec_memset(qiov: QEMUIOVector, offset: int, fillc: int, nbytes: int) -> int:
    """Fill ``nbytes`` from ``offset`` with byte ``fillc``; returns the count.
    QEMU: qemu_iovec_memset."""
    done = 0
    for mv, off, take, done in _segments(qiov, offset, nbytes):
        if fillc == 0 and take <= len(_ZEROS):
            mv[off:off + take] = _ZEROS[:take]
        else:
            mv[off:off + take] = bytes([fillc]) * take
        done += take
    return done


def qemu_iovec_to_buf(qiov: QEMUIOVector, offset: int, buf: Any, nbytes: int) -> int:
    """Copy ``nbytes`` from the vector at ``offset`` into ``buf``.
    QEMU: qemu_iovec_to_buf."""
    out = as_byte_view(buf)
    done = 0
    for mv, off, take, done in _segments(qiov, offset, nbytes):
        out[done:done + take] = mv[off:off + take]
        done += take
    return done


def qemu_iovec_from_buf(qiov: QEMUIOVector, offset: int, buf: Any, nbytes: int) -> int:
    """Copy ``nbytes`` of ``buf`` into the vector at ``offset``.
    QEMU: qemu_iovec_from_buf."""
    src = as_byte_view(buf)
    done = 0
    for mv, off, take, done in _segments(qiov, offset, nbytes):
        mv[off:off + take] = src[done:done + take]
        done += take
    return done


def qemu_iovec_is_zero(qiov: QEMUIOVector) -> bool:
    """Whether every byte is zero.  QEMU: qemu_iovec_is_zero."""
    for mv in qiov.iov:
        pos = 0
        n = len(mv)
        while pos < n:
            take = min(n - pos, len(_ZEROS))
            if mv[pos:pos + take] != _ZEROS[:take]:
                return False
            pos += take
    return True


def qemu_iovec_reset(qiov: QEMUIOVector) -> None:
    qiov.iov = []
    qiov.size = 0


qemu_iovec_destroy = qemu_iovec_reset
