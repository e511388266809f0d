"""An in-process gqemu-io run gives the block layer's error sink back: its
'qemu-io:' prefix must not reach a later in-process gqemu-img run (one
pytest worker runs both)."""
from __future__ import annotations

import sys

from gqemu.block import block_int
from gqemu.cli import qemu_io as gio


def test_qemu_io_restores_the_error_sink(tmp_path, monkeypatch, capsys):
    img = tmp_path / "t.raw"
    img.write_bytes(bytes(4096))
    before = block_int.set_error_sink(block_int._stderr)
    try:
        monkeypatch.setattr(sys, "argv", ["qemu-io"])
        assert gio.main(["qemu-io", "-f", "raw", "-c", "read 0 512", str(img)]) == 0
        block_int.error_report("a later tool's line")
        assert capsys.readouterr().err == "a later tool's line\n"
    finally:
        block_int.set_error_sink(before)
