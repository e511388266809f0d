"""QEMU-style trace events.

Each package declares its events in its own ``trace_events.py``, one line an
event, as QEMU keeps a ``trace-events`` file per directory::

    trace_blk_co_preadv = trace_event(
        "blk_co_preadv", "blk %p bs %p offset %d bytes %u flags 0x%x")

``trace_event`` registers the event in the one global table and returns the
``trace_<name>`` function.  Calling it costs a call and one boolean test while
the event is disabled; hot paths may test ``trace_x.enabled`` first and skip
even the call.  Formats use C's printf subset; ``%p`` accepts any object and
prints ``0x`` and its identity.

Events are enabled by glob patterns with QEMU's ``-trace`` syntax
(``ide_*``, ``-ide_data_*`` to disable, ``enable=pattern``), before or after
the modules that declare them are imported.  A pattern without a wildcard
that names no event warns as QEMU's ``-trace`` does (``trace event 'x' does
not exist``); a glob that matches nothing is accepted silently, as in QEMU.
Output goes to one sink: QEMU's
log lines (``name args``, or ``pid@sec.usec:name args`` with timestamps, as
``-msg timestamp=on``) or Chrome trace-event JSON that Perfetto opens, with a
track per greenlet and per worker thread, duration slices and flow arrows
(gqemu/trace_json.py).

Must not import: anything else in gqemu but gqemu.trace_json (which imports
nothing of gqemu: it is handed the track names and the event table).
QEMU: trace/control.c, scripts/tracetool (log and ftrace-like backends).
"""
from __future__ import annotations

import fnmatch
import os
import re
import sys
import threading
import time
from typing import IO, Any, Callable, Optional, Protocol

from greenlet import getcurrent

__all__ = [
    "TraceEvent", "trace_event", "trace_events", "trace_enable_events",
    "trace_event_set_state", "trace_list_events", "trace_init_output",
    "trace_close_output", "trace_register_track_name", "trace_add_listener",
    "trace_set_warning_location",
]


class TraceFn(Protocol):
    enabled: bool
    event: "TraceEvent"

    def __call__(self, *args: Any) -> None: ...


_CONV = re.compile(r"%([-#0 +]*\d*(?:\.\d+)?)(hh|h|ll|l|z|j|t)?([diouxXcspfeg%])")


class TraceEvent:
    """One event: its name, printf format, and state."""

    __slots__ = ("name", "fmt", "pyfmt", "ptr_args", "fn")

    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self.fmt = fmt
        ptr_args: list[int] = []
        index = 0
        pieces = []
        pos = 0
        for m in _CONV.finditer(fmt):
            pieces.append(fmt[pos:m.start()])
            flags, conv = m.group(1), m.group(3)
            if conv == "%":
                pieces.append("%%")
            elif conv == "p":
                ptr_args.append(index)
                pieces.append("0x%x")
                index += 1
            else:
                if conv in "iu":
                    conv = "d"
                pieces.append("%" + flags + conv)
                index += 1
            pos = m.end()
        pieces.append(fmt[pos:])
        self.pyfmt = "".join(pieces)
        self.ptr_args = tuple(ptr_args)

    def format(self, args: tuple[Any, ...]) -> str:
        if self.ptr_args:
            a = list(args)
            for i in self.ptr_args:
                v = a[i]
                a[i] = v if isinstance(v, int) else (0 if v is None else id(v))
            args = tuple(a)
        try:
            return self.pyfmt % args
        except (TypeError, ValueError) as e:
            return "<bad trace arguments %r: %s>" % (args, e)


_events: dict[str, TraceEvent] = {}
_patterns: list[tuple[bool, str]] = []
_sink: Optional["_Sink"] = None


def _wanted(name: str) -> bool:
    state = False
    for on, pat in _patterns:
        if fnmatch.fnmatchcase(name, pat):
            state = on
    return state


def trace_event(name: str, fmt: str) -> TraceFn:
    """Register event ``name`` and return its ``trace_<name>`` function."""
    if name in _events:
        return _events[name].fn  # type: ignore[attr-defined,no-any-return]
    ev = TraceEvent(name, fmt)

    def fn(*args: Any) -> None:
        if fn.enabled:  # type: ignore[attr-defined]
            _emit(ev, args)
    fn.__name__ = fn.__qualname__ = "trace_" + name
    fn.enabled = _wanted(name) and _sink is not None  # type: ignore[attr-defined]
    fn.event = ev  # type: ignore[attr-defined]
    ev.fn = fn  # type: ignore[attr-defined]
    _events[name] = ev
    return fn  # type: ignore[return-value]


def trace_events() -> dict[str, TraceEvent]:
    """The global table: every event declared by an imported module."""
    return _events


def trace_list_events() -> list[str]:
    return sorted(_events)


_listeners: list[Callable[[], None]] = []


def trace_add_listener(cb: Callable[[], None]) -> None:
    """Call ``cb()`` whenever event states change, so that a hot path can
    keep its own module-level flag (one global test instead of an attribute
    lookup) in step with the table."""
    _listeners.append(cb)
    cb()


def _refresh() -> None:
    live = _sink is not None
    for name, ev in _events.items():
        ev.fn.enabled = live and _wanted(name)  # type: ignore[attr-defined]
    for cb in _listeners:
        cb()


_warn_where: tuple[Optional[str], Optional[str]] = (None, None)
_declared: Optional[frozenset[str]] = None
_DECLARATION = re.compile(r'\btrace_event\(\s*"([A-Za-z0-9_]+)"')


def trace_set_warning_location(prog: Optional[str], option: Optional[str]) -> None:
    """How a warning about a pattern names its origin: ``prog: option ARG:
    warning: ...`` (``gqemu run: --trace x: warning: ...``, as
    qemu-system-x86_64's ``-trace``), or ``prog: warning: ...`` without an
    option (qemu-io's ``-T``).  ``prog`` defaults to the program's name."""
    global _warn_where
    _warn_where = (prog, option)


def _all_declared() -> frozenset[str]:
    """Every event gqemu declares, imported yet or not (QEMU knows its whole
    table at startup; ours fills in as layers are imported).  Read from the
    sources, not imported: the runtime layer imports nothing above it."""
    global _declared
    if _declared is None:
        names = set(_events)
        for d, _subdirs, files in os.walk(os.path.dirname(os.path.abspath(__file__))):
            for fn in files:
                if fn.endswith(".py"):
                    try:
                        with open(os.path.join(d, fn), encoding="utf-8") as f:
                            names.update(_DECLARATION.findall(f.read()))
                    except (OSError, ValueError):
                        continue
        _declared = frozenset(names)
    return _declared


def _check_exists(name: str, arg: str) -> None:
    """QEMU's warning for a pattern without wildcards that names no event."""
    if not name or any(c in name for c in "*?[") or name in _events:
        return
    if name in _all_declared():
        return
    prog, option = _warn_where
    if prog is None:
        prog = os.path.basename(sys.argv[0] or "") or "gqemu"
    where = "%s: %s %s" % (prog, option, arg) if option else prog
    sys.stderr.write("%s: warning: trace event '%s' does not exist\n" % (where, name))


def trace_enable_events(pattern: str) -> None:
    """Apply one ``-trace`` argument: ``glob``, ``-glob`` (disable),
    ``enable=glob`` or ``events=FILE`` (one pattern per line).  A name
    without wildcards that is no event gets QEMU's warning on stderr."""
    for item in pattern.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("events="):
            path = item[len("events="):]
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        trace_enable_events(line)
            continue
        if item.startswith("enable="):
            item = item[len("enable="):]
        on = not item.startswith("-")
        _patterns.append((on, item.lstrip("-")))
        _check_exists(item.lstrip("-"), pattern)
    _refresh()


def trace_event_set_state(name: str, on: bool) -> None:
    _patterns.append((on, name))
    _refresh()


def trace_reset() -> None:
    """Disable every event and forget the patterns (tests use this)."""
    _patterns.clear()
    _refresh()


# ---------------------------------------------------------------- output


class _Sink(Protocol):
    """An output: _LogSink here, gqemu.trace_json.JsonSink."""

    def emit(self, ev: TraceEvent, args: tuple[Any, ...]) -> None: ...

    def close(self) -> None: ...


class _LogSink(_Sink):
    def __init__(self, out: IO[str], timestamps: bool) -> None:
        self.out = out
        self.timestamps = timestamps
        self.pid = os.getpid()
        self.lock = threading.Lock()

    def emit(self, ev: TraceEvent, args: tuple[Any, ...]) -> None:
        msg = ev.format(args)
        if self.timestamps:
            t = time.time()
            line = "%d@%d.%06d:%s %s\n" % (self.pid, int(t),
                                          int((t % 1) * 1e6), ev.name, msg)
        else:
            line = "%s %s\n" % (ev.name, msg)
        with self.lock:
            self.out.write(line)

    def close(self) -> None:
        self.out.flush()


_track_names: dict[tuple[int, int], str] = {}


def trace_register_track_name(name: str, glet: Any = None) -> None:
    """Name the Chrome-trace track of a greenlet (default: the current one)."""
    g = glet if glet is not None else getcurrent()
    _track_names[(threading.get_ident(), id(g))] = name


def _emit(ev: TraceEvent, args: tuple[Any, ...]) -> None:
    sink = _sink
    if sink is not None:
        sink.emit(ev, args)


def trace_init_output(out: IO[str], fmt: str = "log",
                      timestamps: bool = False) -> None:
    """Send enabled events to ``out`` as ``log`` lines or Chrome ``json``."""
    global _sink
    trace_close_output()
    if fmt == "log":
        _sink = _LogSink(out, timestamps)
    elif fmt == "json":
        from gqemu.trace_json import JsonSink
        _sink = JsonSink(out, _track_names, trace_events)
    else:
        raise ValueError("unknown trace format '%s' (log or json)" % fmt)
    _refresh()


def trace_close_output() -> None:
    global _sink
    if _sink is not None:
        _sink.close()
        _sink = None
    _refresh()

