"""Chrome trace-event JSON output (``--trace-format json``) that Perfetto's
UI and chrome://tracing open: instant events, duration slices and flow
arrows, one track per greenlet and per worker thread.

Every enabled event is an instant (``"ph": "i"``) on the track of the
greenlet that emitted it.  Some events also open or close a slice, written
as one complete event (``"ph": "X"``, ``ts`` and ``dur`` in microseconds)
when it closes:

===========================  ======================================  ==========
slice                        from event -> to event                  track
===========================  ======================================  ==========
request (``blk_aio_preadv``  ``blk_aio_prwv`` -> ``blk_aio_complete``  ``block requests N``
...)
coroutine run (its entry)    ``qemu_coroutine_enter`` ->              the coroutine's
                             ``qemu_coroutine_yield`` / ``_terminate``
worker call (``aio_worker``) ``thread_pool_work`` -> ``_work_done``   the worker thread's
completion (``thread_pool_   ``thread_pool_complete`` ->              the greenlet that ran
completion_bh``)             ``thread_pool_complete_done``            the bottom half
vCPU exit (``KVM_EXIT_IO``)  ``kvm_run_exit`` -> next                 ``vCPU N``
                             ``kvm_vcpu_ioctl`` or ``kvm_halt``
===========================  ======================================  ==========

A request starts in one greenlet and completes in another, and requests
overlap, so request slices go on lanes of their own: a request takes the
first ``block requests N`` track that is free.  Each request's flow
(``"ph"`` ``s`` / ``t`` / ``f``, ``"id"`` the request's number, bound to
the enclosing slice) steps from its submission to each run of its
coroutine, the worker call, the completion bottom half, the coroutine's
wake-up, and ends at the request's completion.

Perfetto binds a flow point to the slice on top of its track's stack when
it reads the point, and an instant is a slice of no duration there.  So a
slice starts 2 ns before the event that opens it and ends 2 ns after the
one that closes it, and a flow point lies 1 ns after the slice's start,
before any instant inside it (the completion's, 1 ns before its end).
A slice is opened only while the events that close it are enabled as
well (``--trace 'thread_pool_complete'`` alone draws no slice), and slices
still open when the output is closed end then.

Must not import: anything in gqemu.  gqemu.trace makes the sink and hands
it what it reads there (the track names and the event table), so the two
modules do not import each other.
QEMU: none (QEMU's trace backends have no slices; Perfetto's JSON importer
and Chrome's trace event format).
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import IO, Any, Callable, Optional, Protocol

from greenlet import getcurrent

__all__ = ["JsonSink"]

# blk_aio_prwv's co_entry -> the blk_aio_* call that submitted the request
_REQUEST_NAMES = {
    "blk_aio_read_entry": "blk_aio_preadv", "blk_aio_write_entry": "blk_aio_pwritev",
    "blk_aio_flush_entry": "blk_aio_flush", "blk_aio_pdiscard_entry": "blk_aio_pdiscard",
}
# linux/kvm.h exit reasons
_EXIT_NAMES = {2: "KVM_EXIT_IO", 5: "KVM_EXIT_HLT", 6: "KVM_EXIT_MMIO",
               8: "KVM_EXIT_SHUTDOWN", 17: "KVM_EXIT_INTERNAL_ERROR"}


def _us(ns: int) -> float:
    # Microseconds, as the format wants, a quarter nanosecond above ``ns``:
    # Perfetto reads back ``ns`` whether it truncates ts * 1000 (older
    # versions) or rounds it.
    return (ns + 0.25) / 1000.0


class _Event(Protocol):
    """What the sink reads of a gqemu.trace.TraceEvent."""

    name: str

    def format(self, args: tuple[Any, ...]) -> str: ...


class JsonSink:
    """Chrome trace-event format, streamed as a JSON array.  ``track_names``
    maps (thread ident, id(greenlet)) to a track's name; ``events`` returns
    the event table (name -> event, whose ``fn.enabled`` is its state)."""

    def __init__(self, out: IO[str], track_names: dict[tuple[int, int], str],
                 events: Callable[[], dict[str, Any]]) -> None:
        self.out = out
        self.track_names = track_names
        self.events = events
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.tids: dict[Any, int] = {}
        self.t0 = time.perf_counter_ns()
        self.first = True
        # slice key -> [tid, begin ns, name, args]
        self.open: dict[Any, list[Any]] = {}
        self.lanes: list[bool] = []                # block request lanes in use
        self.requests: dict[int, tuple[int, int]] = {}   # id(acb) -> flow, lane
        self.co_flow: dict[int, int] = {}          # id(coroutine) -> flow
        self.req_flow: dict[int, int] = {}         # id(thread pool request) -> flow
        self.next_flow = 1
        self.out.write("[\n")
        self._write({"name": "process_name", "ph": "M", "pid": self.pid,
                     "tid": 0, "args": {"name": "gqemu"}})

    def _write(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj, separators=(",", ":"))
        self.out.write(text if self.first else ",\n" + text)
        self.first = False

    # ------------------------------------------------------------ tracks

    def _named_track(self, key: Any, name: str) -> int:
        tid = self.tids.get(key)
        if tid is None:
            tid = len(self.tids) + 1
            self.tids[key] = tid
            self._write({"name": "thread_name", "ph": "M", "pid": self.pid,
                         "tid": tid, "args": {"name": name}})
        return tid

    def _track(self, g: Any = None) -> int:
        """The track of greenlet ``g`` (default: the current one) of the
        calling thread."""
        if g is None:
            g = getcurrent()
        key = (threading.get_ident(), id(g))
        tid = self.tids.get(key)
        if tid is not None:
            return tid
        name = self.track_names.get(key)
        if name is None:
            if threading.current_thread() is not threading.main_thread():
                name = "worker %s" % threading.current_thread().name
            elif type(g).__name__ == "Coroutine":
                name = "coroutine 0x%x" % id(g)
            elif g.parent is None:
                name = "main loop"
            else:
                name = "%s 0x%x" % (type(g).__name__, id(g))
        return self._named_track(key, name)

    # ------------------------------------------------------ slices, flows

    def _begin(self, key: Any, tid: int, ns: int, name: str,
               args: Optional[dict[str, Any]] = None) -> None:
        if key in self.open:                       # never closed: close it now
            self._end(key, ns - 4)
        self.open[key] = [tid, ns - 2, name, args]

    def _end(self, key: Any, ns: int, more: Optional[dict[str, Any]] = None) -> Optional[list[Any]]:
        s = self.open.pop(key, None)
        if s is None:
            return None
        tid, begin, name, args = s
        ev = {"name": name, "cat": "slice", "ph": "X", "ts": _us(begin),
              "dur": _us(max(ns + 2 - begin, 0)), "pid": self.pid, "tid": tid}
        if args or more:
            ev["args"] = dict(args or {}, **(more or {}))
        self._write(ev)
        return s

    def _flow(self, ph: str, fid: int, tid: int, ns: int) -> None:
        self._write({"name": "request", "cat": "request", "ph": ph, "id": fid,
                     "bp": "e", "ts": _us(ns), "pid": self.pid, "tid": tid})

    # ---------------------------------------------------------- handlers

    def _blk_aio_prwv(self, args: tuple[Any, ...], ns: int) -> None:
        _blk, acb, co, offset, nbytes, entry = args[:6]
        try:
            lane = self.lanes.index(False)
            self.lanes[lane] = True
        except ValueError:
            lane = len(self.lanes)
            self.lanes.append(True)
        tid = self._named_track(("lane", lane), "block requests %d" % (lane + 1))
        fid = self.next_flow
        self.next_flow += 1
        self.requests[id(acb)] = (fid, lane)
        self.co_flow[id(co)] = fid
        self._begin(("req", id(acb)), tid, ns, _REQUEST_NAMES.get(entry, "blk_aio_prwv"),
                    {"offset": offset, "bytes": nbytes, "request": fid})
        self._flow("s", fid, tid, ns - 1)

    def _blk_aio_complete(self, args: tuple[Any, ...], ns: int) -> None:
        acb, ret = args[1], args[2]
        req = self.requests.pop(id(acb), None)
        if req is None:
            return
        fid, lane = req
        s = self._end(("req", id(acb)), ns, {"ret": ret})
        if s is not None:
            self._flow("f", fid, s[0], ns + 1)
        self.lanes[lane] = False

    def _co_enter(self, args: tuple[Any, ...], ns: int) -> None:
        co = args[1]
        tid = self._track(co)
        entry = getattr(co, "entry", None)
        self._begin(("co", id(co)), tid, ns, getattr(entry, "__name__", "coroutine"))
        fid = self.co_flow.get(id(co))
        if fid is not None:
            self._flow("t", fid, tid, ns - 1)

    def _co_yield(self, args: tuple[Any, ...], ns: int) -> None:
        self._end(("co", id(args[0])), ns)

    def _co_terminate(self, args: tuple[Any, ...], ns: int) -> None:
        self._end(("co", id(args[0])), ns)
        self.co_flow.pop(id(args[0]), None)

    def _pool_submit(self, args: tuple[Any, ...], ns: int) -> None:
        fid = self.co_flow.get(id(getcurrent()))
        if fid is not None:
            self.req_flow[id(args[1])] = fid

    def _pool_work(self, args: tuple[Any, ...], ns: int) -> None:
        req = args[1]
        tid = self._track()
        func = getattr(req, "func", None)
        self._begin(("work", threading.get_ident()), tid, ns,
                    getattr(func, "__name__", "thread_pool_work"))
        fid = self.req_flow.get(id(req))
        if fid is not None:
            self._flow("t", fid, tid, ns - 1)

    def _pool_work_done(self, args: tuple[Any, ...], ns: int) -> None:
        self._end(("work", threading.get_ident()), ns, {"ret": args[2]})

    def _pool_complete(self, args: tuple[Any, ...], ns: int) -> None:
        req = args[1]
        tid = self._track()
        self._begin(("bh", id(req)), tid, ns, "thread_pool_completion_bh",
                    {"ret": args[3]})
        fid = self.req_flow.pop(id(req), None)
        if fid is not None:
            self._flow("t", fid, tid, ns - 1)

    def _pool_complete_done(self, args: tuple[Any, ...], ns: int) -> None:
        self._end(("bh", id(args[1])), ns)

    def _run_exit(self, args: tuple[Any, ...], ns: int) -> None:
        cpu, reason = args[0], args[1]
        self._begin(("exit", cpu), self._track(), ns,
                    _EXIT_NAMES.get(reason, "KVM exit %s" % reason))

    def _run_end(self, args: tuple[Any, ...], ns: int) -> None:
        self._end(("exit", args[0]), ns)

    HANDLERS: dict[str, Callable[["JsonSink", tuple[Any, ...], int], None]] = {
        "blk_aio_prwv": _blk_aio_prwv, "blk_aio_complete": _blk_aio_complete,
        "qemu_coroutine_enter": _co_enter, "qemu_coroutine_yield": _co_yield,
        "qemu_coroutine_terminate": _co_terminate,
        "thread_pool_submit": _pool_submit, "thread_pool_work": _pool_work,
        "thread_pool_work_done": _pool_work_done,
        "thread_pool_complete": _pool_complete,
        "thread_pool_complete_done": _pool_complete_done,
        "kvm_run_exit": _run_exit, "kvm_vcpu_ioctl": _run_end, "kvm_halt": _run_end,
    }

    # A slice opens only if the events that close it are enabled too:
    # one left open would overlap the next on its track.
    CLOSERS = {
        "blk_aio_prwv": ("blk_aio_complete",),
        "qemu_coroutine_enter": ("qemu_coroutine_yield", "qemu_coroutine_terminate"),
        "thread_pool_work": ("thread_pool_work_done",),
        "thread_pool_complete": ("thread_pool_complete_done",),
        "kvm_run_exit": ("kvm_vcpu_ioctl",),
    }

    def emit(self, ev: _Event, args: tuple[Any, ...]) -> None:
        with self.lock:
            tid = self._track()
            ns = time.perf_counter_ns() - self.t0
            self._write({"name": ev.name, "ph": "i", "s": "t", "ts": _us(ns),
                         "pid": self.pid, "tid": tid,
                         "args": {"msg": ev.format(args)}})
            handler = self.HANDLERS.get(ev.name)
            if handler is not None:
                closers = self.CLOSERS.get(ev.name)
                if closers is not None:
                    table = self.events()
                    if not all(c in table and table[c].fn.enabled  # type: ignore[attr-defined]
                               for c in closers):
                        return
                handler(self, args, ns)

    def close(self) -> None:
        with self.lock:
            ns = time.perf_counter_ns() - self.t0
            for key in list(self.open):
                self._end(key, ns)
            self.out.write("\n]\n")
            self.out.flush()
