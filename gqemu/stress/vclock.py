"""Virtual time for stress runs.

A stress run's AioContext reads every clock from the scheduler's virtual clock, which
stands still and jumps to the next deadline when the loop would sleep:
timers then fire in a deterministic order at deterministic instants.
``uninstall`` restores the host clocks.
"""
from __future__ import annotations

from typing import Any

from gqemu import aio

__all__ = ["install", "uninstall"]


def install(sched: Any) -> None:
    """Read every clock of ``sched.ctx`` from ``sched.now_ns`` from now on."""
    aio.aio_set_clock_source(lambda clock: sched.now_ns, sched.ctx)


def uninstall(sched: Any) -> None:
    """Give ``sched.ctx`` the host clocks back."""
    aio.aio_set_clock_source(None, sched.ctx)
