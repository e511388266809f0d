"""A run recorded under ``--accel kvm`` replays without divergence: the
replay machine must start as the recorded one did (PCI as SeaBIOS leaves
it, IDE bus mastering off), which the trace header's ``firmware`` says.
The program reads the IDE function's PCI command register while it looks
for the virtio-blk function, so a replay machine with bus mastering on
diverged at that read."""
from __future__ import annotations

import shutil
from pathlib import Path

from gqemu.cli.main import main
from gqemu.replay.format import open_trace

ROOT = Path(__file__).resolve().parents[2]
VIRTIO_BOOT = ROOT / "tests" / "data" / "virtio" / "virtioblk.bin"


def test_kvm_virtio_run_replays_without_divergence(kvm, tmp_path, capsys):
    disk = tmp_path / "v.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    twin = tmp_path / "w.img"
    shutil.copyfile(disk, twin)
    trace = tmp_path / "run.gqt"
    main(["run", "--accel", "kvm", "--boot", str(VIRTIO_BOOT), "--debugcon",
          str(tmp_path / "con.bin"), "--drive", "file=%s,format=raw,if=virtio" % disk,
          "--record", str(trace)])
    f, reader = open_trace(str(trace))
    with f:
        assert reader.meta["firmware"] == "seabios"
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive", "file=%s,format=raw,if=virtio" % twin])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no divergence" in out
    assert twin.read_bytes() == disk.read_bytes()


def test_replay_without_drives_names_the_recorded_interface(kvm, tmp_path, capsys):
    disk = tmp_path / "v.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    trace = tmp_path / "run.gqt"
    main(["run", "--accel", "kvm", "--boot", str(VIRTIO_BOOT), "--debugcon",
          str(tmp_path / "con.bin"), "--drive", "file=%s,format=raw,if=virtio" % disk,
          "--record", str(trace)])
    capsys.readouterr()
    assert main(["replay", str(trace)]) == 2
    assert "(virtio index 0)" in capsys.readouterr().err
