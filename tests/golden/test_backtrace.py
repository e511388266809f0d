"""The flow view reproduces the seed's three GDB backtraces.

``gqemu run scripts/examples/read_lba0.py --backtrace`` must print, for the
first request, the chains in ``backtrace-chains.txt``; and those chains are
checked against the seed file itself (QEMU 2.8 under GDB), with the frames
that are libc's or the kernel's (``start_thread``, ``clone``, ``??``) left
out and the final syscall (``pread64``) standing for the Python ``os`` call.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FRAME = re.compile(r"#(\d+)\s+(\S+) \((.*)\) at (\S+):(\d+)$")


def golden() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur = None
    for line in (HERE / "backtrace-chains.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            cur = out.setdefault(line.strip("[]"), [])
        else:
            cur.append(line)  # type: ignore[union-attr]
    return out


def parse_report(text: str) -> dict[str, list[re.Match]]:
    out: dict[str, list[re.Match]] = {}
    cur = None
    for line in text.splitlines():
        if line[:3] in ("1. ", "2. ", "3. "):
            cur = out.setdefault({"1": "vcpu", "2": "coroutine", "3": "worker"}[line[0]], [])
        m = FRAME.match(line)
        if m and cur is not None:
            cur.append(m)
    return out


@pytest.fixture(scope="module")
def report() -> str:
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-c", "import sys; from gqemu.cli.main import main; "
                        "sys.exit(main())", "run",
                        str(ROOT / "scripts" / "examples" / "read_lba0.py"), "--backtrace"],
                       cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_chains_match_golden(report):
    got = parse_report(report)
    want = golden()
    assert set(got) == {"vcpu", "coroutine", "worker"}
    for k in want:
        assert [m.group(2) for m in got[k]] == want[k], k


def test_frames_are_gdb_style(report):
    got = parse_report(report)
    for chain in got.values():
        for n, m in enumerate(chain):
            assert int(m.group(1)) == n
            assert (ROOT / m.group(4)).is_file(), m.group(4)
            assert int(m.group(5)) > 0
            path = m.group(4)
            assert "gevent" not in path and "greenlet" not in path
    prwv = got["vcpu"][0]
    assert prwv.group(2) == "blk_aio_prwv"
    args = dict(a.split("=", 1) for a in prwv.group(3).split(", "))
    assert args["offset"] == "0x0" and args["nbytes"] == "0x200"       # LBA 0, 1 sector
    assert args["co_entry"].endswith("<blk_aio_read_entry>")
    assert args["cb"].endswith("<ide_buffered_readv_cb>")
    kvm = next(m for m in got["vcpu"] if m.group(2) == "kvm_handle_io")
    kargs = dict(a.split("=", 1) for a in kvm.group(3).split(", "))
    assert (kargs["port"], kargs["direction"], kargs["size"], kargs["count"]) == \
        ("0x1f7", "0x1", "0x1", "0x1")
    worker = got["worker"][0]
    assert worker.group(2) in ("pread", "preadv")
    assert "offset=0x0" in worker.group(3)


def seed_chains(text: str) -> dict[str, list[str]]:
    sections = re.split(r"\n-{20,}\n(\d(?:\.\d)?)\. ", text)
    out: dict[str, list[str]] = {}
    for i in range(1, len(sections), 2):
        names = [m.group(1) for m in re.finditer(r"^#\d+\s+(\S+) \(", sections[i + 1], re.M)]
        out[sections[i]] = [n for n in names if n not in ("start_thread", "clone", "??")]
    return out


def test_golden_is_the_seed(report, seed_text):
    seed = seed_chains(seed_text)
    want = golden()
    assert want["vcpu"] == seed["1"]
    assert want["coroutine"] == seed["2"]
    # the seed's 3.2 is the linear path: pread64 <- handle_aiocb_rw_linear
    assert seed["3.2"][0] == "pread64"
    assert want["worker"][1:] == seed["3.2"][1:]
    assert want["worker"][0] in ("pread", "preadv")


@pytest.mark.usefixtures("kvm")
def test_chains_from_a_real_vcpu(tmp_path):
    """Under --accel kvm the first request is the firmware's read of the
    boot sector (LBA 0, one sector, as SeaBIOS reads it), made by the vCPU
    itself: the same three chains, from qemu_kvm_cpu_thread_fn down."""
    from gqemu.machine import make_scratch_disk
    disk = tmp_path / "boot.img"
    make_scratch_disk(str(disk), size_mib=1,
                      mbr=(ROOT / "tests" / "data" / "kvm" / "irqwait.bin").read_bytes())
    p = subprocess.run([sys.executable, "-c", "import sys; from gqemu.cli.main import main; "
                        "sys.exit(main())", "run", "--accel", "kvm", "--drive",
                        "file=%s,format=raw" % disk, "--debugcon", str(tmp_path / "con"),
                        "--backtrace", "--timeout", "30"],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert p.returncode == 33, p.stderr
    got = parse_report(p.stdout)
    for k, want in golden().items():
        assert [m.group(2) for m in got[k]] == want, k
    args = dict(a.split("=", 1) for a in got["vcpu"][0].group(3).split(", "))
    assert args["offset"] == "0x0" and args["nbytes"] == "0x200"


def test_io_uring_chain_ends_at_the_ring(tmp_path):
    """With ``aio=io_uring`` the coroutine hands the request to the kernel
    (``luring_co_submit``, QEMU's block/io_uring.c) below the seed's block
    path, and the report says there is no worker thread, not that the
    guest made no request."""
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    p = subprocess.run([sys.executable, "-c", "import sys; from gqemu.cli.main import main; "
                        "sys.exit(main())", "run",
                        str(ROOT / "scripts" / "examples" / "read_lba0.py"), "--backtrace",
                        "--drive", "file=%s,format=raw,aio=io_uring" % disk],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = parse_report(p.stdout)
    chain = [m.group(2) for m in got["coroutine"]]
    want = golden()["coroutine"]
    assert chain[0] == "luring_co_submit" and chain[1] == "raw_co_prw"
    assert chain[2:] == want[want.index("raw_co_prw") + 1:]
    assert "(none: with aio=io_uring the kernel does the I/O, no worker thread)" in p.stdout
