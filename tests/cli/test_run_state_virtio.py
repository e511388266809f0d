"""werror=stop/enospc on a virtio-blk drive: the failed request is parked,
the VM pauses (io-error) with one BLOCK_IO_ERROR line, and a resume
decodes and submits it again (QEMU: virtio_blk_handle_rw_error with
BLOCK_ERROR_ACTION_STOP, virtio_blk_dma_restart_bh)."""
from __future__ import annotations

from pathlib import Path

from gqemu.cli.main import main
from gqemu.machine import make_scratch_disk

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "scripts" / "examples" / "virtio_blk.py"     # copies sectors 1-2 to 100-101


def _drive(tmp_path: Path) -> tuple[Path, str]:
    img = tmp_path / "v.img"
    make_scratch_disk(str(img), size_mib=1)
    conf = tmp_path / "bd.conf"
    conf.write_text('[inject-error]\nevent = "write_aio"\nerrno = "28"\nonce = "on"\n')
    return img, "file=blkdebug:%s:%s,format=raw,if=virtio" % (conf, img)


def test_enospc_pauses_and_the_retry_lands(tmp_path, capsys):
    img, drive = _drive(tmp_path)
    rc = main(["run", str(EXAMPLE), "--drive", drive, "--on-io-error", "retry=1,delay=0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.count("BLOCK_IO_ERROR: drive virtio0: write failed: No space left on device "
                     "(errno 28); werror=enospc: VM paused (io-error)") == 1
    data = img.read_bytes()
    assert data[100 * 512:102 * 512] == data[512:3 * 512]


def test_enospc_without_retry_ends_paused_and_writes_nothing(tmp_path, capsys):
    img, drive = _drive(tmp_path)
    before = img.read_bytes()
    rc = main(["run", str(EXAMPLE), "--drive", drive])
    err = capsys.readouterr().err
    assert rc == 4, err
    assert "VM paused (io-error)" in err and "Traceback" not in err
    assert img.read_bytes() == before
