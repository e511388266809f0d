"""Test-only switches that plant known concurrency bugs.

``gqemu stress`` must find each of them within a bounded number of seeds
(issue 7); tests turn one on, run the stress engine, and check that the
violated invariant is reported and the shrunk reproducer still fails.  All
are off unless a test or ``gqemu stress --plant NAME`` turns them on; each
costs one module-attribute test where it is checked.

Must not import: anything in gqemu.
"""
from __future__ import annotations

# CoMutex unlock releases the lock instead of handing it to the longest
# waiter (QEMU 2.8's unfair mutex): a newcomer can barge in ahead.
comutex_barging = False
# block/io.c: an unaligned write's read-modify-write skips the serialising
# tracked request, so an overlapping write can be lost.
rmw_unserialised = False
# thread pool: a finished request's callback is delivered twice.
completion_twice = False
# IDE: a reset does not discard an in-flight completion (CVE-2023-5088).
reset_keeps_completion = False

NAMES = ("comutex_barging", "rmw_unserialised", "completion_twice",
         "reset_keeps_completion")


def plant(name: str, on: bool = True) -> None:
    """Turn the named bug on (or off)."""
    if name not in NAMES:
        raise ValueError("unknown planted bug '%s' (known: %s)"
                         % (name, ", ".join(NAMES)))
    globals()[name] = on


def clear() -> None:
    for n in NAMES:
        globals()[n] = False
