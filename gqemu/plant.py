"""Test-only switches that plant known concurrency bugs.

``gqemu stress`` must find each of them within a bounded number of seeds
(issue 7); tests turn one on, run the stress engine, and check that the
violated invariant is reported and the shrunk reproducer still fails.  All
are off unless a test or ``gqemu stress --plant NAME`` turns them on.

The switches belong to an AioContext (``ctx.plant``, a :class:`Planted`):
a stress run turns them on in its own context, so nothing outside the run
(another thread's loop, the next run) sees them.  Code on the I/O path
reads them from the context it has at hand (``bs.aio_context.plant.X``,
``pool.ctx.plant.X``); ``gqemu.plant.X`` (a module attribute) is the
calling thread's current context's switch, for code that has no context.

Must not import: anything in gqemu but gqemu.coroutine (a thread's context
is made by gqemu.aio's qemu_get_current_aio_context, handed down to
gqemu.coroutine).
"""
from __future__ import annotations

from typing import Any

from gqemu.coroutine import current_aio_context, thread_state

__all__ = ["Planted", "NAMES", "plant", "clear"]

NAMES = ("comutex_barging", "rmw_unserialised", "completion_twice",
         "reset_keeps_completion")


class Planted:
    """The planted-bug switches of one AioContext, all off."""

    __slots__ = NAMES

    def __init__(self) -> None:
        # CoMutex unlock releases the lock instead of handing it to the
        # longest waiter (QEMU 2.8's unfair mutex): a newcomer can barge in.
        self.comutex_barging = False
        # block/io.c: an unaligned write's read-modify-write skips the
        # serialising tracked request, so an overlapping write can be lost.
        self.rmw_unserialised = False
        # thread pool: a finished request's callback is delivered twice.
        self.completion_twice = False
        # IDE: a reset does not discard an in-flight completion
        # (CVE-2023-5088).
        self.reset_keeps_completion = False


def _current() -> Planted:
    ctx = thread_state.ctx
    if ctx is None:
        ctx = current_aio_context()
    return ctx.plant  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name in NAMES:
        ctx = thread_state.ctx
        return ctx is not None and getattr(ctx.plant, name)
    raise AttributeError("module 'gqemu.plant' has no attribute '%s'" % name)


def plant(name: str, on: bool = True, switches: Any = None) -> None:
    """Turn the named bug on (or off) in ``switches`` (default: the
    current context's)."""
    if name not in NAMES:
        raise ValueError("unknown planted bug '%s' (known: %s)"
                         % (name, ", ".join(NAMES)))
    setattr(switches if switches is not None else _current(), name, on)


def clear(switches: Any = None) -> None:
    """Turn every planted bug off (default: in the current context)."""
    sw = switches if switches is not None else _current()
    for n in NAMES:
        setattr(sw, n, False)
