"""The coroutine itself: a raw greenlet whose run function is
:func:`coroutine_trampoline`, as util/coroutine-ucontext.c starts every
coroutine stack in ``coroutine_trampoline``.  The trampoline runs entries
until the greenlet is killed: a finished coroutine switches back to
whoever entered it last and waits in its thread's pool to be reused.

Import the public names from gqemu.coroutine.  Must not import: anything
in gqemu.

QEMU: util/coroutine-ucontext.c.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

from greenlet import getcurrent, greenlet

# What a coroutine's greenlet hands back to its enterer: a yield switches
# with no value (the enterer's ``switch()`` returns ``()``, false; a switch
# without arguments is the cheapest), an ending coroutine with this one.
COROUTINE_TERMINATE = 2


class CoroutineError(RuntimeError):
    """Misuse of the coroutine API; QEMU prints the message and aborts."""


class Coroutine(greenlet):
    """One coroutine: a greenlet running :func:`coroutine_trampoline`.

    ``caller`` is set exactly while the coroutine is entered.
    ``co_queue_wakeup`` holds coroutines to run when this one yields or ends.
    """

    __slots__ = ("entry", "entry_arg", "caller", "ctx", "scheduled",
                 "locks_held", "co_queue_wakeup", "exception", "pool")

    def __init__(self, pool: "list[Coroutine]") -> None:
        super().__init__(run=coroutine_trampoline)
        self.pool = pool                # its thread's free list
        self.entry: Optional[Callable[[Any], Any]] = None
        self.entry_arg: Any = None
        self.caller: Optional[greenlet] = None
        self.ctx: Any = None
        self.scheduled: Optional[str] = None
        self.locks_held = 0
        self.co_queue_wakeup: Optional[deque[Coroutine]] = None
        self.exception: Optional[BaseException] = None

    def __repr__(self) -> str:
        return "<Coroutine 0x%x entry=%s>" % (
            id(self), getattr(self.entry, "__qualname__", self.entry))


def coroutine_trampoline() -> None:
    """Run function of every coroutine greenlet: run entries until killed.

    Context: the coroutine's own greenlet.
    QEMU: util/coroutine-ucontext.c coroutine_trampoline.
    """
    self = getcurrent()
    while True:
        entry, arg = self.entry, self.entry_arg
        try:
            entry(arg)  # type: ignore[misc]
        except BaseException as e:  # handed to the enterer, which re-raises
            self.exception = e
        # Drop the references now, not when the pooled coroutine is reused.
        entry = arg = None
        self.entry = self.entry_arg = None
        caller = self.caller
        self.caller = None
        if caller is None:
            # Killed while suspended (greenlet collected it): nobody to
            # hand the end to; the greenlet just ends.
            self.exception = None
            return
        caller.switch(COROUTINE_TERMINATE)
