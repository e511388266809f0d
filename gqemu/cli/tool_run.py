"""One run of gqemu-io or gqemu-img, in process or not, as QEMU's tools run:
a new process.  ``tool_run_begin`` empties the ``--object secret`` table and
saves the block layer's error sink (the run may install its own);
``tool_run_end`` gives the caller its sink back.  Modules the run has not
loaded are left alone (``-h``/``-V`` load no block layer).  A main (these two
tools' and gqemu's) run as its process's entry (``sys.exit(main())``)
starts with ``tool_run_entering`` and ends with ``tool_run_exiting``.

Must not import: anything from ``gqemu`` (it only looks in sys.modules).
QEMU: none (each run is a process).
"""
from __future__ import annotations

import gc
import io
import sys
from typing import Any

# Buffered writers: what a frozen object's missing finalizer could lose.
_WRITERS = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)


# Python frames a tool may stack: a read through the deepest backing chain
# gqemu opens (100 images) nests ~6 frames per image, twice that with the
# GQEMU_DEBUG coroutine_fn checks; Python's default limit is 1000.
RECURSION_LIMIT = 4000


def tool_run_begin() -> Any:
    """Returns what ``tool_run_end`` needs."""
    secrets = sys.modules.get("gqemu.block.crypto_secret")
    if secrets is not None:
        secrets.SECRETS.clear()
    block = sys.modules.get("gqemu.block.block_int")
    return block.set_error_sink(block._stderr) if block is not None else None


def tool_run_end(sink: Any) -> None:
    block = sys.modules.get("gqemu.block.block_int")
    if block is not None:
        block.set_error_sink(sink or block._stderr)


# The collector's youngest-generation threshold while a tool runs as its
# process (Python's default: 700 allocations).
GC_THRESHOLD0 = 10000


def tool_run_entering() -> None:
    """The process's own run starts (``sys.exit(main())``).  Its imports
    (gevent, the block layer, a driver) allocate ~20,000 objects that live
    until exit; at Python's default threshold the collector would scan them
    ~25 times during one one-shot command, at this one once or twice.
    Cycles are still collected, every ``GC_THRESHOLD0`` allocations.  The
    recursion limit is raised to ``RECURSION_LIMIT``.  Called with an argv
    (in process: tests, the bench) a tool leaves both alone."""
    _th0, th1, th2 = gc.get_threshold()
    gc.set_threshold(max(_th0, GC_THRESHOLD0), th1, th2)
    if sys.getrecursionlimit() < RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)


def tool_run_exiting() -> None:
    """The process ends when main returns.  Python's teardown would free
    every object of every imported module one by one (~25 ms of CPU, a fifth
    of a one-shot command, paid by each of the hundreds of processes an
    iotest starts); a C tool's exit() frees nothing.  Frozen objects are
    left to the kernel: ``gc.freeze()`` moves them out of the collector's
    reach.  A frozen object is never finalized, so files still open for
    writing are flushed first (one held in a reference cycle would lose its
    buffered tail); if one cannot be, nothing is frozen and Python's teardown
    reports it as before.  sys.stdout/stderr are left to Python's own final
    flush.  atexit handlers still run and module globals are still cleared."""
    std = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    for o in gc.get_objects():
        if isinstance(o, _WRITERS) and not any(o is f for f in std):
            try:
                if not o.closed:
                    o.flush()
            except (OSError, ValueError):
                return
    gc.freeze()


def tool_buffer_stdout() -> None:
    """Into a pipe or file, qemu-io's and qemu-img's printf output is
    block-buffered by C stdio whatever the environment says, so their
    stderr lines come out first; PYTHONUNBUFFERED must not make gqemu's
    stdout lines overtake them.  Only the process's own stdout is changed:
    a caller's stand-in stream (an in-process run under a test's capture)
    keeps its buffering, or its reader would miss the lines still held in
    the buffer."""
    try:
        out = sys.stdout
        if out is sys.__stdout__ and out is not None and not out.isatty():
            out.reconfigure(line_buffering=False, write_through=False)  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):    # a stand-in stream (tests)
        pass
