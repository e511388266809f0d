"""isa-debug-exit is QEMU's exit(): no bdrv_close_all, so what a format
driver still caches never reaches the image.  stage2.asm (which writes new
clusters with INT 13h, PIO and DMA, and never flushes) on a fresh qcow2
overlay of record.sh's disk, under each cache mode, against the overlay
real QEMU 7.2 left (tests/data/kvm/record_qcow2.sh): with cache=writeback
the L2 updates stay in the qcow2 cache and the writes are lost, with
writethrough every write is flushed.  poweroff.asm ends with an ACPI
power off instead: QEMU shuts down and flushes, the write stays.  The
images are compared byte for byte."""
from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

import pytest

from gqemu.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "kvm"


@pytest.mark.usefixtures("kvm")
@pytest.mark.parametrize("prog,cache", [("stage2", "writeback"), ("stage2", "writethrough"),
                                        ("poweroff", "writeback")])
def test_qcow2_overlay_after_debug_exit_matches_qemu(prog, cache, tmp_path, qemu_img,
                                                     monkeypatch):
    from tests.kvm.test_ataprobes import probe_disk
    tag = "%s%%qcow2-%s" % (prog, cache)
    probe_disk(tmp_path / "base.img", prog)
    monkeypatch.chdir(tmp_path)         # the backing file's name, as recorded
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "base.img", "-F", "raw",
                    "top.qcow2"], check=True)
    con = tmp_path / "con"
    rc = main(["run", "--accel", "kvm", "--drive",
               "file=top.qcow2,format=qcow2,if=ide,index=0,cache=" + cache,
               "--debugcon", str(con), "--timeout", "60"])
    assert rc == int((DATA / (tag + ".status")).read_text())
    assert con.read_bytes() == (DATA / (tag + ".debugcon")).read_bytes()
    with lzma.open(DATA / (tag + ".qcow2.xz")) as f:
        qemu = f.read()
    assert (tmp_path / "top.qcow2").read_bytes() == qemu
