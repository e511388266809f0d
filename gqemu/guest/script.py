"""Loading emulator scripts and reporting their failures.

A script is a Python file that defines ``guest(cpu)`` (the program of
vCPU 0) or ``guests`` (a list of such functions, one per vCPU).  It may set
``SCRATCH_DRIVES`` (a list of IDE indexes, default ``[0]``) and
``SCRATCH_VIRTIO`` (a list of if=virtio indexes, default ``[]``) to say which
scratch disks ``gqemu run`` creates when no ``--drive`` is given.

A script is code the user chose to run, like a QEMU guest image: it is
compiled and executed as ordinary Python, not sandboxed.  Loading errors are
``ScriptError`` with one line; an exception raised while the guest runs is
shown by :func:`guest_traceback` with only the script's (and this
package's) frames, not the emulator's.

Must not import: gqemu.cli.
"""
from __future__ import annotations

import os
import traceback
from typing import Any, Callable

GUEST_DIR = os.path.dirname(os.path.abspath(__file__))


class ScriptError(Exception):
    """The script cannot be loaded: a one-line reason."""


def load_script(path: str) -> tuple[list[Callable[[Any], Any]], dict]:
    """Compile and execute ``path``; return its guest functions and namespace."""
    try:
        with open(path, "rb") as f:
            src = f.read()
    except OSError as e:
        raise ScriptError("%s: %s" % (path, e.strerror or e))
    if b"\0" in src:
        raise ScriptError("%s: not a Python script (binary data: it contains null bytes)"
                          % path)
    try:
        code = compile(src, path, "exec")
    except SyntaxError as e:
        raise ScriptError(_syntax_error(path, e, src))
    except ValueError as e:                      # null bytes (older Pythons)
        raise ScriptError("%s: not a Python script (%s)" % (path, _one_line(e)))
    ns: dict = {"__name__": "__gqemu_guest__", "__file__": path}
    try:
        exec(code, ns)
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        line = next((fr.lineno for fr in reversed(tb) if fr.filename == path), None)
        raise ScriptError("%s: the script failed while loading: %s"
                          % (_where(path, line), _one_line(e)))
    guests = ns.get("guests")
    if guests is None:
        g = ns.get("guest")
        if g is None:
            raise ScriptError("%s: defines neither guest(cpu) nor guests" % path)
        guests = [g]
    if not isinstance(guests, (list, tuple)) or not guests:
        raise ScriptError("%s: guests must be a non-empty list of functions" % path)
    if len(guests) > 16:
        raise ScriptError("%s: %d guests; at most 16 vCPUs" % (path, len(guests)))
    for g in guests:
        if not callable(g):
            raise ScriptError("%s: guest %r is not callable" % (path, g))
    drives = ns.get("SCRATCH_DRIVES", [0])
    if (not isinstance(drives, (list, tuple)) or not drives
            or not all(type(i) is int and 0 <= i < 4 for i in drives)
            or len(set(drives)) != len(drives)):
        raise ScriptError("%s: SCRATCH_DRIVES must list distinct IDE indexes 0..3" % path)
    virtio = ns.get("SCRATCH_VIRTIO", [])
    if (not isinstance(virtio, (list, tuple))
            or not all(type(i) is int and 0 <= i < 8 for i in virtio)
            or len(set(virtio)) != len(virtio)):
        raise ScriptError("%s: SCRATCH_VIRTIO must list distinct virtio indexes 0..7" % path)
    return list(guests), ns


def _one_line(e: BaseException) -> str:
    """The first line of ``e``'s message, without its class name (an
    exception with no message is described in words)."""
    s = str(e).strip().splitlines()
    if s:
        return s[0]
    return "an exception without a message"


def _where(path: str, line: object, col: object = None) -> str:
    """``path:line:col``, leaving out what is unknown (never "None")."""
    out = path
    if isinstance(line, int) and line > 0:
        out += ":%d" % line
        if isinstance(col, int) and col > 0:
            out += ":%d" % col
    return out


def _syntax_error(path: str, e: SyntaxError, src: bytes) -> str:
    msg = e.msg or "invalid syntax"
    if msg.startswith("(unicode error)"):
        try:
            src.decode("utf-8")
        except UnicodeDecodeError as u:
            line = src.count(b"\n", 0, u.start) + 1
            return ("%s:%d: not a Python script (not UTF-8 text: byte 0x%02x at offset %d)"
                    % (path, line, src[u.start], u.start))
        return "%s: not a Python script (%s)" % (path, msg[len("(unicode error)"):].strip())
    return "%s: syntax error: %s" % (_where(path, e.lineno, e.offset), msg)


def guest_traceback(e: BaseException, script: str) -> str:
    """The guest-side part of ``e``'s traceback: frames of the script and of
    ``gqemu.guest``, then the exception line."""
    script = os.path.abspath(script)
    frames = [fr for fr in traceback.extract_tb(e.__traceback__)
              if os.path.abspath(fr.filename) == script
              or os.path.abspath(fr.filename).startswith(GUEST_DIR + os.sep)]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(type(e), e))
    return "".join(lines)
