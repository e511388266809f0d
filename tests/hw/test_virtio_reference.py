"""The reference boot program (tests/data/virtio/virtioblk.asm) under
``gqemu run --accel kvm``: QEMU 7.2's exit status, debugcon bytes (PCI
config dumps, BAR0 bytes, every request's used element and status, the
broken device) and virtio disk, recorded by tests/data/virtio/record.py."""
from __future__ import annotations

import lzma
import os
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "virtio"

sys.path.insert(0, str(DATA))
import record  # noqa: E402  (the recorder's disk layout)

sys.path.pop(0)


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="/dev/kvm is absent")
def test_boot_program_under_kvm_as_under_qemu(tmp_path, capsys):
    prog = DATA / "virtioblk.bin"
    boot, vdisk, con = tmp_path / "boot.img", tmp_path / "vdisk.img", tmp_path / "con.bin"
    record.make_disk(str(boot), prog.read_bytes())
    record.make_disk(str(vdisk), b"")
    rc = main(["run", "--accel", "kvm", "--boot", str(prog), "--timeout", "60",
               "--drive", "file=%s,format=raw,if=ide,index=0" % boot,
               "--drive", "file=%s,format=raw,if=virtio" % vdisk, "--debugcon", str(con)])
    assert rc == int((DATA / "exitcode.txt").read_text())
    assert con.read_bytes() == (DATA / "debugcon.bin").read_bytes()
    with lzma.open(DATA / "vdisk-after.img.xz") as f:
        assert vdisk.read_bytes() == f.read()
    # QEMU printed its virtio_error on stderr too
    assert "virtio-blk request outhdr too short" in capsys.readouterr().err
    assert "outhdr too short" in (DATA / "stderr.txt").read_text()
