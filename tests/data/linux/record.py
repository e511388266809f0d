#!/usr/bin/env python3
"""Re-record the Linux guest reference under real QEMU 7.2 (tests/data/linux).

    python3 tests/data/linux/record.py [--variant one|multi|ata|eio|qcow2] [--accel tcg|kvm] [--out DIR]
                                      [--guest DIR]

Needs Debian's linux-image-amd64 (6.1) and busybox-static: builds the
initramfs with build-initramfs.sh (into a temporary directory, or uses
--guest DIR as that script left it), makes a 16 MiB self-describing disk
(refdata/mkdisk.py's sectors), and boots Linux (ata_piix, libata, sd_mod;
/init is init.sh) on it with the ide_*, bmdma_* and pci_cfg_* trace
events, twice:

1. plainly: the guest's serial output (serial-plain.log) names the address
   of the kernel's iowrite8 (nokaslr: the same in every boot), and the
   disk after it is the reference;
2. stopped at every iowrite8 through QEMU's gdbstub (gdbremote.py from
   tests/data/virtio, physical memory mode): when the guest starts a bus
   master (the START bit written to 0xc000/0xc008, port + 0x10000 in
   Linux's iomap cookie) the PRD table -- its address is the channel's
   last bmdma_addr_write in the log -- and, for a transfer to the disk,
   the buffers it names are RAM the device will read (``store``); when a
   transfer to memory is stopped (START cleared) its buffers are what the
   device wrote (``check``).  The disk after this run must equal the
   first's.

3. as 2, with ``-trace 'memory_region_ops_*'`` as well (every port
   access: PCI configuration space included) and a ``start`` snapshot at
   start_kernel, so the import drops SeaBIOS's accesses; and ``-serial
   none``, as gqemu's machine has no serial port (a UART at 0x3f8 shows in
   PIIX4_PM's config register 0x67, which Linux reads).

``--variant ata`` runs atacmd.c's raw ATA commands (ATA PASS-THROUGH:
READ NATIVE MAX, SET FEATURES, SMART, invalid opcodes, PIO and DMA reads
past the end, VERIFY, power modes, EXECUTE DEVICE DIAGNOSTIC) instead of
the dd workload, into ata/.  ``--variant eio`` reads and writes sectors
that QEMU's blkdebug fails (blkdebug.cfg, kept in eio/), into eio/.
``--variant qcow2`` runs the default workload on a qcow2 drive (real
qemu-img's convert of the raw disk: disk-pristine.qcow2.xz), into qcow2/.  ``--variant multi`` boots with three disks (IDE index 0, 1, 2: primary
master and slave, secondary master; ``libata.force=1.01:pio4`` keeps the
slave to PIO), init.sh's short per-disk workload, and no run 3; the disks
after are diskN-after.img.xz, DIR defaults to multi/ here.

It keeps in DIR (default: this directory):

    trace.log.xz         run 2's QEMU log (input of gqemu import-qemu-trace)
    guest-ram.txt.xz     run 2's RAM snapshots (docs/trace-format.md)
    io-trace.log.xz      run 3's log, io-guest-ram.txt.xz its snapshots
    serial.log           run 1's console
    disk-after.img.xz    the disk after (both runs)
    sha256.txt           the disk's sha256 before and after
    exitcode.txt         QEMU's exit status (0: the guest powered off)
    qemu-version.txt     qemu-system-x86_64 --version
"""
from __future__ import annotations

import argparse
import hashlib
import lzma
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "virtio"))
from gdbremote import GdbRemote  # noqa: E402

from gqemu.blockdev import scratch_sector  # noqa: E402

SIZE_MIB = 16
APPEND = "console=ttyS0 panic=-1 nokaslr"
PIO_OFFSET = 0x10000            # x86 lib/iomap.c: ioport_map(port) = port + PIO_OFFSET
BM_CMD = {0xC000: 0, 0xC008: 1}     # BAR4 as SeaBIOS maps it (the log's pci_cfg_write @0x20)
PRD_MAX = 512                   # QEMU walks at most one page of 8-byte PRDs
_ADDR_WRITE = re.compile(rb"bmdma_addr_write data: 0x([0-9a-f]+)")
_BM_LINE = re.compile(rb"(?:ide_[a-z_]+ IDE PIO (?:rd|wr) @ 0x([0-9a-f]+))")
_STATE = re.compile(rb"IDE(?:State|state) (0x[0-9a-f]+)")
_DMA_CB = re.compile(rb"ide_dma_cb IDEState (0x[0-9a-f]+); sector_num=(-?\d+) n=(-?\d+)")


def make_disk(path: str) -> None:
    with open(path, "wb") as f:
        for lba in range(SIZE_MIB * 2048):
            f.write(scratch_sector(lba))    # refdata/mkdisk.py's sector


def xz(src: str, dst: str) -> None:
    with open(src, "rb") as f, lzma.open(dst, "wb", preset=9 | lzma.PRESET_EXTREME) as out:
        shutil.copyfileobj(f, out, 1 << 20)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --variant: the IDE indexes of the disks, more kernel arguments, the io run
VARIANTS = {
    "one": ((0,), "", True),
    # primary master + slave, secondary master; the slave forced to PIO
    # (READ/WRITE MULTIPLE) while the master on the same channel uses DMA
    "multi": ((0, 1, 2), " libata.force=1.01:pio4", False),
    # raw ATA commands through SG_IO (atacmd.c): errors, SMART, power modes
    "ata": ((0,), " gq.ata", False),
    # I/O errors injected by blkdebug (BLKDEBUG_CFG): libata's EH, retries,
    # SRST, the speed-down to MWDMA1
    "eio": ((0,), " gq.eio", False),
    # the default workload on a qcow2 image (qemu-img convert of the raw one)
    "qcow2": ((0,), "", False),
}
FORMAT = {"qcow2": "qcow2"}         # the drives' format (default raw)
BLKDEBUG_CFG = {"eio": """\
# tests/data/linux/eio: the errors QEMU's blkdebug injected (raw format's
# read_aio/write_aio events; sector = any request covering it)
[inject-error]
event = "read_aio"
errno = "5"
sector = "1000"
once = "on"

[inject-error]
event = "read_aio"
errno = "5"
sector = "2000"

[inject-error]
event = "write_aio"
errno = "5"
sector = "3001"
once = "on"
"""}


def disk_path(base: str, index: int) -> str:
    return "%s-%d.img" % (base, index)


def qemu_cmd(a: argparse.Namespace, guest: str, disk: str, serial: str, log: str,
             traces: tuple[str, ...] = ()) -> list[str]:
    """``disk`` is the base name of the variant's disks (disk_path)."""
    drives = []
    for i in VARIANTS[a.variant][0]:
        f = disk_path(disk, i)
        if a.variant in BLKDEBUG_CFG:
            f = "blkdebug:%s:%s" % (os.path.join(a.out, "blkdebug.cfg"), f)
        drives += ["-drive", "file=%s,format=%s,if=ide,index=%d"
                   % (f, FORMAT.get(a.variant, "raw"), i)]
    return [a.qemu, "-machine", "pc", "-accel", a.accel, "-m", "256", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", os.path.join(guest, "vmlinuz"),
            "-initrd", os.path.join(guest, "initramfs.cpio.gz"),
            "-append", APPEND + VARIANTS[a.variant][1],
            "-serial", "file:%s" % serial if serial else "none"] + drives + [
            "-msg", "timestamp=on", "-trace", "ide_*", "-trace", "bmdma_*",
            "-trace", "pci_cfg_*"] + [x for t in traces for x in ("-trace", t)] + ["-D", log]


class LogTail:
    """Follows the QEMU log as it grows: the last PRD address written and
    the channel whose IDE ports were accessed last (what bmdma_addr_write,
    which names no channel, was for)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pos = 0
        self.rest = b""
        self.channel = 0
        self.prd = [0, 0]
        self.state_channel: dict[bytes, int] = {}       # IDEState pointer -> channel
        self.dma: list[tuple[int, int]] = [(0, 0), (0, 0)]  # last ide_dma_cb range

    def update(self) -> int:
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            m = _DMA_CB.search(line)
            if m:
                ch = self.state_channel.get(m.group(1))
                if ch is not None:
                    self.dma[ch] = (int(m.group(2)), int(m.group(3)))
                continue
            m = _BM_LINE.search(line)
            if m:
                port = int(m.group(1), 16)
                self.channel = 0 if port in range(0x1F0, 0x1F8) or port == 0x3F6 else 1
                st = _STATE.search(line)
                if st:
                    self.state_channel[st.group(1)] = self.channel
                continue
            m = _ADDR_WRITE.search(line)
            if m:
                self.prd[self.channel] = int(m.group(1), 16) & ~3
        return self.pos - len(self.rest)


class RamSnapshots:
    def __init__(self, f: Any, log: str) -> None:
        self.f = f
        self.tail = LogTail(log)
        self.reading: list[Optional[list[tuple[int, int]]]] = [None, None]
        self.stores = self.checks = 0
        f.write("# gqemu guest RAM snapshots 1: LOG-OFFSET start | LOG-OFFSET "
                "store|check ADDR HEX\n")

    def _put(self, offset: int, kind: str, addr: int, data: bytes) -> None:
        self.f.write("%d %s 0x%x %s\n" % (offset, kind, addr, data.hex()))

    def start(self) -> None:
        self.f.write("%d start\n" % self.tail.update())

    def stop(self, g: GdbRemote, port: int, val: int) -> None:
        ch = BM_CMD[port]
        offset = self.tail.update()
        if val & 1:
            prd = self.tail.prd[ch]
            table = g.read(prd, 8 * PRD_MAX)
            entries = []
            for i in range(PRD_MAX):
                addr, n, flags = struct.unpack_from("<IHH", table, 8 * i)
                entries.append((addr & ~1, n or 0x10000))
                if flags & 0x8000:
                    break
            self._put(offset, "store", prd, table[:8 * len(entries)])
            self.stores += 1
            if val & 8:                 # to memory: check the buffers at the stop
                self.reading[ch] = entries
            else:
                for addr, n in entries:
                    self._put(offset, "store", addr, g.read(addr, n))
                self.reading[ch] = None
        elif self.reading[ch] is not None:
            # QEMU's ide_dma_cb refuses a range past the disk's end before
            # it moves anything (ide_sect_range_ok): the buffers then hold
            # what the guest's CPU put there, which no log shows
            start, n = self.tail.dma[ch]
            if start < 0 or start + n > SIZE_MIB * 2048:
                self.reading[ch] = None
                return
            for addr, n in self.reading[ch] or ():
                self._put(offset, "check", addr, g.read(addr, n))
            self.checks += 1
            self.reading[ch] = None


def regs(g: GdbRemote) -> list[int]:
    r = g.cmd("g")
    return [int.from_bytes(bytes.fromhex(r[16 * i:16 * i + 16]), "little") for i in range(17)]


def resume(g: GdbRemote, step: bool = False) -> Optional[str]:
    """GdbRemote.resume, also when QEMU closes the socket under the final
    acknowledgement (the guest powered off)."""
    try:
        return g.resume(step=step)
    except OSError:
        return None


def run_with_gdb(cmd: list[str], tmp: str, bp: int, snap: RamSnapshots,
                 start: Optional[int] = None, timeout: float = 600) -> int:
    """Run QEMU stopped (-S) with its gdbstub on a UNIX socket, stop at
    every call of iowrite8 (``bp``) for the snapshots, and once at
    ``start`` (start_kernel) for the snapshots' start."""
    sockp = os.path.join(tmp, "gdb.sock")
    cmd = cmd + ["-S", "-chardev", "socket,id=gdb0,path=%s,server=on,wait=off" % sockp,
                 "-gdb", "chardev:gdb0"]
    p = subprocess.Popen(cmd)
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
        if g.cmd("Qqemu.PhyMemMode:1") != "OK":
            raise RuntimeError("QEMU's gdbstub has no physical memory mode")
        g.hbreak(bp)
        if start is not None:
            g.hbreak(start)
        stop = resume(g)
        while stop is not None:
            r = regs(g)
            pc = r[16]
            if pc == start:
                snap.start()
            elif pc == bp:
                val, port = r[5] & 0xFF, r[4] - PIO_OFFSET       # iowrite8(u8 rdi, cookie rsi)
                if port in BM_CMD:
                    snap.stop(g, port, val)
            else:
                raise RuntimeError("stopped at 0x%x, not at a breakpoint (%s)" % (pc, stop))
            g.hdelete(pc)
            resume(g, step=True)
            if pc == bp:
                g.hbreak(bp)
            stop = resume(g)
        sock.close()
        p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm"])
    ap.add_argument("--variant", default="one", choices=sorted(VARIANTS))
    ap.add_argument("--out", help="default: this directory (--variant multi: multi/ in it)")
    ap.add_argument("--guest", help="kernel + initramfs as build-initramfs.sh left them")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--qemu-img", default="qemu-img")
    a = ap.parse_args()
    if a.out is None:
        a.out = HERE if a.variant == "one" else os.path.join(HERE, a.variant)
    indexes, _, io_run = VARIANTS[a.variant]
    os.makedirs(a.out, exist_ok=True)
    if a.variant in BLKDEBUG_CFG:
        with open(os.path.join(a.out, "blkdebug.cfg"), "w") as f:
            f.write(BLKDEBUG_CFG[a.variant])
    tmp = tempfile.mkdtemp(prefix="linux-rec-")
    try:
        guest = a.guest
        if guest is None:
            guest = os.path.join(tmp, "guest")
            subprocess.run(["sh", os.path.join(HERE, "build-initramfs.sh"), guest], check=True)
        pristine = os.path.join(tmp, "pristine.img")
        make_disk(pristine)
        raw_sum = sha256(pristine)
        fmt = FORMAT.get(a.variant, "raw")
        if fmt != "raw":
            subprocess.run([a.qemu_img, "convert", "-f", "raw", "-O", fmt, pristine,
                            pristine + "." + fmt], check=True)
            pristine += "." + fmt
            xz(pristine, os.path.join(a.out, "disk-pristine.%s.xz" % fmt))
        # run 1: plain
        disk1, serial1, log1 = (os.path.join(tmp, n) for n in ("d1", "s1.log", "t1.log"))
        for i in indexes:
            shutil.copy(pristine, disk_path(disk1, i))
        rc1 = subprocess.run(qemu_cmd(a, guest, disk1, serial1, log1), timeout=600).returncode
        text = open(serial1, errors="replace").read()
        syms = dict((m.group(2), int(m.group(1), 16)) for m in
                    re.finditer(r"GUEST: kallsyms ([0-9a-f]+) T (\w+)", text))
        if rc1 != 0 or "iowrite8" not in syms or "GUEST: done" not in text:
            raise RuntimeError("run 1 failed (exit %d); see %s" % (rc1, serial1))
        # runs 2 and 3: under the gdbstub, the device events; every port access
        runs = [("", (), None)]
        if io_run:
            runs.append(("io-", ("memory_region_ops_*",), syms["start_kernel"]))
        for name, traces, start in runs:
            disk2, serial2, log2 = (os.path.join(tmp, name + n) for n in ("d", "s.log", "t.log"))
            if name:
                serial2 = ""        # gqemu's machine has no serial port (see the README)
            for i in indexes:
                shutil.copy(pristine, disk_path(disk2, i))
            ram = os.path.join(tmp, name + "guest-ram.txt")
            with open(ram, "w") as f:
                snap = RamSnapshots(f, log2)
                rc2 = run_with_gdb(qemu_cmd(a, guest, disk2, serial2, log2, traces), tmp,
                                   syms["iowrite8"], snap, start)
            if rc2 != rc1:
                raise RuntimeError("run %strace exited with %d, run 1 with %d" % (name, rc2, rc1))
            if any(sha256(disk_path(disk1, i)) != sha256(disk_path(disk2, i)) for i in indexes):
                raise RuntimeError("run %strace left another disk than run 1" % name)
            xz(log2, os.path.join(a.out, name + "trace.log.xz"))
            xz(ram, os.path.join(a.out, name + "guest-ram.txt.xz"))
            print("%strace: exit status %d; %d PRD tables stored, %d reads checked"
                  % (name, rc2, snap.stores, snap.checks))
        shutil.copy(serial1, os.path.join(a.out, "serial.log"))
        with open(os.path.join(a.out, "sha256.txt"), "w") as f:
            f.write("%s  disk-pristine (mkdisk.py, %d MiB)\n" % (raw_sum, SIZE_MIB))
            if fmt != "raw":
                f.write("%s  disk-pristine.%s\n" % (sha256(pristine), fmt))
            ext = "img" if fmt == "raw" else fmt
            for i in indexes:
                after = "disk-after." + ext if indexes == (0,) else "disk%d-after.%s" % (i, ext)
                xz(disk_path(disk2, i), os.path.join(a.out, after + ".xz"))
                f.write("%s  %s\n" % (sha256(disk_path(disk2, i)),
                                      after[:-4] if ext == "img" else after))
        with open(os.path.join(a.out, "exitcode.txt"), "w") as f:
            f.write("%d\n" % rc1)
        v = subprocess.run([a.qemu, "--version"], stdout=subprocess.PIPE, text=True).stdout
        with open(os.path.join(a.out, "qemu-version.txt"), "w") as f:
            f.write(v.splitlines()[0] + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
