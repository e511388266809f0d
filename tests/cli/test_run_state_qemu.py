"""The stop policy against real QEMU 7.2 (``qemu-system-x86_64``), the same
steps on both: a PIO WRITE SECTORS whose write fails once with ENOSPC
(blkdebug ``write_aio``, ``werror=enospc``, the default).  Observed on each:
the run state after the error, the status register read from outside the
guest while paused (HMP ``i /b 0x1f7`` / an I/O space read), the image
while paused, then ``cont``: the run state, the status, the image; and the
``runstate_set`` / ``vm_state_notify`` / ``ide_sector_write`` trace lines
from the first write to its retry.

QEMU is driven over HMP with a BIOS that only halts (so nothing but the
monitor touches the disk); gqemu through the Machine API (``run`` returns
when the VM stops, ``cont`` resumes it).  The QEMU side is not on CI's
machine (it installs qemu-utils only): skipped where qemu-system-x86_64 is
missing."""
from __future__ import annotations

import io
import re
import time
import subprocess
from pathlib import Path

import pytest

from gqemu.hw.memory import MEMTXATTRS_UNSPECIFIED, address_space_rw
from gqemu.machine import Machine, drive_config, make_scratch_disk
from gqemu.trace import trace_close_output, trace_enable_events, trace_init_output, trace_reset

pytestmark = pytest.mark.timeout(120)

LBA = 5
DATA = bytes(range(256)) * 2
PROMPT = "(qemu) "


def halting_bios() -> bytes:
    """64 KiB whose reset vector (F000:FFF0) is ``cli; hlt; jmp $-1``."""
    rom = bytearray(b"\xf4" * 0x10000)
    rom[0xFFF0:0xFFF4] = b"\xfa\xf4\xeb\xfd"
    return bytes(rom)


class Hmp:
    """qemu-system-x86_64 with its human monitor on a pipe."""

    def __init__(self, exe: str, tmp: Path, drive: str) -> None:
        bios = tmp / "hlt.bin"
        bios.write_bytes(halting_bios())
        self.p = subprocess.Popen(
            [exe, "-S", "-display", "none", "-nodefaults", "-machine", "pc,accel=tcg",
             "-bios", str(bios), "-monitor", "stdio", "-drive", drive,
             "-trace", "runstate_set", "-trace", "vm_state_notify",
             "-trace", "ide_sector_write"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._read_to_prompt()

    def _read_to_prompt(self) -> str:
        buf = b""
        while not buf.endswith(PROMPT.encode()):
            c = self.p.stdout.read(1)               # type: ignore[union-attr]
            if not c:
                raise AssertionError("QEMU ended: %r" % buf)
            buf += c
        # drop the monitor's line editing (escape sequences, echo)
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", buf.decode(errors="replace"))
        return text

    def cmd(self, line: str) -> str:
        self.p.stdin.write((line + "\n").encode())  # type: ignore[union-attr]
        self.p.stdin.flush()                        # type: ignore[union-attr]
        return self._read_to_prompt()

    def status(self) -> str:
        return re.search(r"VM status: ([a-z\- ()]+)", self.cmd("info status")).group(1).strip()

    def inb(self, port: int) -> int:
        return int(re.search(r"portb\[0x[0-9a-f]+\] = 0x([0-9a-f]+)",
                             self.cmd("i /b 0x%x" % port)).group(1), 16)

    def close(self) -> str:
        """Quit; returns the trace (stderr)."""
        try:
            self.p.stdin.write(b"quit\n")           # type: ignore[union-attr]
            self.p.stdin.close()                    # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        err = self.p.stderr.read().decode()         # type: ignore[union-attr]
        self.p.wait(timeout=30)
        return err


def from_write_to_retry(trace: str) -> list[str]:
    """The trace lines from the first ide_sector_write to the second."""
    lines = [ln for ln in trace.splitlines() if ln.split(" ")[0] in
             ("runstate_set", "vm_state_notify", "ide_sector_write")]
    writes = [i for i, ln in enumerate(lines) if ln.startswith("ide_sector_write")]
    assert len(writes) == 2, trace
    return lines[writes[0]:writes[1] + 1]


def _setup(tmp: Path) -> tuple[Path, str]:
    img = tmp / "d.img"
    make_scratch_disk(str(img), size_mib=1)
    conf = tmp / "bd.conf"
    conf.write_text('[inject-error]\nevent = "write_aio"\nerrno = "28"\nonce = "on"\n')
    return img, "file=blkdebug:%s:%s,format=raw,if=ide,index=0" % (conf, img)


def _sector(img: Path) -> bytes:
    return img.read_bytes()[LBA * 512:(LBA + 1) * 512]


def observe_qemu(exe: str, tmp: Path) -> list:
    img, drive = _setup(tmp)
    before = _sector(img)
    q = Hmp(exe, tmp, drive)
    try:
        q.cmd("cont")
        assert q.status() == "running"
        for port, v in ((0x3F6, 0x02), (0x1F6, 0xE0), (0x1F2, 1), (0x1F3, LBA),
                        (0x1F4, 0), (0x1F5, 0), (0x1F7, 0x30)):
            q.cmd("o /b 0x%x 0x%x" % (port, v))
        for i in range(0, 512, 2):
            q.cmd("o /h 0x1f0 0x%x" % int.from_bytes(DATA[i:i + 2], "little"))
        seen = [q.status(), q.inb(0x1F7), _sector(img) == before]
        q.cmd("cont")
        state = q.status()
        st = q.inb(0x1F7)
        for _ in range(500):            # the retry may still be in flight (BSY)
            if not st & 0x80:
                break
            time.sleep(0.01)
            st = q.inb(0x1F7)
        seen += [state, st, _sector(img) == DATA]
    finally:
        trace = q.close()
    return seen + from_write_to_retry(trace)


def observe_gqemu(tmp: Path) -> list:
    img, drive = _setup(tmp)
    before = _sector(img)

    def guest(cpu):
        for port, v in ((0x3F6, 0x02), (0x1F6, 0xE0), (0x1F2, 1), (0x1F3, LBA),
                        (0x1F4, 0), (0x1F5, 0), (0x1F7, 0x30)):
            cpu.outb(port, v)
        for i in range(0, 512, 2):
            cpu.outw(0x1F0, int.from_bytes(DATA[i:i + 2], "little"))
        while cpu.inb(0x1F7) & 0x80:
            pass

    def monitor_inb(m: Machine, port: int) -> int:
        buf = bytearray(1)
        address_space_rw(m.as_io, port, MEMTXATTRS_UNSPECIFIED, buf, 1, False)
        return buf[0]

    out = io.StringIO()
    trace_init_output(out, "log")
    for pat in ("runstate_set", "vm_state_notify", "ide_sector_write"):
        trace_enable_events(pat)
    m = Machine(drive_config([drive]))
    try:
        m.add_cpu(guest)
        state = m.run()
        seen = [{"io-error": "paused (io-error)"}.get(state, state), monitor_inb(m, 0x1F7),
                _sector(img) == before]
        m.cont()
        state = m.runstate
        m.run()
        seen += [state, monitor_inb(m, 0x1F7), _sector(img) == DATA]
    finally:
        m.close()
        trace_close_output()
        trace_reset()
    return seen + from_write_to_retry(out.getvalue())


def test_enospc_stop_and_cont_as_qemu(tmp_path, qemu_system):
    exe = qemu_system
    (tmp_path / "q").mkdir()
    (tmp_path / "g").mkdir()
    want = observe_qemu(exe, tmp_path / "q")
    # what QEMU 7.2 shows (reliability.md §4.3): paused (io-error), 0x50, kept; cont retries
    assert want[:6] == ["paused (io-error)", 0x50, True, "running", 0x50, True]
    assert want[6:] == [
        "ide_sector_write sector=5 nsectors=1",
        "runstate_set current_run_state 9 (running) new_state 3 (io-error)",
        "vm_state_notify running 0 reason 3 (io-error)",
        "runstate_set current_run_state 3 (io-error) new_state 9 (running)",
        "vm_state_notify running 1 reason 9 (running)",
        "ide_sector_write sector=5 nsectors=1"]
    assert observe_gqemu(tmp_path / "g") == want
