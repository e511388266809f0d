"""Invariant checking for stress runs.

An invariant that fails raises :class:`InvariantViolation` at once, from
wherever the check runs (a coroutine, a completion callback, the final
drain); the exception propagates out of ``aio_poll`` to the engine, which
records the seed, the invariant's name and the message.
"""
from __future__ import annotations

from typing import Any

__all__ = ["InvariantViolation", "Checker"]


class InvariantViolation(Exception):
    """A stress invariant does not hold."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__("%s: %s" % (name, message))
        self.name = name
        self.message = message


class Checker:
    """Counts invariant checks; ``check`` raises on a false condition."""

    __slots__ = ("checks",)

    def __init__(self) -> None:
        self.checks = 0

    def check(self, ok: Any, name: str, fmt: str, *args: Any) -> None:
        """Count one check of invariant ``name``; fail with ``fmt % args``."""
        self.checks += 1
        if not ok:
            raise InvariantViolation(name, fmt % args if args else fmt)

    def fail(self, name: str, fmt: str, *args: Any) -> None:
        self.check(False, name, fmt, *args)
