"""Sleeping in a coroutine.  Sleeping needs a timer and a thread's current
AioContext needs making: gqemu.aio, the layer above, hands both down when
it is imported (``coroutine_set_aio_hooks``), so this module never imports
it.

Import the public names from gqemu.coroutine.

QEMU: util/qemu-coroutine-sleep.c.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from greenlet import getcurrent

from gqemu.coroutine_ucontext import CoroutineError
from gqemu.qemu_coroutine import aio_co_wake, coroutine_fn, qemu_coroutine_yield


def _no_aio(*_args: Any) -> Any:
    raise CoroutineError("no AioContext: gqemu.aio is not imported")


# Handed down by gqemu.aio when it is imported: the calling thread's current
# AioContext (made on first use), and arming a one-shot timer in a context.
_aio_current_context: Callable[[], Any] = _no_aio
_aio_sleep_timer: Callable[[Any, int, Optional[int], Callable[[Any], None]],
                           None] = _no_aio


def coroutine_set_aio_hooks(
        current_context: Callable[[], Any],
        sleep_timer: Callable[[Any, int, Optional[int], Callable[[Any], None]],
                              None]) -> None:
    """Called by gqemu.aio: ``current_context()`` returns the calling
    thread's current AioContext; ``sleep_timer(ctx, ns, clock, cb)`` calls
    ``cb(None)`` from ``ctx``'s loop ``ns`` nanoseconds from now on
    ``clock`` (None: realtime)."""
    global _aio_current_context, _aio_sleep_timer
    _aio_current_context = current_context
    _aio_sleep_timer = sleep_timer


def current_aio_context() -> Any:
    """The calling thread's current AioContext (gqemu.aio's
    qemu_get_current_aio_context, handed down)."""
    return _aio_current_context()


@coroutine_fn
def qemu_co_sleep_ns(ns: int, clock: Optional[int] = None) -> None:
    """Sleep ``ns`` nanoseconds on ``clock`` (realtime by default) in the
    coroutine's AioContext.  Context: coroutine.  QEMU: qemu_co_sleep_ns."""
    co = getcurrent()
    ctx = co.ctx or _aio_current_context()

    def wake(_opaque: Any) -> None:
        co.scheduled = None
        aio_co_wake(co)

    co.scheduled = "qemu_co_sleep_ns"
    _aio_sleep_timer(ctx, ns, clock, wake)
    qemu_coroutine_yield()
