"""One run of gqemu-io or gqemu-img, in process or not, as QEMU's tools run:
a new process.  ``tool_run_begin`` empties the ``--object secret`` table and
saves the block layer's error sink (the run may install its own);
``tool_run_end`` gives the caller its sink back.  Modules the run has not
loaded are left alone (``-h``/``-V`` load no block layer).

Must not import: anything from ``gqemu`` (it only looks in sys.modules).
QEMU: none (each run is a process).
"""
from __future__ import annotations

import sys
from typing import Any


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
