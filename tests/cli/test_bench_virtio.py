"""``gqemu bench virtio --quick`` runs end to end (figures are printed, never
asserted): it reads the right sectors through both devices."""
from __future__ import annotations

from gqemu.bench import virtio as bench_virtio
from gqemu.cli.main import main


def test_bench_virtio_quick(monkeypatch, capsys):
    monkeypatch.setattr(bench_virtio, "NSECT", 4096)          # 2 MiB images
    assert main(["bench", "virtio", "--quick"]) == 0
    out = capsys.readouterr().out
    for row in ("virtio-blk 4 KiB random read, QD1", "virtio-blk 4 KiB random read, QD32",
                "IDE READ DMA 4 KiB random read, QD1"):
        assert row in out
