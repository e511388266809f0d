#!/usr/bin/env python3
"""Re-record virtioprobe.asm under real QEMU 7.2 (tests/data/virtio).

    python3 tests/data/virtio/record_probe.py [--accel kvm|tcg] [--runs N]

Builds virtioprobe.bin, makes the boot disk (the program, then
self-describing sectors) and the virtio data disk (``record.make_disk(path,
b"")``), boots qemu-system-x86_64 as record.py does (``virtio-blk-pci,
disable-modern=on``, QEMU's default 128 MiB and ioeventfd, as `gqemu run --accel kvm`) and keeps:

    probe-debugcon.bin          what the program wrote to port 0xE9
    probe-exitcode.txt          QEMU's exit status
    probe-stderr.txt            its virtio_error lines (timestamps and
                                host warnings dropped)
    probe-vdisk-after.img.xz    the virtio disk after the run

It runs the program ``--runs`` times (default 3) and fails unless every run
gives the same bytes, status and disk (the program waits for what QEMU does
asynchronously; a difference means it does not wait enough).

Then it runs virtioblk.asm (record.py's program) once on a read-only
virtio drive (``-drive ...,readonly=on``) and keeps ``ro-debugcon.bin`` and
``ro-exitcode.txt``; the run must leave the disk as it was.  Last,
virtioirq.asm (a request completed by interrupt through the PIC as SeaBIOS
left it): ``irq-debugcon.bin``, ``irq-exitcode.txt``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from record import make_disk, xz  # noqa: E402


def virtio_errors(stderr: str) -> str:
    """QEMU's error lines without the timestamp and the host's CPUID warnings."""
    out = []
    for line in stderr.splitlines():
        line = re.sub(r"^\S+Z ", "", line)
        if "warning: host doesn't support" in line:
            continue
        out.append(line.replace("qemu-system-x86_64: ", "") + "\n")
    return "".join(out)


def run_once(a: argparse.Namespace, tmp: str, program: bytes,
             drive_opts: str = "") -> tuple[bytes, int, str, bytes]:
    boot, vdisk = os.path.join(tmp, "boot.img"), os.path.join(tmp, "vdisk.img")
    dbg = os.path.join(tmp, "debugcon.bin")
    make_disk(boot, program)
    make_disk(vdisk, b"")
    if os.path.exists(dbg):
        os.unlink(dbg)
    cmd = [a.qemu, "-machine", "pc", "-accel", a.accel, "-m", "128", "-display", "none",
           "-nodefaults", "-no-user-config",
           "-drive", "file=%s,format=raw,if=ide,index=0" % boot,
           "-drive", "file=%s,format=raw,if=none,id=vd0%s" % (vdisk, drive_opts),
           "-device", "virtio-blk-pci,disable-modern=on,drive=vd0",
           "-chardev", "file,id=prog,path=%s" % dbg,
           "-device", "isa-debugcon,iobase=0xe9,chardev=prog",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    p = subprocess.run(cmd, timeout=300, stderr=subprocess.PIPE, text=True)
    with open(dbg, "rb") as f, open(vdisk, "rb") as g:
        return f.read(), p.returncode, virtio_errors(p.stderr), g.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accel", default="kvm", choices=["tcg", "kvm"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="virtio-probe-")
    try:
        binp = os.path.join(a.out, "virtioprobe.bin")
        subprocess.run(["nasm", "-f", "bin", "-o", binp,
                        os.path.join(HERE, "virtioprobe.asm")], check=True)
        program = open(binp, "rb").read()
        runs = [run_once(a, tmp, program) for _ in range(a.runs)]
        for i, r in enumerate(runs[1:], 2):
            if r != runs[0]:
                raise SystemExit("run %d differs from run 1 (debugcon %s, status %s, "
                                 "stderr %s, disk %s)" % (
                                     i, r[0] == runs[0][0], r[1] == runs[0][1],
                                     r[2] == runs[0][2], r[3] == runs[0][3]))
        con, rc, err, disk = runs[0]
        with open(os.path.join(a.out, "probe-debugcon.bin"), "wb") as f:
            f.write(con)
        with open(os.path.join(a.out, "probe-exitcode.txt"), "w") as f:
            f.write("%d\n" % rc)
        with open(os.path.join(a.out, "probe-stderr.txt"), "w") as f:
            f.write(err)
        vd = os.path.join(tmp, "after.img")
        with open(vd, "wb") as f:
            f.write(disk)
        xz(vd, os.path.join(a.out, "probe-vdisk-after.img.xz"))
        print("exit status %d, debugcon %d bytes, %d identical runs" % (rc, len(con), len(runs)))
        blk = open(os.path.join(HERE, "virtioblk.bin"), "rb").read()
        con, rc, err, disk = run_once(a, tmp, blk, ",readonly=on")
        pristine = os.path.join(tmp, "pristine.img")
        make_disk(pristine, b"")
        if disk != open(pristine, "rb").read():
            raise SystemExit("the read-only run changed the disk")
        with open(os.path.join(a.out, "ro-debugcon.bin"), "wb") as f:
            f.write(con)
        with open(os.path.join(a.out, "ro-exitcode.txt"), "w") as f:
            f.write("%d\n" % rc)
        print("read-only: exit status %d, debugcon %d bytes" % (rc, len(con)))
        binp = os.path.join(a.out, "virtioirq.bin")
        subprocess.run(["nasm", "-f", "bin", "-o", binp,
                        os.path.join(HERE, "virtioirq.asm")], check=True)
        con, rc, err, disk = run_once(a, tmp, open(binp, "rb").read())
        with open(os.path.join(a.out, "irq-debugcon.bin"), "wb") as f:
            f.write(con)
        with open(os.path.join(a.out, "irq-exitcode.txt"), "w") as f:
            f.write("%d\n" % rc)
        print("interrupts: exit status %d, debugcon %d bytes" % (rc, len(con)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
