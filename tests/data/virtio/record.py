#!/usr/bin/env python3
"""Re-record the legacy virtio-blk reference under real QEMU 7.2 (tests/data/virtio).

    python3 tests/data/virtio/record.py [--accel kvm|tcg] [--out DIR]

Builds virtioblk.bin from virtioblk.asm (nasm), makes the boot disk (the
program in LBA 0..3, then refdata/mkdisk.py's self-describing sectors, 2 MiB)
and the virtio data disk (self-describing sectors only, 2 MiB), boots under
qemu-system-x86_64 with the data disk on ``virtio-blk-pci,disable-modern=on``
and the virtio_*, virtqueue_* and pci_cfg_* trace events, and keeps in DIR:

    trace.log.xz             the QEMU log
    debugcon.bin             what the program wrote to port 0xE9
    vdisk-after.img.xz       the virtio disk after the run
    exitcode.txt             QEMU's exit status (33: the program finished)
    qemu-version.txt         qemu-system-x86_64 --version

then boots it again for gqemu import-qemu-trace (``record_replayable``):
``ioeventfd=off``, ``-trace 'memory_region_ops_*'`` as well, and QEMU's
gdbstub, through which (gdbremote.py) hardware breakpoints at the labels
``main``, ``submit.notify`` and ``main.done`` (from nasm's map file) read
the guest RAM the device will read and has written; that run must give
the same status and disk (its debugcon bytes, if they differ from the
first run's, are kept as debugcon-replayable.bin with a warning: the
first run's ISR read can race a completion), and adds:

    io-trace.log.xz          its QEMU log (every port access)
    guest-ram.txt.xz         the RAM snapshots (docs/trace-format.md)

The pristine data disk is ``make_disk(path, b"")`` of this script (no need
to keep it).
"""
from __future__ import annotations

import argparse
import lzma
import os
import re
import shutil
import socket
import subprocess
import tempfile
import struct
import sys
import time
from typing import Any

from gdbremote import GdbRemote

from gqemu.blockdev import scratch_sector

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE_MIB = 2


def make_disk(path: str, program: bytes) -> None:
    nprog = len(program) // 512
    with open(path, "wb") as f:
        f.write(program)
        for lba in range(nprog, SIZE_MIB * 2048):
            f.write(scratch_sector(lba))    # refdata/mkdisk.py's sector


def xz(src: str, dst: str) -> None:
    with open(src, "rb") as f, lzma.open(dst, "wb", preset=9 | lzma.PRESET_EXTREME) as out:
        shutil.copyfileobj(f, out, 1 << 20)


# The program's virtqueue (virtioblk.asm: PFN 0x10, 256 entries, legacy layout)
QUEUE = 0x10000
QSIZE = 256
AVAIL = QUEUE + 16 * QSIZE
USED = (AVAIL + 6 + 2 * QSIZE + 4095) & ~4095
AVAIL_BYTES = 6 + 2 * QSIZE             # flags, idx, ring[], used_event
USED_BYTES = 6 + 8 * QSIZE              # flags, idx, ring[], avail_event
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE = 1, 2
MAX_BUFFER = 1 << 16


def labels(asm: str, tmp: str) -> dict[str, int]:
    """The program's label addresses, from nasm's map file (the same
    source assembled through a wrapper that asks for the map)."""
    wrap, mapf = os.path.join(tmp, "wrap.asm"), os.path.join(tmp, "prog.map")
    with open(wrap, "w") as f:
        f.write("[map symbols %s]\n%%include \"%s\"\n" % (mapf, asm))
    subprocess.run(["nasm", "-f", "bin", "-o", os.path.join(tmp, "wrap.bin"), wrap], check=True)
    out = {}
    for line in open(mapf):
        m = re.match(r"\s+([0-9A-F]+)\s+([0-9A-F]+)\s+(\S+)$", line)
        if m:
            out[m.group(3)] = int(m.group(2), 16)
    return out


def chain(desc: bytes, head: int) -> list[tuple[int, int, int]]:
    """(addr, len, flags) of the descriptor chain at ``head`` (at most the
    queue size; the program uses no indirect tables)."""
    out = []
    i = head
    for _ in range(QSIZE):
        if i >= QSIZE:
            break
        addr, n, flags, nxt = struct.unpack_from("<QIHH", desc, 16 * i)
        out.append((addr, min(n, MAX_BUFFER), flags))
        if not flags & VRING_DESC_F_NEXT:
            break
        i = nxt
    return out


class RamSnapshots:
    """At each stop, what the device will read (``store``: descriptor
    table, avail ring, the device-readable buffers of the chains made
    available since the last stop) and what it wrote (``check``: used ring,
    the device-writable buffers of the chains it returned since then), each
    tagged with the size of the QEMU log at the stop."""

    def __init__(self, f: Any, log: str) -> None:
        self.f, self.log = f, log
        self.avail = self.used = 0
        f.write("# gqemu guest RAM snapshots 1: LOG-OFFSET start | LOG-OFFSET "
                "store|check ADDR HEX\n")

    def _put(self, kind: str, addr: int, data: bytes) -> None:
        self.f.write("%d %s 0x%x %s\n" % (self.offset, kind, addr, data.hex()))

    def stop(self, g: GdbRemote, kind: str) -> None:
        self.offset = os.path.getsize(self.log)
        if kind == "start":
            self.f.write("%d start\n" % self.offset)
            return
        desc = g.read(QUEUE, 16 * QSIZE)
        used = g.read(USED, USED_BYTES)
        self._put("check", USED, used)
        idx = struct.unpack_from("<H", used, 2)[0]
        while self.used != idx:
            head = struct.unpack_from("<I", used, 4 + 8 * (self.used % QSIZE))[0]
            for addr, n, flags in chain(desc, head):
                if flags & VRING_DESC_F_WRITE and n:
                    self._put("check", addr, g.read(addr, n))
            self.used = (self.used + 1) & 0xFFFF
        if kind != "notify":
            return
        avail = g.read(AVAIL, AVAIL_BYTES)
        self._put("store", QUEUE, desc)
        self._put("store", AVAIL, avail)
        idx = struct.unpack_from("<H", avail, 2)[0]
        while self.avail != idx:
            head = struct.unpack_from("<H", avail, 4 + 2 * (self.avail % QSIZE))[0]
            for addr, n, flags in chain(desc, head):
                if not flags & VRING_DESC_F_WRITE and n:
                    self._put("store", addr, g.read(addr, n))
            self.avail = (self.avail + 1) & 0xFFFF


def run_with_gdb(cmd: list[str], tmp: str, log: str, bps: dict[int, str], snap: RamSnapshots,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    """Run QEMU stopped (-S) with its gdbstub on a UNIX socket, break at
    ``bps`` (address -> kind), take the RAM snapshots, run to the end."""
    sockp = os.path.join(tmp, "gdb.sock")
    cmd = cmd + ["-S", "-chardev", "socket,id=gdb0,path=%s,server=on,wait=off" % sockp,
                 "-gdb", "chardev:gdb0"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        sock = socket.socket(socket.AF_UNIX)
        while True:
            try:
                sock.connect(sockp)
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("QEMU's gdbstub did not come up")
                time.sleep(0.05)
        sock.settimeout(timeout)
        g = GdbRemote(sock)
        g.cmd("?")
        for addr in bps:
            g.hbreak(addr)
        stop = g.resume()
        while stop is not None:
            pc = g.pc()
            if pc not in bps:
                raise RuntimeError("stopped at 0x%x, not a breakpoint (%s)" % (pc, stop))
            snap.stop(g, bps[pc])
            g.hdelete(pc)           # step over it, then put it back
            g.resume(step=True)
            g.hbreak(pc)
            stop = g.resume()
        sock.close()
        err = p.communicate(timeout=timeout)[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(cmd, p.returncode, None, err)


def qemu_cmd(a: argparse.Namespace, boot: str, vdisk: str, dbg: str, log: str,
             device_opts: str = "", traces: tuple[str, ...] = ()) -> list[str]:
    cmd = [a.qemu, "-machine", "pc", "-accel", a.accel, "-m", "16", "-display", "none",
           "-nodefaults", "-no-user-config",
           "-drive", "file=%s,format=raw,if=ide,index=0" % boot,
           "-drive", "file=%s,format=raw,if=none,id=vd0" % vdisk,
           "-device", "virtio-blk-pci,disable-modern=on,drive=vd0" + device_opts,
           "-chardev", "file,id=prog,path=%s" % dbg,
           "-device", "isa-debugcon,iobase=0xe9,chardev=prog",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
           "-msg", "timestamp=on", "-trace", "virtio_*", "-trace", "virtqueue_*",
           "-trace", "pci_cfg_*"]
    for t in traces:
        cmd += ["-trace", t]
    return cmd + ["-D", log]


def record_replayable(a: argparse.Namespace, tmp: str, program: bytes) -> None:
    """The second run: every port access (memory_region_ops_*) and the
    guest RAM the device reads, for gqemu import-qemu-trace.  ioeventfd=off
    puts the queue notify on the traced path (with an ioeventfd KVM or the
    memory core signals the eventfd and no ops line is written); it changes
    nothing the guest sees (the run must give the same debugcon bytes and
    disk as the first)."""
    d = os.path.join(tmp, "replayable")
    os.makedirs(d)
    boot, vdisk = os.path.join(d, "boot.img"), os.path.join(d, "vdisk.img")
    make_disk(boot, program)
    make_disk(vdisk, b"")
    log, dbg = os.path.join(d, "trace.log"), os.path.join(d, "debugcon.bin")
    lab = labels(os.path.join(HERE, "virtioblk.asm"), d)
    bps = {lab["main"]: "start", lab["submit.notify"]: "notify", lab["main.done"]: "done"}
    ram = os.path.join(d, "guest-ram.txt")
    with open(ram, "w") as f:
        p = run_with_gdb(qemu_cmd(a, boot, vdisk, dbg, log, ",ioeventfd=off",
                                  ("memory_region_ops_*",)), d, log, bps, RamSnapshots(f, log))
    first = open(os.path.join(a.out, "debugcon.bin"), "rb").read()
    second = open(dbg, "rb").read()
    if second != first:
        # the first run's queue runs on the ioeventfd path, where an ISR read
        # can fall between the used index update and the ISR being set (and
        # read 0); with ioeventfd=off both happen under the BQL
        i = next((i for i in range(min(len(first), len(second))) if first[i] != second[i]),
                 min(len(first), len(second)))
        shutil.copy(dbg, os.path.join(a.out, "debugcon-replayable.bin"))
        print("warning: the two runs' debugcon output differ at byte %d (first %r, "
              "replayable %r); the replayable run's is debugcon-replayable.bin"
              % (i, first[i:i + 8], second[i:i + 8]), file=sys.stderr)
    if p.returncode != int(open(os.path.join(a.out, "exitcode.txt")).read()):
        raise RuntimeError("the replayable run exited with %d" % p.returncode)
    xz(log, os.path.join(a.out, "io-trace.log.xz"))
    xz(ram, os.path.join(a.out, "guest-ram.txt.xz"))
    with lzma.open(os.path.join(a.out, "vdisk-after.img.xz")) as f1, open(vdisk, "rb") as f2:
        if f1.read() != f2.read():
            raise RuntimeError("the replayable run's disk differs from the first run's")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accel", default="kvm", choices=["tcg", "kvm"])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="virtio-rec-")
    try:
        binp = os.path.join(a.out, "virtioblk.bin")
        subprocess.run(["nasm", "-f", "bin", "-o", binp,
                        os.path.join(HERE, "virtioblk.asm")], check=True)
        program = open(binp, "rb").read()
        assert len(program) % 512 == 0 and program[510:512] == b"\x55\xaa"
        boot = os.path.join(tmp, "boot.img")
        make_disk(boot, program)
        vdisk = os.path.join(tmp, "vdisk.img")
        make_disk(vdisk, b"")
        log = os.path.join(tmp, "trace.log")
        dbg = os.path.join(a.out, "debugcon.bin")
        cmd = qemu_cmd(a, boot, vdisk, dbg, log)
        p = subprocess.run(cmd, timeout=120, stderr=subprocess.PIPE, text=True)
        with open(os.path.join(a.out, "exitcode.txt"), "w") as f:
            f.write("%d\n" % p.returncode)
        with open(os.path.join(a.out, "stderr.txt"), "w") as f:
            f.write(p.stderr)
        xz(log, os.path.join(a.out, "trace.log.xz"))
        xz(vdisk, os.path.join(a.out, "vdisk-after.img.xz"))
        record_replayable(a, tmp, program)
        v = subprocess.run([a.qemu, "--version"], stdout=subprocess.PIPE, text=True).stdout
        with open(os.path.join(a.out, "qemu-version.txt"), "w") as f:
            f.write(v.splitlines()[0] + "\n")
        print("exit status %d, debugcon %d bytes" % (p.returncode, os.path.getsize(dbg)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
