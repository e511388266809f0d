"""The replay scheduler: thread-pool requests run only when replay needs them.

Installed as the main AioContext's ``sched`` (the hook interface the stress
scheduler also uses: ``order_bhs``, ``order_completions``,
``thread_pool_submit``, ``idle``) for the length of a replay.  Every
submitted request is held instead of queued for a worker.  When a recorded
result needs the device to have made progress, the replayer releases one
held request -- preferably one of the drives behind the port being read --
and waits for it (``thread_pool_run_held``).  Requests of other drives stay
in flight, exactly as they were in the recording, so replay does not depend
on how fast the host's workers are, nor on which of two channels' requests
a worker happens to finish first.

Whoever else blocks on the loop (a drain, a cancel) gets the oldest held
request released through ``idle``, so nothing can wait forever.

Must not import: gqemu.cli.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Iterable, Optional

from gqemu.threadpool.pool import thread_pool_run_held


class ReplayScheduler:
    """Hold thread-pool requests until released.

    ``drive_of_fd(fd) -> index or None`` tells which drive a request is for
    (requests carry their file descriptor as ``req.arg.aio_fildes``).
    """

    def __init__(self, drive_of_fd: Optional[Callable[[int], Optional[int]]] = None) -> None:
        self.held: deque[tuple[Any, Any]] = deque()
        self.drive_of_fd = drive_of_fd
        self.released = 0

    # -- the AioContext hook interface ---------------------------------------

    def order_bhs(self, bhs: list[Any]) -> list[Any]:
        return bhs

    def order_completions(self, done: Any) -> None:
        return None

    def thread_pool_submit(self, pool: Any, req: Any) -> None:
        self.held.append((pool, req))

    def idle(self, ctx: Any) -> bool:
        """The loop would block: release the oldest request, if any."""
        if not self.held:
            return False
        self._run(self.held.popleft())
        return True

    # -- used by the replayer ------------------------------------------------

    def _run(self, item: tuple[Any, Any]) -> None:
        pool, req = item
        self.released += 1
        thread_pool_run_held(pool, req)

    def drive_of(self, req: Any) -> Optional[int]:
        fd = getattr(getattr(req, "arg", None), "aio_fildes", None)
        if fd is None or self.drive_of_fd is None:
            return None
        return self.drive_of_fd(fd)

    def release(self, prefer: Optional[Iterable[int]] = None) -> bool:
        """Run one held request: the oldest for a drive in ``prefer`` if
        there is one, else the oldest.  Returns False when none is held."""
        if not self.held:
            return False
        if prefer:
            want = set(prefer)
            for i, item in enumerate(self.held):
                if self.drive_of(item[1]) in want:
                    del self.held[i]
                    self._run(item)
                    return True
        self._run(self.held.popleft())
        return True


def fd_mapper(files: dict[int, str]) -> Callable[[int], Optional[int]]:
    """``drive_of_fd`` for drives given as {index: image path}: a request's
    fd is matched to a drive by device and inode (so a qcow2 image, or a
    raw image opened with O_DIRECT, is recognised all the same)."""
    ids: dict[tuple[int, int], int] = {}
    for index, path in files.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = index
    cache: dict[int, Optional[int]] = {}

    def drive_of_fd(fd: int) -> Optional[int]:
        if fd not in cache:
            try:
                st = os.fstat(fd)
                cache[fd] = ids.get((st.st_dev, st.st_ino))
            except OSError:
                cache[fd] = None
        return cache[fd]
    return drive_of_fd
