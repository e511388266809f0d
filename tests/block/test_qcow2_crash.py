"""Crash consistency: SIGKILL a gqemu writer process at random points of an
allocating write workload, then ``qemu-img check`` must find no corruption
(leaks allowed) and every write flushed before the kill must read back.

The writer is this file run as a script (``python test_qcow2_crash.py IMG
SEED``): it writes 4 KiB-aligned patterns through the block API
(BlockBackend -> qcow2 -> file-posix -> thread pool) and logs each write
(``W off len byte``) before issuing it and each completed flush (``F``).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SIZE = 32 * 1024 * 1024
BLK = 4096
HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]


def writer_main(img: str, seed: int) -> None:
    import gqemu.block as b
    blk = b.blk_new_open(img, {"format": "qcow2", "cache": "writeback"})
    rnd = random.Random(seed)
    out = sys.stdout
    out.write("O\n")
    out.flush()
    while True:
        if rnd.random() < 0.15:
            assert b.blk_flush(blk) == 0
            out.write("F\n")
            out.flush()
            continue
        off = rnd.randrange(0, SIZE // BLK) * BLK
        n = min(rnd.randrange(1, 40) * BLK, SIZE - off)
        val = rnd.randrange(1, 256)
        out.write("W %d %d %d\n" % (off, n, val))
        out.flush()
        b.blk_pwrite(blk, off, bytes([val]) * n)


def writer_server() -> None:
    """Import the block layer once, then fork one writer per request
    (``IMG SEED`` on stdin), relaying its log and reporting its exit status;
    the test SIGKILLs the forked writer (pid sent first)."""
    import gqemu.block  # noqa: F401
    out = sys.stdout
    for req in sys.stdin:
        img, seed = req.split()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.dup2(w, 1)
            sys.stdout = os.fdopen(1, "w")
            try:
                writer_main(img, int(seed))
            finally:
                os._exit(0)
        os.close(w)
        out.write("PID %d\n" % pid)
        out.flush()
        with os.fdopen(r) as child:
            for line in child:
                out.write(line)
                out.flush()
        _, status = os.waitpid(pid, 0)
        out.write("END %d\n" % status)
        out.flush()


class WriterServer:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.p = subprocess.Popen([sys.executable, str(HERE), "server"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=env, text=True)

    def run_and_kill(self, img: Path, seed: int, kill_after: int) -> list[str]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("%s %d\n" % (img, seed))
        self.p.stdin.flush()
        first = self.p.stdout.readline().split()
        assert first[0] == "PID", first
        pid = int(first[1])
        lines: list[str] = []
        killed = False
        while True:
            line = self.p.stdout.readline().strip()
            assert line, "writer server died"
            if line.startswith("END"):
                status = int(line.split()[1])
                break
            lines.append(line)
            if len(lines) >= kill_after and not killed:
                os.kill(pid, signal.SIGKILL)
                killed = True
        assert killed and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert lines and lines[0] == "O"
        return lines

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait()


def crash_rounds(qemu_img: str, tmp_path: Path, opts: str, rounds: int, seed: int,
                 lazy: bool) -> dict[str, int]:
    img, raw = tmp_path / "c.qcow2", tmp_path / "c.raw"
    subprocess.run(["gqemu-img", "create", "-q", "-f", "qcow2", "-o", opts, str(img),
                    str(SIZE)], check=True)
    durable: dict[int, int] = {}                    # block -> byte flushed there
    rnd = random.Random(seed)
    stats = {"kills": 0, "leaks": 0, "dirty": 0, "checked_blocks": 0}
    server = WriterServer()
    try:
        _rounds(qemu_img, img, raw, rounds, seed, lazy, rnd, durable, stats, server)
    finally:
        server.close()
    return stats


def _rounds(qemu_img: str, img: Path, raw: Path, rounds: int, seed: int, lazy: bool,
            rnd: random.Random, durable: dict[int, int], stats: dict[str, int],
            server: WriterServer) -> None:
    for r in range(rounds):
        lines = server.run_and_kill(img, seed * 1000 + r, rnd.randrange(3, 90))
        stats["kills"] += 1
        pending: dict[int, set[int]] = {}
        for line in lines[1:]:
            if line == "F":
                for blk, vals in pending.items():
                    durable[blk] = max(vals, key=lambda v: v >> 8) & 0xFF
                pending = {}
            elif line.startswith("W "):
                off, n, val = map(int, line.split()[1:])
                for blk in range(off // BLK, (off + n) // BLK):
                    pending.setdefault(blk, set()).add((_seq(pending, blk) << 8) | val)
        check = subprocess.run([qemu_img, "check", str(img)], capture_output=True, text=True)
        dirty = bool(_incompat(img) & 1)
        stats["dirty"] += dirty
        if lazy and dirty:
            assert check.returncode in (0, 2, 3), check.stdout + check.stderr
            import gqemu.block as b                 # a writable open repairs it
            b.blk_unref(b.blk_new_open(str(img), {"format": "qcow2"}))
            check = subprocess.run([qemu_img, "check", str(img)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
        assert check.returncode in (0, 3), "round %d: %s%s" % (r, check.stdout, check.stderr)
        stats["leaks"] += check.returncode == 3
        subprocess.run([qemu_img, "convert", "-O", "raw", str(img), str(raw)], check=True)
        data = raw.read_bytes()
        for blk in set(durable) | set(pending):
            got = data[blk * BLK]
            assert data[blk * BLK:(blk + 1) * BLK] == bytes([got]) * BLK, "torn block %d" % blk
            allowed = {durable.get(blk, 0)} | {v & 0xFF for v in pending.get(blk, ())}
            assert got in allowed, "round %d block %d: %d not in %s" % (r, blk, got, allowed)
            stats["checked_blocks"] += blk in durable
            durable[blk] = got


def _seq(pending: dict[int, set[int]], blk: int) -> int:
    return len(pending.get(blk, ()))


def _incompat(img: Path) -> int:
    with open(img, "rb") as f:
        f.seek(72)
        return int.from_bytes(f.read(8), "big")


@pytest.fixture
def shm_path(tmp_path):
    """A scratch folder in tmpfs when there is one: a process kill keeps the
    page cache, so fdatasync buys nothing here but time."""
    import shutil
    import tempfile
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="gqemu-crash-", dir="/dev/shm"))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


@pytest.mark.timeout(240)
def test_sigkill_lazy_refcounts_off(qemu_img, shm_path):
    tmp_path = shm_path
    stats = crash_rounds(qemu_img, tmp_path, "cluster_size=4096", 44, seed=11, lazy=False)
    assert stats["kills"] >= 40 and stats["checked_blocks"] > 100
    assert stats["dirty"] == 0


@pytest.mark.timeout(120)
def test_sigkill_lazy_refcounts_on_repairs_on_open(qemu_img, shm_path):
    tmp_path = shm_path
    stats = crash_rounds(qemu_img, tmp_path, "cluster_size=65536,lazy_refcounts=on", 8,
                         seed=5, lazy=True)
    assert stats["kills"] == 8


if __name__ == "__main__":
    if sys.argv[1:] == ["server"]:
        writer_server()
    else:
        writer_main(sys.argv[1], int(sys.argv[2]))
