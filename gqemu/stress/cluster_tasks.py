"""The worker side of ``gqemu stress --scheduler`` (:mod:`gqemu.stress.cluster`).

Dask tasks (:func:`batch_task`, :func:`failure_task`, :func:`warm_task`)
run in a Dask worker's task threads.  Each thread hands its work to a
child process of its own (:func:`serve`, started with ``GQEMU_STRESS=1``
and kept for the next task): the engine must not run in the Dask process
(``GQEMU_STRESS`` has to be set before ``gqemu.coroutine`` is imported,
and the engine owns its thread's event loop).  :func:`identity` (gqemu's
version and a hash of its source tree) is what the client compares with
its own; every task checks it again and logs its start and end under the
Dask event topic :data:`TOPIC`.

Imported by Dask workers when they unpickle a task: imports nothing of
Dask at module level, nothing of the engine outside the child.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional

__all__ = ["TOPIC", "VersionMismatch", "identity", "describe", "worker_identity",
           "warm_task", "batch_task", "failure_task", "serve"]

TOPIC = "gqemu-stress"


class VersionMismatch(Exception):
    """A worker runs other gqemu code than the client."""


# -- identity -------------------------------------------------------------

_ident: Optional[dict[str, str]] = None


def identity(fresh: bool = False) -> dict[str, str]:
    """gqemu's version and a hash of every .py file of the package (read
    again with ``fresh``: a Dask worker outlives upgrades of its files)."""
    global _ident
    if _ident is None or fresh:
        import gqemu
        root = os.path.dirname(os.path.abspath(gqemu.__file__))
        h = hashlib.sha256()
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(d, name)
                    h.update(os.path.relpath(path, root).encode() + b"\0")
                    with open(path, "rb") as f:
                        h.update(f.read() + b"\0")
        _ident = {"version": gqemu.__version__, "source": h.hexdigest()[:16]}
    return _ident


def describe(ident: dict[str, str]) -> str:
    return "gqemu %s (source %s)" % (ident.get("version"), ident.get("source"))


def _check(ident: dict[str, str], where: str) -> None:
    mine = identity(fresh=True)
    if mine != ident:
        raise VersionMismatch("worker %s runs %s, the client %s" %
                              (where, describe(mine), describe(ident)))


# -- worker side: tasks and their child processes -------------------------

class _Child:
    """A ``GQEMU_STRESS=1`` process running :func:`serve`."""

    def __init__(self) -> None:
        import gqemu
        top = os.path.dirname(os.path.dirname(os.path.abspath(gqemu.__file__)))
        env = dict(os.environ, GQEMU_STRESS="1")
        env["PYTHONPATH"] = os.pathsep.join(
            [top] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from gqemu.stress.cluster_tasks import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("gqemu stress child exited with status %s"
                               % self.proc.wait())
        return json.loads(line)  # type: ignore[no-any-return]


_idle: list[_Child] = []
_idle_lock = threading.Lock()


def _child_call(msg: dict[str, Any]) -> dict[str, Any]:
    with _idle_lock:
        child = _idle.pop() if _idle else None
    if child is None or child.proc.poll() is not None:
        child = _Child()
    try:
        reply = child.call(msg)
    except BaseException:
        child.proc.kill()
        raise
    if "mismatch" in reply:
        child.proc.kill()
        return reply
    with _idle_lock:
        _idle.append(child)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply


def _handle(msg: dict[str, Any]) -> dict[str, Any]:
    from gqemu.stress import runner
    if msg["op"] == "ping":             # warm up: import every workload now
        from gqemu.stress.engine import WORKLOADS, workload_class
        for name in WORKLOADS:
            try:
                workload_class(name)
            except ImportError:
                pass
        return {}
    config = msg["config"]
    if msg["op"] == "batch":
        t0 = time.perf_counter()
        recs = runner.run_batch(config, msg["start"], msg["count"])
        return {"records": recs, "elapsed": time.perf_counter() - t0}
    with tempfile.TemporaryDirectory(prefix="gqemu-stress-") as d:
        ev = runner.failure_event(dict(config, out=d), msg["i"])
        with open(ev["repro"], encoding="utf-8") as f:
            text = f.read()
    ev["repro"] = os.path.basename(ev["repro"])
    return {"event": ev, "repro_text": text}


def serve() -> None:
    """Child process: answer one JSON request per line of stdin."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                   # stray prints go to stderr, not the replies
    mine = identity()               # the code this process runs
    try:
        for line in sys.stdin:
            try:
                msg = json.loads(line)
                reply: dict[str, Any]
                if msg.get("ident", mine) != mine:
                    reply = {"mismatch": mine}
                else:
                    reply = _handle(msg)
            except Exception as e:
                reply = {"error": "%s: %s" % (type(e).__name__, e)}
            out.write(json.dumps(reply) + "\n")
            out.flush()
    except (BrokenPipeError, KeyboardInterrupt):   # the worker is gone
        pass


def worker_identity() -> dict[str, str]:
    return identity(fresh=True)


def _task(campaign: str, ident: dict[str, str], batch: int,
          msg: dict[str, Any]) -> dict[str, Any]:
    from distributed import get_worker
    w = get_worker()
    _check(ident, w.address)
    w.log_event(TOPIC, {"campaign": campaign, "batch": batch, "worker": w.address,
                        "what": "start"})
    reply = _child_call(dict(msg, ident=ident))
    if "mismatch" in reply:         # a child started before gqemu changed here
        raise VersionMismatch("worker %s runs %s in its stress process, the client %s"
                              % (w.address, describe(reply["mismatch"]), describe(ident)))
    w.log_event(TOPIC, {"campaign": campaign, "batch": batch, "worker": w.address,
                        "what": "end"})
    reply["worker"] = w.address
    return reply


def warm_task(ident: dict[str, str]) -> str:
    """Dask task: start this thread's child process before the campaign."""
    from distributed import get_worker
    addr = get_worker().address
    _check(ident, addr)
    reply = _child_call({"op": "ping", "ident": ident})
    if "mismatch" in reply:
        raise VersionMismatch("worker %s runs %s in its stress process, the client %s"
                              % (addr, describe(reply["mismatch"]), describe(ident)))
    return addr  # type: ignore[no-any-return]


def batch_task(campaign: str, ident: dict[str, str], batch: int,
               config: dict[str, Any], start: int, count: int) -> dict[str, Any]:
    """Dask task: run iterations ``start .. start + count - 1``."""
    return _task(campaign, ident, batch,
                 {"op": "batch", "config": config, "start": start, "count": count})


def failure_task(campaign: str, ident: dict[str, str], batch: int,
                 config: dict[str, Any], i: int) -> dict[str, Any]:
    """Dask task: shrink the failing iteration ``i``; returns the failure
    event and the reproducer file's text."""
    return _task(campaign, ident, batch, {"op": "failure", "config": config, "i": i})
