"""The divergence report, compared as text with ``replay-divergence.out``
(like a qemu-iotests .out file): the refdata QEMU trace replayed on its
pristine disk with boot-sector word 50 changed."""
from __future__ import annotations

import lzma
import shutil
from pathlib import Path

from gqemu.cli.main import main

HERE = Path(__file__).resolve().parent


def test_divergence_report_golden(refdata, tmp_path, capsys):
    out = refdata / "mbr" / "out"
    trace = tmp_path / "ref.gqt"
    assert main(["import-qemu-trace", "-q", str(out / "trace-raw.log.xz"), "-o", str(trace)]) == 0
    disk = tmp_path / "disk.img"
    with lzma.open(out / "disk-pristine.img.xz", "rb") as f, open(disk, "wb") as d:
        shutil.copyfileobj(f, d)
    with open(disk, "r+b") as f:
        f.seek(100)
        w = f.read(2)
        f.seek(100)
        f.write(bytes(b ^ 0xFF for b in w))
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive", "file=%s,format=raw" % disk])
    got, err = capsys.readouterr()
    assert rc == 1 and err == ""
    assert got == (HERE / "replay-divergence.out").read_text()
