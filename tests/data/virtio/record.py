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

The pristine data disk is ``make_disk(path, b"")`` of this script (no need
to keep it).
"""
from __future__ import annotations

import argparse
import lzma
import os
import shutil
import subprocess
import tempfile

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
        cmd = [a.qemu, "-machine", "pc", "-accel", a.accel, "-m", "16", "-display", "none",
               "-nodefaults", "-no-user-config",
               "-drive", "file=%s,format=raw,if=ide,index=0" % boot,
               "-drive", "file=%s,format=raw,if=none,id=vd0" % vdisk,
               "-device", "virtio-blk-pci,disable-modern=on,drive=vd0",
               "-chardev", "file,id=prog,path=%s" % dbg,
               "-device", "isa-debugcon,iobase=0xe9,chardev=prog",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "-msg", "timestamp=on", "-trace", "virtio_*", "-trace", "virtqueue_*",
               "-trace", "pci_cfg_*", "-D", log]
        p = subprocess.run(cmd, timeout=120, stderr=subprocess.PIPE, text=True)
        with open(os.path.join(a.out, "exitcode.txt"), "w") as f:
            f.write("%d\n" % p.returncode)
        with open(os.path.join(a.out, "stderr.txt"), "w") as f:
            f.write(p.stderr)
        xz(log, os.path.join(a.out, "trace.log.xz"))
        xz(vdisk, os.path.join(a.out, "vdisk-after.img.xz"))
        v = subprocess.run([a.qemu, "--version"], stdout=subprocess.PIPE, text=True).stdout
        with open(os.path.join(a.out, "qemu-version.txt"), "w") as f:
            f.write(v.splitlines()[0] + "\n")
        print("exit status %d, debugcon %d bytes" % (p.returncode, os.path.getsize(dbg)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
