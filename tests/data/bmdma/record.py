#!/usr/bin/env python3
"""Re-record the BMDMA reference under real QEMU 7.2 (tests/data/bmdma).

    python3 tests/data/bmdma/record.py [--accel tcg|kvm] [--out DIR]

Builds bmdma.bin from bmdma.asm (nasm), makes a 2 MiB self-describing raw
disk (refdata/mkdisk.py's sectors) with the program in LBA 0..3, boots it
under qemu-system-x86_64 with the ide_*, bmdma_* and pci_cfg_* trace
events, and keeps in DIR (default: this directory):

    trace.log.xz          the QEMU log (input of gqemu import-qemu-trace)
    debugcon.bin          what the program wrote to port 0xE9: per case the
                          case number, the BM status, 0x1F1..0x1F5, 0x1F7,
                          then the first 1024 bytes of the case's buffer
    disk-pristine.img.xz  the disk before, disk-after.img.xz after the run
    exitcode.txt          QEMU's exit status (33: the program finished)
    qemu-version.txt      qemu-system-x86_64 --version
"""
from __future__ import annotations

import argparse
import lzma
import os
import shutil
import subprocess
import sys
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
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm"])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bmdma-rec-")
    try:
        binp = os.path.join(a.out, "bmdma.bin")
        subprocess.run(["nasm", "-f", "bin", "-o", binp, os.path.join(HERE, "bmdma.asm")],
                       check=True)
        program = open(binp, "rb").read()
        assert len(program) % 512 == 0 and program[510:512] == b"\x55\xaa"
        disk = os.path.join(tmp, "disk.img")
        make_disk(disk, program)
        xz(disk, os.path.join(a.out, "disk-pristine.img.xz"))
        log = os.path.join(tmp, "trace.log")
        dbg = os.path.join(a.out, "debugcon.bin")
        cmd = [a.qemu, "-machine", "pc", "-accel", a.accel, "-m", "16", "-display", "none",
               "-nodefaults", "-no-user-config",
               "-drive", "file=%s,format=raw,if=ide,index=0" % disk,
               "-chardev", "file,id=prog,path=%s" % dbg,
               "-device", "isa-debugcon,iobase=0xe9,chardev=prog",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "-msg", "timestamp=on", "-trace", "ide_*", "-trace", "bmdma_*",
               "-trace", "pci_cfg_*", "-D", log]
        rc = subprocess.run(cmd, timeout=120).returncode
        with open(os.path.join(a.out, "exitcode.txt"), "w") as f:
            f.write("%d\n" % rc)
        ver = subprocess.run([a.qemu, "--version"], capture_output=True, text=True).stdout
        with open(os.path.join(a.out, "qemu-version.txt"), "w") as f:
            f.write(ver.splitlines()[0] + "\n")
        xz(log, os.path.join(a.out, "trace.log.xz"))
        xz(disk, os.path.join(a.out, "disk-after.img.xz"))
        print("qemu exit status %d (33 = the program finished); %s" % (rc, a.out))
        return 0 if rc == 33 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
