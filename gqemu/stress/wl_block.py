"""Block-layer workload: coroutines issuing random overlapping reads,
writes, write-zeroes, discards and flushes through ``blk_co_*`` and
``blk_aio_*`` on raw or qcow2 over blkdebug over a file; half the qcow2 runs use a raw
backing file (half of those with copy-on-read, whose reads serialise).

The blkdebug node gets ``align=4096`` on raw images, so writes that are
not 4 KiB aligned take the read-modify-write path that block/io.c
serialises; qcow2 images (4 KiB clusters) allocate and copy clusters.
With ``--faults P`` blkdebug rules fail requests with EIO/ENOSPC once
after random events.

Invariants: ``shadow_read`` (every read and the final read of the whole
disk agree with :class:`~gqemu.stress.shadow.ShadowDisk`);
``serialising_overlap`` (whenever a request reaches the file, no other
request overlapping it with either side serialising is doing I/O);
``completion_once``; ``request_error`` (no failure without an injected
fault); after drain, no tracked request left on any node; for qcow2,
``gqemu-img check`` and ``qemu-img check`` find no corruption (and no
leak unless a fault was injected).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import os
import random
import shutil
import subprocess
import tempfile
from typing import Any, Optional

from greenlet import getcurrent

from gqemu.aio import aio_co_wake
from gqemu.block import (BDRV_REQ_FUA, BDRV_REQ_MAY_UNMAP,
                         blk_aio_flush, blk_aio_pdiscard, blk_aio_preadv,
                         blk_aio_pwrite_zeroes, blk_aio_pwritev, blk_bs,
                         blk_co_flush, blk_co_pdiscard, blk_co_preadv,
                         blk_co_pwrite_zeroes, blk_co_pwritev, blk_new_open,
                         blk_pread, blk_unref)
from gqemu.block.qiov import qemu_iovec_init_buf
from gqemu.coroutine import qemu_coroutine_yield
from gqemu.stress.engine import CoroutineWorkload, Env, Options
from gqemu.stress.shadow import INITIAL, ZERO, ShadowDisk, pattern

UNIT = 256
SIZE = 128 * 1024
RAW_EVENTS = ("read_aio", "write_aio", "pwritev", "pwritev_rmw_head",
              "pwritev_rmw_tail", "pwritev_rmw_after_head", "pwritev_done")
QCOW2_EVENTS = ("read_aio", "write_aio", "l2_update", "l2_alloc_write",
                "cluster_alloc", "cow_read", "cow_write", "refblock_update_part",
                "l1_update", "flush_to_disk")
FAULT_ERRNOS = (5, 28)          # EIO, ENOSPC

_tmpdir: Optional[str] = None
_names = itertools.count()


def scratch_path(suffix: str) -> str:
    """A fresh file name in this process's scratch directory."""
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="gqemu-stress-")
        import atexit
        atexit.register(shutil.rmtree, _tmpdir, True)
    return os.path.join(_tmpdir, "disk%d.%s" % (next(_names), suffix))


def random_op(rng: random.Random, units: int, depth: int = 0) -> list[Any]:
    kind = rng.choice("rrrwwwwzdfb" if depth == 0 else "rrwwwzdf")
    mode = rng.choice(("co", "aio"))
    if kind == "f":
        return ["f", mode]
    if kind == "b":
        return ["b", [random_op(rng, units, 1) for _ in range(2 + rng.randrange(3))]]
    n = 1 + min(rng.randrange(24), rng.randrange(24))
    if rng.random() < 0.3:                   # cluster-local overlaps
        first = rng.randrange(0, units - n + 1)
    else:
        first = rng.randrange(0, min(units, 64) - n + 1)
    op = [kind, first, n, mode]
    if kind == "w":
        op.append(int(rng.random() < 0.2))   # FUA
    return op


def make_image(fmt: str) -> str:
    return make_image_sized(fmt, SIZE)


def make_image_sized(fmt: str, size: int, unit: int = UNIT) -> str:
    """A scratch image: qcow2 (4 KiB clusters, reads as zeroes) or raw
    filled with the shadow model's INITIAL pattern."""
    path = scratch_path(fmt)
    if fmt == "qcow2":
        from gqemu.block.qcow2_create import Qcow2CreateOptions, qcow2_create_file
        qcow2_create_file(path, Qcow2CreateOptions(size=size, cluster_size=4096))
    else:
        with open(path, "wb") as f:
            f.write(pattern(INITIAL, 0, size // unit, unit))
    return path


def check_qcow2(path: str, faults: int, check: Any) -> None:
    """gqemu-img check (in process) and qemu-img check (when installed)."""
    from gqemu.cli.qemu_img import main as gqemu_img
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = gqemu_img(["check", "-f", "qcow2", path])
    ok = (0, 3) if faults else (0,)
    check(rc in ok, "qcow2_check", "gqemu-img check exit %d: %s", rc,
          out.getvalue().strip().replace("\n", " | ")[:300])
    tool = shutil.which("qemu-img")
    if tool:
        p = subprocess.run([tool, "check", "-f", "qcow2", path],
                           capture_output=True, text=True)
        check(p.returncode in ok, "qcow2_check", "qemu-img check exit %d: %s",
              p.returncode, (p.stdout + p.stderr).strip().replace("\n", " | ")[:300])


def _name(bs: Any) -> str:
    return bs.drv.format_name if bs.drv is not None else "?"


class BlockWorkload(CoroutineWorkload):
    name = "block"
    points_per_request = 4

    @classmethod
    def generate(cls, seed: int, opts: Options) -> dict[str, Any]:
        rng = random.Random("gqemu-work:block:%d" % seed)
        units = SIZE // UNIT
        nprog = max(1, opts.depth)
        programs: list[list[Any]] = [[] for _ in range(nprog)]
        for _ in range(opts.requests):
            programs[rng.randrange(nprog)].append(random_op(rng, units))
        events = QCOW2_EVENTS if opts.fmt == "qcow2" else RAW_EVENTS
        faults = []
        for _ in range(opts.requests):
            if rng.random() < opts.faults:
                faults.append({"event": rng.choice(events),
                               "errno": rng.choice(FAULT_ERRNOS),
                               "sector": rng.choice((-1, rng.randrange(SIZE // 512))),
                               "once": "on",
                               "immediately": rng.choice(("on", "off"))})
        backing = opts.fmt == "qcow2" and rng.random() < 0.5
        return {"fmt": opts.fmt, "cache": rng.choice(("writeback", "writethrough", "none")),
                "backing": backing, "cor": backing and rng.random() < 0.5,
                "faults": faults, "programs": [p for p in programs if p]}

    def __init__(self, env: Env, spec: dict[str, Any]) -> None:
        super().__init__(env, spec)
        fmt = spec.get("fmt", "raw")
        self.fmt = fmt
        self.backing: Optional[str] = None
        if fmt == "qcow2" and spec.get("backing"):
            # A qcow2 overlay on a raw backing file holding INITIAL data:
            # unallocated clusters read from the backing file.
            self.backing = make_image("raw")
            self.path = scratch_path("qcow2")
            from gqemu.block.qcow2_create import Qcow2CreateOptions, qcow2_create_file
            qcow2_create_file(self.path, Qcow2CreateOptions(
                size=SIZE, cluster_size=4096, backing_file=self.backing, backing_fmt="raw"))
        else:
            self.path = make_image(fmt)
        initial = ZERO if fmt == "qcow2" and self.backing is None else INITIAL
        self.shadow = ShadowDisk(SIZE, UNIT, initial)
        options: dict[str, Any] = {"format": fmt, "cache": spec.get("cache", "writeback"),
                                   "discard": "unmap"}
        if spec.get("cor"):
            options["copy-on-read"] = "on"
        if fmt == "raw":
            options["file.align"] = 4096
        if spec.get("faults"):
            options["file.inject-error"] = [dict(r) for r in spec["faults"]]
        self.blk: Any = blk_new_open("blkdebug::" + self.path, options)
        self.nodes: list[Any] = []
        bs: Any = blk_bs(self.blk)
        while bs is not None:
            self.nodes.append(bs)
            bs = bs.file.bs if bs.file is not None else None
        self.debug: Any = next(b.opaque for b in self.nodes if _name(b) == "blkdebug")
        self.acbs: list[list[int]] = []
        self.io_active: set[Any] = set()
        self.errors_allowed = bool(spec.get("faults"))
        env.sched.observer = self

    # -- the scheduler's observer: serialising requests ---------------------

    def on_submit(self, pool: Any, req: Any) -> None:
        me = getcurrent()
        check = self.env.check
        for bs in self.nodes:
            trk = bs.tracked_requests
            mine = [r for r in trk if r.co is me]
            if not mine:
                continue
            self.io_active.update(mine)
            for t in trk:
                if t.co is me or t not in self.io_active or t.waiting_for is not None:
                    continue
                for r in mine:
                    if not (r.serialising or t.serialising) or r.waiting_for is not None:
                        continue
                    a0, a1 = r.overlap_offset, r.overlap_offset + r.overlap_bytes
                    b0, b1 = t.overlap_offset, t.overlap_offset + t.overlap_bytes
                    check(a1 <= b0 or b1 <= a0, "serialising_overlap",
                          "%s: request %d+%d%s does I/O while overlapping request"
                          " %d+%d%s is in flight", _name(bs), r.offset,
                          r.bytes, " (serialising)" if r.serialising else "",
                          t.offset, t.bytes, " (serialising)" if t.serialising else "")

    def on_run(self, req: Any) -> None:
        pass

    # -- running -------------------------------------------------------------

    def program_entry(self, arg: tuple[int, list[Any]]) -> None:
        i, prog = arg
        for j, op in enumerate(prog):
            self.trace.append([i, j] + op[:1])
            if op[0] == "b":
                waits = [self.submit(sub, batch=True) for sub in op[1]]
                for w in waits:
                    if w is not None:
                        w()
            else:
                w = self.submit(op)
                if w is not None:
                    w()
        self.running -= 1

    def _result(self, ret: int, what: str) -> None:
        if ret < 0:
            self.env.check(self.errors_allowed and -ret in FAULT_ERRNOS, "request_error",
                           "%s failed with %d and no fault was injected", what, ret)

    def submit(self, op: list[Any], batch: bool = False) -> Any:
        """Issue ``op``; returns a function that waits for it, or None if
        it already completed."""
        env = self.env
        env.requests += 1
        kind, mode = op[0], op[-1] if op[0] == "f" else op[3]
        if kind == "f":
            return self._do(mode, lambda: blk_co_flush(self.blk),
                            lambda cb, o: blk_aio_flush(self.blk, cb, o),
                            lambda ret: self._result(ret, "flush"), batch)
        first, n = op[1], op[2]
        off, nbytes = first * UNIT, n * UNIT
        sh = self.shadow
        what = "%s %d+%d" % (kind, off, nbytes)
        if kind == "r":
            buf = bytearray(nbytes)
            rid = sh.read_begin(off, nbytes)

            def done_r(ret: int) -> None:
                self._result(ret, what)
                err = sh.read_end(rid, bytes(buf) if ret >= 0 else None)
                env.check(err is None, "shadow_read", "read %d+%d: %s", off, nbytes, err)
            return self._do(mode, lambda: blk_co_preadv(self.blk, off, nbytes,
                                                        qemu_iovec_init_buf(buf), 0),
                            lambda cb, o: blk_aio_preadv(self.blk, off,
                                                         qemu_iovec_init_buf(buf), 0, cb, o),
                            done_r, batch)
        skind = {"w": "write", "z": "zero", "d": "discard"}[kind]
        wid, data = sh.write_begin(off, nbytes, skind)

        def done_w(ret: int) -> None:
            self._result(ret, what)
            sh.write_end(wid, ret, skind)
        if kind == "w":
            flags = BDRV_REQ_FUA if op[4] else 0
            qiov = qemu_iovec_init_buf(bytearray(data))
            return self._do(mode, lambda: blk_co_pwritev(self.blk, off, nbytes, qiov, flags),
                            lambda cb, o: blk_aio_pwritev(self.blk, off, qiov, flags, cb, o),
                            done_w, batch)
        if kind == "z":
            zf = BDRV_REQ_MAY_UNMAP if first % 2 else 0
            return self._do(mode, lambda: blk_co_pwrite_zeroes(self.blk, off, nbytes, zf),
                            lambda cb, o: blk_aio_pwrite_zeroes(self.blk, off, nbytes, zf,
                                                                cb, o),
                            done_w, batch)
        return self._do(mode, lambda: blk_co_pdiscard(self.blk, off, nbytes),
                        lambda cb, o: blk_aio_pdiscard(self.blk, off, nbytes, cb, o),
                        done_w, batch)

    def _do(self, mode: str, co_fn: Any, aio_fn: Any, done: Any, batch: bool) -> Any:
        if mode == "co" and not batch:
            done(co_fn())
            return None
        state = [0, getcurrent(), False]      # completions, waiter, waiting
        env = self.env

        def cb(_opaque: Any, ret: int) -> None:
            state[0] += 1
            env.check(state[0] == 1, "completion_once",
                      "request callback delivered %d times", state[0])
            done(ret)
            if state[2]:
                state[2] = False
                aio_co_wake(state[1])
        aio_fn(cb, None)

        def wait() -> None:
            while state[0] == 0:
                state[2] = True
                qemu_coroutine_yield()
        return wait

    # -- end of run ----------------------------------------------------------

    def finish(self) -> None:
        check = self.env.check
        for bs in self.nodes:
            check(not bs.tracked_requests and bs.in_flight == 0, "drain_in_flight",
                  "%s: %d tracked requests, in_flight %d after drain",
                  _name(bs), len(bs.tracked_requests), bs.in_flight)
        self._disarm()
        rid = self.shadow.read_begin(0, SIZE)
        data = blk_pread(self.blk, 0, SIZE)
        err = self.shadow.read_end(rid, data)
        check(err is None, "shadow_read", "final read of the disk: %s", err)

    def _disarm(self) -> None:
        d = self.debug
        self.env.faults = d.injected
        d.active_rules = []
        for lst in d.rules:
            del lst[:]

    def close(self, failed: bool) -> None:
        self.env.faults = self.debug.injected
        blk, self.blk = self.blk, None
        if failed:
            for bs in self.nodes:           # do not poll: just drop the fd
                fd = getattr(bs.opaque, "fd", -1)
                if _name(bs) == "file" and fd >= 0:
                    os.close(fd)
                    bs.opaque.fd = -1
        elif blk is not None:
            self._disarm()
            blk_unref(blk)
            if self.fmt == "qcow2":
                check_qcow2(self.path, self.env.faults, self.env.check)
        for path in (self.path, self.backing):
            try:
                if path:
                    os.unlink(path)
            except OSError:
                pass


WORKLOAD = BlockWorkload
