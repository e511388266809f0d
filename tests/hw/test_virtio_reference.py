"""The reference boot program (tests/data/virtio/virtioblk.asm) under
``gqemu run --accel kvm``: QEMU 7.2's exit status, debugcon bytes (PCI
config dumps, BAR0 bytes, every request's used element and status, the
broken device) and virtio disk, recorded by tests/data/virtio/record.py."""
from __future__ import annotations

import lzma
import re
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "virtio"

sys.path.insert(0, str(DATA))
import record  # noqa: E402  (the recorder's disk layout)

sys.path.pop(0)


@pytest.mark.usefixtures("kvm")
def test_boot_program_under_kvm_as_under_qemu(tmp_path, capsys):
    prog = DATA / "virtioblk.bin"
    boot, vdisk, con = tmp_path / "boot.img", tmp_path / "vdisk.img", tmp_path / "con.bin"
    record.make_disk(str(boot), prog.read_bytes())
    record.make_disk(str(vdisk), b"")
    log = tmp_path / "trace.log"
    rc = main(["run", "--accel", "kvm", "--boot", str(prog), "--timeout", "60",
               "--drive", "file=%s,format=raw,if=ide,index=0" % boot,
               "--drive", "file=%s,format=raw,if=virtio" % vdisk, "--debugcon", str(con),
               "--trace", "virtio_*", "--trace", "virtqueue_*", "--trace", "pci_cfg_*",
               "--trace-file", str(log)])
    assert rc == int((DATA / "exitcode.txt").read_text())
    assert con.read_bytes() == (DATA / "debugcon.bin").read_bytes()
    with lzma.open(DATA / "vdisk-after.img.xz") as f:
        assert vdisk.read_bytes() == f.read()
    # QEMU printed its virtio_error on stderr too
    assert "virtio-blk request outhdr too short" in capsys.readouterr().err
    assert "outhdr too short" in (DATA / "stderr.txt").read_text()
    # the virtio_*/virtqueue_* events of the program, as QEMU logged them
    with lzma.open(DATA / "trace.log.xz", "rt") as f:
        ref = _normalize(f)
    # SeaBIOS's own driver ran before the program (gqemu leaves the device
    # as it does: virtio_pci_seabios_writes): from the program's reset on
    ref = ref[_program_start(ref):]
    got = _normalize(log.read_text().splitlines())
    got = got[_program_start(got):]
    # QEMU ran the queue on its ioeventfd/dataplane path: the merged write's
    # two completions share one (batched) notify there; gqemu has QEMU's
    # plain path, one virtio_notify per completion
    merged = got.index("virtio_blk_submit_multireq vdev P mrb P start 0 num_reqs 2 "
                       "offset 5120 size 1024 is_write 1")
    extra = got.index("virtio_notify vdev P vq P", merged)
    assert got[:extra] + got[extra + 1:] == ref
    # the program's PCI config accesses: QEMU's last lines, word for word
    mine = [ln for ln in log.read_text().splitlines() if ln.startswith("pci_cfg_")]
    with lzma.open(DATA / "trace.log.xz", "rt") as f:
        theirs = [re.sub(r"^\d+@[\d.]+:", "", ln.rstrip("\n")) for ln in f if ":pci_cfg_" in ln]
    assert len(mine) == 94 and mine == theirs[-len(mine):]


def _program_start(events: list[str]) -> int:
    """Where the program's reset (status 0, twice, then 1) starts."""
    return next(i for i in range(len(events) - 2) if events[i:i + 3] == [
        "virtio_set_status vdev P val 0", "virtio_set_status vdev P val 0",
        "virtio_set_status vdev P val 1"])


def _normalize(lines) -> list[str]:
    """Pointers out; QEMU's dataplane-only events out (virtqueue_alloc_element,
    virtio_blk_data_plane_*, the notify repeated when the ioeventfd starts);
    virtio_notify_irqfd is its virtio_notify."""
    out: list[str] = []
    for line in lines:
        line = re.sub(r"^\d+@[\d.]+:", "", line.rstrip("\n"))
        line = re.sub(r"0x[0-9a-f]+", "P", line)
        if line.startswith(("pci_cfg", "virtqueue_alloc_element", "virtio_blk_data_plane")):
            continue
        line = line.replace("virtio_notify_irqfd", "virtio_notify")
        if out and line.startswith("virtio_queue_notify") and out[-1] == line:
            continue
        out.append(line)
    return out
