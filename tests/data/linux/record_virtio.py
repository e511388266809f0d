#!/usr/bin/env python3
"""Re-record the Linux legacy virtio-blk reference under real QEMU 7.2
(tests/data/linux/virtio).

    python3 tests/data/linux/record_virtio.py [--accel tcg|kvm] [--out DIR] [--guest DIR]

The guest of record.py (build-initramfs.sh with EXTRA_MODULES="virtio_pci
virtio_blk"; append ``gq.vblk``: init.sh's virtio workload on /dev/vda) on
a 2 MiB self-describing disk behind ``-device
virtio-blk-pci,disable-modern=on,ioeventfd=off`` and no IDE disk, booted
twice: plainly (the kernel's and virtio_ring's symbol addresses from the
serial output), then with ``-trace 'memory_region_ops_*'``, ``-serial
none`` and QEMU's gdbstub (physical memory mode), stopped

- at start_kernel: the snapshots' ``start`` (SeaBIOS's accesses, its own
  virtio driver's included, are dropped on import);
- at every iowrite16 to the queue notify register (BAR0 + 0x10): first
  the used ring and the device-writable buffers of the chains the device
  returned since the last notify (``check``; the chains as they were made
  available, since the driver reuses descriptors; the buffers still hold
  the device's data, as the next request is only now being submitted),
  then the descriptor table, the avail ring, the indirect tables and the
  device-readable buffers of the chains made available since (``store``).
- at every handle_edge_irq (the MSI-X interrupt's flow handler, before
  virtio_ring's vring_interrupt and the driver look at the used ring): the
  same check, the moment the device's data is certainly still there (a
  page read for the partition scan can be freed and zeroed before the next
  notify; virtio_ring is a module, whose addresses differ between the
  plain run and this one, handle_edge_irq is built in).

It keeps in DIR (default: virtio/ here): io-trace.log.xz, guest-ram.txt.xz,
vdisk-after.img.xz, sha256.txt, serial.log (run 1), exitcode.txt,
qemu-version.txt.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import record  # noqa: E402  (the gdbstub runner, disk and xz helpers)
from record import GdbRemote, regs, resume, sha256, xz  # noqa: E402

from gqemu.blockdev import scratch_sector  # noqa: E402

SIZE_MIB = 2
PIO_OFFSET = 0x10000
NOTIFY, QUEUE_PFN, QUEUE_NUM = 0x10, 0x08, 0x0C
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
MAX_BUFFER = 1 << 16
_CFG_BAR0 = re.compile(rb"pci_cfg_write virtio-blk\S* \S+ @0x10 <- 0x([0-9a-f]+)")
_OPS = re.compile(rb"memory_region_ops_(read|write) cpu -?\d+ mr \S+ addr 0x([0-9a-f]+) "
                  rb"value 0x([0-9a-f]+) size \d name 'virtio-pci'")


class Tail:
    """The QEMU log as it grows: BAR0, the queue's PFN and size."""

    def __init__(self, path: str) -> None:
        self.path, self.pos, self.rest = path, 0, b""
        self.bar0 = 0
        self.pfn = self.num = 0

    def update(self) -> int:
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            m = _CFG_BAR0.search(line)
            if m and int(m.group(1), 16) != 0xFFFFFFFF:
                self.bar0 = int(m.group(1), 16) & ~3
                continue
            m = _OPS.search(line)
            if m and self.bar0:
                off, val = int(m.group(2), 16) - self.bar0, int(m.group(3), 16)
                if m.group(1) == b"write" and off == QUEUE_PFN:
                    self.pfn = val
                elif m.group(1) == b"read" and off == QUEUE_NUM:
                    self.num = val
        return self.pos - len(self.rest)


def chain(g: GdbRemote, desc: bytes, num: int, head: int) -> list[tuple[int, int, int]]:
    """(addr, len, flags) of the buffers of the chain at ``head``, indirect
    tables followed (their own (addr, len, F_INDIRECT) entry first)."""
    out = []
    table, size, i = desc, num, head
    for _ in range(2 * 256):
        if i >= size:
            break
        addr, n, flags, nxt = struct.unpack_from("<QIHH", table, 16 * i)
        if flags & F_INDIRECT and table is desc:
            out.append((addr, n, F_INDIRECT))
            table, size, i = g.read(addr, n), n // 16, 0
            continue
        out.append((addr, min(n, MAX_BUFFER), flags))
        if not flags & F_NEXT:
            break
        i = nxt
    return out


class Snapshots:
    def __init__(self, f: Any, log: str) -> None:
        self.f, self.tail = f, Tail(log)
        self.avail = self.used = 0
        self.notifies = self.interrupts = 0
        self.chains: dict[int, list[tuple[int, int, int]]] = {}
        f.write("# gqemu guest RAM snapshots 1: LOG-OFFSET start | LOG-OFFSET "
                "store|check ADDR HEX\n")

    def _put(self, off: int, kind: str, addr: int, data: bytes) -> None:
        if data:
            self.f.write("%d %s 0x%x %s\n" % (off, kind, addr, data.hex()))

    def rings(self) -> tuple[int, int, int, int]:
        num = self.tail.num
        desc = self.tail.pfn << 12
        avail = desc + 16 * num
        used = (avail + 6 + 2 * num + 4095) & ~4095
        return num, desc, avail, used

    def start(self) -> None:
        self.f.write("%d start\n" % self.tail.update())
        # SeaBIOS's queue is dropped with its accesses: Linux's comes after
        self.tail.pfn = self.tail.num = 0
        self.avail = self.used = 0
        self.chains.clear()

    def notify(self, g: GdbRemote) -> None:
        off = self.tail.update()
        self.completed(g, off)
        num, d, a, _ = self.rings()
        desc, avail = g.read(d, 16 * num), g.read(a, 6 + 2 * num)
        self._put(off, "store", d, desc)
        self._put(off, "store", a, avail)
        idx = struct.unpack_from("<H", avail, 2)[0]
        while self.avail != idx:
            head = struct.unpack_from("<H", avail, 4 + 2 * (self.avail % num))[0]
            self.chains[head] = chain(g, desc, num, head)
            for addr, n, flags in self.chains[head]:
                if flags & F_INDIRECT or not flags & F_WRITE:
                    self._put(off, "store", addr, g.read(addr, n))
            self.avail = (self.avail + 1) & 0xFFFF
        self.notifies += 1

    def completed(self, g: GdbRemote, off: int) -> None:
        """The chains the device returned since the last stop: the used
        ring and their device-writable buffers, as the chains were when
        they were made available (the driver reuses the descriptors)."""
        num, _, _, u = self.rings()
        if not num:
            return
        used = g.read(u, 4 + 8 * num)
        idx = struct.unpack_from("<H", used, 2)[0]
        if idx == self.used:
            return
        self._put(off, "check", u, used)
        while self.used != idx:
            head = struct.unpack_from("<I", used, 4 + 8 * (self.used % num))[0]
            for addr, n, flags in self.chains.pop(head, ()):
                if flags & F_WRITE and not flags & F_INDIRECT:
                    self._put(off, "check", addr, g.read(addr, n))
            self.used = (self.used + 1) & 0xFFFF
        self.interrupts += 1


def run_with_gdb(cmd: list[str], tmp: str, syms: dict[str, int], snap: Snapshots) -> int:
    import socket
    import time
    sockp = os.path.join(tmp, "gdb.sock")
    cmd = cmd + ["-S", "-chardev", "socket,id=gdb0,path=%s,server=on,wait=off" % sockp,
                 "-gdb", "chardev:gdb0"]
    p = subprocess.Popen(cmd)
    try:
        sock = socket.socket(socket.AF_UNIX)
        for _ in range(400):
            try:
                sock.connect(sockp)
                break
            except OSError:
                time.sleep(0.05)
        sock.settimeout(600)
        g = GdbRemote(sock)
        g.cmd("?")
        if g.cmd("Qqemu.PhyMemMode:1") != "OK":
            raise RuntimeError("QEMU's gdbstub has no physical memory mode")
        bps = {syms["start_kernel"], syms["iowrite16"], syms["handle_edge_irq"]}
        for bp in bps:
            g.hbreak(bp)
        stop = resume(g)
        while stop is not None:
            r = regs(g)
            pc = r[16]
            if pc == syms["start_kernel"]:
                snap.start()
            elif pc == syms["handle_edge_irq"]:
                snap.completed(g, snap.tail.update())
            elif pc == syms["iowrite16"]:
                if snap.tail.bar0 and r[4] - PIO_OFFSET == snap.tail.bar0 + NOTIFY:
                    snap.notify(g)
            else:
                raise RuntimeError("stopped at 0x%x, not at a breakpoint (%s)" % (pc, stop))
            g.hdelete(pc)
            resume(g, step=True)
            if pc != syms["start_kernel"]:
                g.hbreak(pc)
            stop = resume(g)
        sock.close()
        p.wait(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode


def qemu_cmd(a: argparse.Namespace, guest: str, disk: str, serial: Optional[str],
             log: str, traces: tuple[str, ...]) -> list[str]:
    cmd = [a.qemu, "-machine", "pc", "-accel", a.accel, "-m", "256", "-nodefaults",
           "-no-user-config", "-display", "none", "-no-reboot",
           "-kernel", os.path.join(guest, "vmlinuz"),
           "-initrd", os.path.join(guest, "initramfs.cpio.gz"),
           "-append", record.APPEND + " gq.vblk",
           "-serial", "file:%s" % serial if serial else "none",
           "-drive", "file=%s,format=raw,if=none,id=vd0" % disk,
           "-device", "virtio-blk-pci,disable-modern=on,drive=vd0,ioeventfd=off",
           "-msg", "timestamp=on", "-trace", "pci_cfg_*", "-trace", "virtio_*",
           "-trace", "virtqueue_*"]
    for t in traces:
        cmd += ["-trace", t]
    return cmd + ["-D", log]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm"])
    ap.add_argument("--out", default=os.path.join(HERE, "virtio"))
    ap.add_argument("--guest", help="kernel + initramfs (build-initramfs.sh, EXTRA_MODULES="
                                    "'virtio_pci virtio_blk')")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="linux-virtio-rec-")
    try:
        guest = a.guest
        if guest is None:
            guest = os.path.join(tmp, "guest")
            subprocess.run(["sh", os.path.join(HERE, "build-initramfs.sh"), guest], check=True,
                           env=dict(os.environ, EXTRA_MODULES="virtio_pci virtio_blk"))
        pristine = os.path.join(tmp, "pristine.img")
        with open(pristine, "wb") as f:
            for lba in range(SIZE_MIB * 2048):
                f.write(scratch_sector(lba))
        d1, s1, l1 = (os.path.join(tmp, n) for n in ("d1.img", "s1.log", "t1.log"))
        shutil.copy(pristine, d1)
        rc1 = subprocess.run(qemu_cmd(a, guest, d1, s1, l1, ()), timeout=600).returncode
        text = open(s1, errors="replace").read()
        syms = dict((m.group(2), int(m.group(1), 16)) for m in
                    re.finditer(r"GUEST: kallsyms ([0-9a-f]+) [Tt] (\w+)", text))
        if rc1 != 0 or "GUEST: done" not in text or len(syms) < 4:
            raise RuntimeError("run 1 failed (exit %d, symbols %s)" % (rc1, sorted(syms)))
        d2, l2 = os.path.join(tmp, "d2.img"), os.path.join(tmp, "t2.log")
        shutil.copy(pristine, d2)
        ram = os.path.join(tmp, "guest-ram.txt")
        with open(ram, "w") as f:
            snap = Snapshots(f, l2)
            rc2 = run_with_gdb(qemu_cmd(a, guest, d2, None, l2, ("memory_region_ops_*",)),
                               tmp, syms, snap)
        if rc2 != rc1 or sha256(d1) != sha256(d2):
            raise RuntimeError("run 2 exited with %d or left another disk" % rc2)
        xz(l2, os.path.join(a.out, "io-trace.log.xz"))
        xz(ram, os.path.join(a.out, "guest-ram.txt.xz"))
        xz(d2, os.path.join(a.out, "vdisk-after.img.xz"))
        shutil.copy(s1, os.path.join(a.out, "serial.log"))
        with open(os.path.join(a.out, "sha256.txt"), "w") as f:
            f.write("%s  disk-pristine (mkdisk.py, %d MiB)\n%s  vdisk-after\n"
                    % (sha256(pristine), SIZE_MIB, sha256(d2)))
        with open(os.path.join(a.out, "exitcode.txt"), "w") as f:
            f.write("%d\n" % rc1)
        v = subprocess.run([a.qemu, "--version"], stdout=subprocess.PIPE, text=True).stdout
        with open(os.path.join(a.out, "qemu-version.txt"), "w") as f:
            f.write(v.splitlines()[0] + "\n")
        print("exit status %d; %d notifies, %d completions checked"
              % (rc2, snap.notifies, snap.interrupts))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
