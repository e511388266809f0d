"""Virtual time for stress runs.

The runtime reads its clocks through ``gqemu.aio.qemu_clock_get_ns`` and,
for expiring timers, through ``gqemu.aio``'s ``time`` module.  Until the
runtime grows a clock hook (``AioContext.sched.clock_ns``), a stress run
swaps both for the scheduler's virtual clock, which stands still and jumps
to the next deadline when the loop would sleep: timers then fire in a
deterministic order at deterministic instants.  ``uninstall`` restores the
real clocks.
"""
from __future__ import annotations

import time as _time
from typing import Any, Callable, Optional

from gqemu import aio

__all__ = ["install", "uninstall"]

_real_clock = aio.qemu_clock_get_ns


class _VirtualTimeModule:
    """Stands in for the ``time`` module inside gqemu.aio."""

    def __init__(self, source: Callable[[], int]) -> None:
        self.source = source

    def monotonic_ns(self) -> int:
        return self.source()

    def time_ns(self) -> int:
        return self.source()

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


_installed: Optional[_VirtualTimeModule] = None


def install(sched: Any) -> None:
    """Read every clock from ``sched.now_ns`` from now on."""
    global _installed

    def source() -> int:
        return sched.now_ns  # type: ignore[no-any-return]

    _installed = _VirtualTimeModule(source)
    aio.time = _installed  # type: ignore[assignment]
    aio.qemu_clock_get_ns = lambda clock: sched.now_ns  # type: ignore[assignment]


def uninstall() -> None:
    global _installed
    _installed = None
    aio.time = _time  # type: ignore[assignment]
    aio.qemu_clock_get_ns = _real_clock  # type: ignore[assignment]
