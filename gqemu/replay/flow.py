"""The flow view: gdb-style backtraces of the first request on its way down.

``gqemu run --backtrace`` shows, for the first block request, the three
stacks of the seed (ARCHITECTURE §1): the vCPU at ``blk_aio_prwv``, the
coroutine at ``thread_pool_submit_aio`` and the worker thread at its
``pread``/``preadv``.  Each is captured with ``sys._getframe`` from a
one-shot hook that costs nothing when ``--backtrace`` is off:

- a hook is a stand-in for a module global that the target function looks
  up while it runs (a trace event such as ``trace_thread_pool_submit``, a
  helper such as ``qemu_coroutine_create``, or the ``os`` module of the
  worker code); the stand-in checks that its caller is the target, records
  the caller's frame chain, and passes the call through unchanged;
- after the capture the original global is put back.

gevent's and greenlet's own frames (and Python's thread bootstrap) are left
out, so the chains read like the seed's.

Must not import: gqemu.cli.
QEMU: none (this is gdb's ``bt`` on the seed's breakpoints).
"""
from __future__ import annotations

import os
import sys
import threading
import types
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_HIDDEN = (os.sep + "gevent" + os.sep, os.sep + "greenlet" + os.sep,
           os.sep + "threading.py", __file__)


class Frame:
    """One captured frame: function, formatted arguments, file and line."""

    __slots__ = ("function", "args", "path", "line")

    def __init__(self, function: str, args: list[tuple[str, str]], path: str,
                 line: int) -> None:
        self.function = function
        self.args = args
        self.path = path
        self.line = line

    def format(self, n: int) -> str:
        a = ", ".join("%s=%s" % kv for kv in self.args)
        return "#%-2d %s (%s) at %s:%d" % (n, self.function, a, self.path, self.line)


def format_value(v: Any) -> str:
    """A value as gdb would show it, roughly: ints in hex, objects as
    addresses, functions as ``0x... <name>``."""
    if v is None:
        return "0x0"
    if isinstance(v, bool):
        return "0x1" if v else "0x0"
    if isinstance(v, int):
        return "0x%x" % v if v >= 0 else "-0x%x" % -v
    if isinstance(v, str):
        return repr(v) if len(v) <= 40 else repr(v[:37] + "...")
    if isinstance(v, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return "0x%x <%s>" % (id(v), getattr(v, "__name__", "?"))
    return "0x%x" % id(v)


def _hidden(filename: str) -> bool:
    return any(h in filename for h in _HIDDEN)


def _relpath(filename: str) -> str:
    try:
        rel = os.path.relpath(filename, _ROOT)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


def capture_stack(f: Any) -> list[Frame]:
    """The chain from frame ``f`` outwards, innermost first, hidden frames
    skipped."""
    out: list[Frame] = []
    while f is not None:
        code = f.f_code
        if not _hidden(code.co_filename):
            n = code.co_argcount + code.co_kwonlyargcount
            names = list(code.co_varnames[:n])
            if code.co_flags & 0x04:           # *args
                names.append(code.co_varnames[n])
            loc = f.f_locals
            args = [(name, format_value(loc.get(name))) for name in names]
            out.append(Frame(code.co_name, args, _relpath(code.co_filename), f.f_lineno))
        f = f.f_back
    return out


def synthetic_frame(function: str, args: list[tuple[str, Any]], where: Any) -> Frame:
    """A frame for a C-level call (``pread``) made from frame ``where``."""
    return Frame(function, [(k, format_value(v)) for k, v in args],
                 _relpath(where.f_code.co_filename), where.f_lineno)


class _GlobalHook:
    """Stand-in for ``module.name``; captures the caller once."""

    def __init__(self, flow: "FlowCapture", slot: str, module: Any, name: str,
                 targets: tuple[str, ...], when: Any = None) -> None:
        self.flow = flow
        self.when = when
        self.slot = slot
        self.module = module
        self.name = name
        self.targets = targets
        self.orig = getattr(module, name)
        self.enabled = True          # passes ``if trace_x.enabled`` guards
        self.__name__ = getattr(self.orig, "__name__", name)
        setattr(module, name, self)

    def restore(self) -> None:
        if getattr(self.module, self.name, None) is self:
            setattr(self.module, self.name, self.orig)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.orig, attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        f = sys._getframe(1)
        if (f.f_code.co_name in self.targets and self.slot not in self.flow.stacks
                and (self.when is None or self.when())):
            self.flow.stacks[self.slot] = capture_stack(f)
            self.restore()
        orig = self.orig
        if getattr(orig, "enabled", True) is False:
            return None
        return orig(*args, **kwargs)


class _OsProxy:
    """Stand-in for the ``os`` module of the worker code: captures the
    first ``pread``/``preadv`` with a synthetic innermost frame."""

    def __init__(self, flow: "FlowCapture", module: Any) -> None:
        self._flow = flow
        self._module = module
        self._lock = threading.Lock()
        module.os = self

    def restore(self) -> None:
        if getattr(self._module, "os", None) is self:
            self._module.os = os

    def __getattr__(self, attr: str) -> Any:
        return getattr(os, attr)

    def _capture(self, name: str, args: list[tuple[str, Any]]) -> None:
        with self._lock:
            if "worker" in self._flow.stacks:
                return
            f = sys._getframe(2)
            self._flow.stacks["worker"] = [synthetic_frame(name, args, f)] + capture_stack(f)
        self.restore()

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        self._capture("pread", [("fd", fd), ("count", n), ("offset", offset)])
        return os.pread(fd, n, offset)

    def preadv(self, fd: int, buffers: Any, offset: int, *flags: int) -> int:
        self._capture("preadv", [("fd", fd), ("iov", buffers),
                                 ("nr_iov", len(buffers)), ("offset", offset)])
        return os.preadv(fd, buffers, offset, *flags)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        self._capture("pwrite", [("fd", fd), ("buf", data), ("count", len(data)),
                                 ("offset", offset)])
        return os.pwrite(fd, data, offset)

    def pwritev(self, fd: int, buffers: Any, offset: int, *flags: int) -> int:
        self._capture("pwritev", [("fd", fd), ("iov", buffers),
                                  ("nr_iov", len(buffers)), ("offset", offset)])
        return os.pwritev(fd, buffers, offset, *flags)


class FlowCapture:
    """Install the three one-shot hooks; ``stacks`` fills in as the first
    request travels: ``vcpu``, ``coroutine``, ``worker``."""

    TITLES = {"vcpu": "1. vCPU", "coroutine": "2. coroutine", "worker": "3. worker thread"}

    def __init__(self) -> None:
        self.stacks: dict[str, list[Frame]] = {}
        self.hooks: list[Any] = []

    def install(self) -> "FlowCapture":
        import importlib
        bb = importlib.import_module("gqemu.block.block_backend")
        pool = importlib.import_module("gqemu.threadpool.pool")
        aiocb = importlib.import_module("gqemu.threadpool.aiocb")
        for name in ("qemu_coroutine_create", "qemu_aio_get", "blk_inc_in_flight"):
            if callable(getattr(bb, name, None)):
                self.hooks.append(_GlobalHook(self, "vcpu", bb, name, ("blk_aio_prwv",)))
                break
        # only a submission from a coroutine is the block path's (a real
        # vCPU's KVM_RUN also goes through a one-thread pool, from its greenlet)
        from gqemu.coroutine import qemu_in_coroutine
        self.hooks.append(_GlobalHook(self, "coroutine", pool, "trace_thread_pool_submit",
                                      ("thread_pool_submit_aio",), qemu_in_coroutine))
        # with aio=io_uring / aio=native the coroutine hands the request to
        # the kernel instead (and there is no worker thread)
        for modname, name, target in (("gqemu.block.io_uring", "trace_luring_co_submit",
                                        "luring_co_submit"),
                                       ("gqemu.block.linux_aio", "LinuxAioCB", "laio_co_submit")):
            self.hooks.append(_GlobalHook(self, "coroutine", importlib.import_module(modname),
                                          name, (target,), qemu_in_coroutine))
        if hasattr(aiocb, "os"):
            self.hooks.append(_OsProxy(self, aiocb))
        return self

    def remove(self) -> None:
        for h in self.hooks:
            h.restore()
        self.hooks.clear()

    def report(self) -> str:
        out = []
        for slot in ("vcpu", "coroutine", "worker"):
            frames = self.stacks.get(slot)
            names = [fr.function for fr in reversed(frames or [])]
            if len(names) > 3:
                names = names[:2] + ["..."] + names[-1:]
            out.append("-" * 79)
            out.append("%s: %s" % (self.TITLES[slot], " --> ".join(names) or "-"))
            out.append("-" * 79)
            engine = [fr.function for fr in self.stacks.get("coroutine", [])[:1]]
            if not frames and slot == "worker" and engine in (["luring_co_submit"],
                                                              ["laio_co_submit"]):
                out.append("(none: with aio=%s the kernel does the I/O, no worker thread)"
                           % ("io_uring" if engine == ["luring_co_submit"] else "native"))
            elif not frames:
                out.append("(not reached: the guest made no block request)")
            else:
                out.extend(fr.format(n) for n, fr in enumerate(frames))
            out.append("")
        return "\n".join(out)

    def chains(self) -> dict[str, list[str]]:
        """Function names per stack, outermost first (the golden test's form)."""
        return {k: [fr.function for fr in reversed(v)] for k, v in self.stacks.items()}
