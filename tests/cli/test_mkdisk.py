"""``gqemu mkdisk``: the self-describing disk, byte for byte what
refdata/mkdisk.py made for the real-QEMU recordings; sizes as qemu-img reads
them; one-line errors; no overwrite without --force; usable by gqemu run."""
from __future__ import annotations

import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.machine import make_scratch_disk

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "examples"


def gqemu(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_with_mbr_equals_the_recorded_pristine_disk(refdata, tmp_path, capsys):
    """refdata's disk-pristine.img is mkdisk.py --mbr ataprobe.bin, 16 MiB."""
    d = tmp_path / "d.img"
    rc, out, err = gqemu(capsys, "mkdisk", d, "--mbr", refdata / "mbr" / "ataprobe.bin")
    assert (rc, err) == (0, "")
    assert out == "%s: 16777216 bytes, 32768 self-describing sectors, boot sector from %s\n" \
        % (d, refdata / "mbr" / "ataprobe.bin")
    with lzma.open(refdata / "mbr" / "out" / "disk-pristine.img.xz") as f:
        assert d.read_bytes() == f.read()


def test_sizes_match_refdata_script_and_scratch_disk(refdata, tmp_path, capsys):
    ref = tmp_path / "ref.img"
    subprocess.run([sys.executable, refdata / "mkdisk.py", ref, "--size-mib", "2"],
                   check=True, capture_output=True)
    rc, _o, err = gqemu(capsys, "mkdisk", "-q", tmp_path / "a.img", "--size", "2M")
    assert (rc, err) == (0, "")
    assert (tmp_path / "a.img").read_bytes() == ref.read_bytes()
    rc, _o, _e = gqemu(capsys, "mkdisk", "-q", tmp_path / "b.img")      # default: 16M
    make_scratch_disk(str(tmp_path / "scratch.img"))                   # gqemu run's disk
    assert (tmp_path / "b.img").read_bytes() == (tmp_path / "scratch.img").read_bytes()


@pytest.mark.parametrize("size, nbytes", [("1536", 1536), ("1k", 1024), ("16.5M", 17301504),
                                          ("512b", 512)])
def test_qemu_img_sizes(qemu_img, tmp_path, capsys, size, nbytes):
    """The same number of bytes as qemu-img create for the same SIZE."""
    q = tmp_path / "q.img"
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", q, size], check=True)
    assert q.stat().st_size == nbytes
    rc, _o, err = gqemu(capsys, "mkdisk", "-q", tmp_path / "g.img", "--size", size)
    assert (rc, err) == (0, "")
    assert (tmp_path / "g.img").stat().st_size == nbytes


@pytest.mark.parametrize("argv, msg", [
    (["--size", "0"], "--size 0: the size must be a positive multiple of 512 bytes"),
    (["--size", "1000"], "--size 1000: the size must be a positive multiple of 512 bytes"),
    (["--size=-1"], "--size -1: the size must be a positive multiple of 512 bytes"),
    (["--size", "abc"], "--size abc: Invalid image size specified."),
    (["--size", "3T"], "--size 3T: at most 2T (the sectors carry 32-bit LBAs)"),
    (["--mbr", "/nonexistent/boot.bin"], "--mbr /nonexistent/boot.bin: No such file or dir"),
])
def test_bad_arguments_one_line(tmp_path, capsys, argv, msg):
    rc, out, err = gqemu(capsys, "mkdisk", tmp_path / "x.img", *argv)
    assert rc == 2 and out == ""
    assert err.startswith("gqemu mkdisk: " + msg) and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []                 # nothing left behind


def test_bad_mbr_and_targets(tmp_path, capsys):
    boot = tmp_path / "boot.bin"
    boot.write_bytes(b"\x90" * 512)                   # no 55 aa
    rc, _o, err = gqemu(capsys, "mkdisk", tmp_path / "x.img", "--mbr", boot)
    assert rc == 2 and "not a boot sector (512 bytes; it must be 512 bytes ending in 55 aa)" \
        in err
    rc, _o, err = gqemu(capsys, "mkdisk", tmp_path / "no" / "x.img")
    assert rc == 2 and err == "gqemu mkdisk: %s: No such file or directory\n" \
        % (tmp_path / "no" / "x.img")
    rc, _o, err = gqemu(capsys, "mkdisk", "--force", tmp_path)
    assert rc == 2 and err == "gqemu mkdisk: %s: Is a directory\n" % tmp_path
    assert sorted(os.listdir(tmp_path)) == ["boot.bin"]


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    d = tmp_path / "disk.img"
    d.write_bytes(b"precious")
    rc, out, err = gqemu(capsys, "mkdisk", d, "--size", "1k")
    assert (rc, out) == (2, "")
    assert err == "gqemu mkdisk: %s: already exists (use --force to overwrite it)\n" % d
    assert d.read_bytes() == b"precious"
    rc, _o, err = gqemu(capsys, "mkdisk", "-q", "--force", d, "--size", "1k")
    assert (rc, err) == (0, "")
    assert d.stat().st_size == 1024 and d.read_bytes()[4:18] == b"<LBA 0x00000000>"[:14]
    assert sorted(os.listdir(tmp_path)) == ["disk.img"]          # no temporary left


def test_dma_example_runs_on_it(tmp_path, capsys, monkeypatch):
    """The README's pair: mkdisk, then dma.py with the disk as a -drive."""
    monkeypatch.chdir(tmp_path)
    rc, _o, err = gqemu(capsys, "mkdisk", "disk.img", "--size", "16M")
    assert (rc, err) == (0, "")
    rc, out, err = gqemu(capsys, "run", EXAMPLES / "dma.py",
                         "--drive", "file=disk.img,format=raw,if=ide,index=0")
    assert (rc, err) == (0, "")
    assert out == ("READ DMA lba 16 x8: sectors say [16, 17, 18, 19, 20, 21, 22, 23]\n"
                   "WRITE DMA lba 300 x4, read back by DMA and PIO: ok\n")
    assert (tmp_path / "disk.img").read_bytes()[300 * 512:304 * 512] == bytes(range(256)) * 8


def test_force_replaces_only_regular_files(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rc, out, err = gqemu(capsys, "mkdisk", "--force", fifo, "--size", "1k")
    assert (rc, out) == (2, "")
    assert err == "gqemu mkdisk: %s: not a regular file (--force replaces only files)\n" % fifo
    assert sorted(os.listdir(tmp_path)) == ["fifo"]


@pytest.mark.parametrize("size_mib", [1, 3, 17])
def test_scratch_disk_is_scratch_sector_by_sector(tmp_path, size_mib):
    """The disk is built 2 MiB at a time by patching a first chunk's
    columns; every sector is still scratch_sector(lba), across chunk
    boundaries and in a last partial chunk, with or without a boot sector."""
    from gqemu.machine import scratch_sector
    mbr = bytes(range(256)) + bytes(254) + b"\x55\xaa"
    d = tmp_path / "d.img"
    assert make_scratch_disk(str(d), size_mib, mbr) == size_mib << 20
    want = [scratch_sector(lba) for lba in range(size_mib * 2048)]
    want[0] = mbr
    assert d.read_bytes() == b"".join(want)


def test_scratch_chunks_far_out_carry_every_lba_byte():
    """Chunks whose number sets the LBA's bytes 1-3 and all five upper hex
    digits (disks far larger than a test can write)."""
    from gqemu.blockdev import _CHUNK, _scratch_chunk
    from gqemu.machine import scratch_sector
    first = b"".join(scratch_sector(lba) for lba in range(_CHUNK))
    for c in (1, 15, 16, 0xFF, 0x100, 0xFFF, 0x1000, 0x12345, 0xFFFFF):
        got = bytes(_scratch_chunk(first, c, 300))
        assert got == b"".join(scratch_sector(_CHUNK * c + m) for m in range(300)), hex(c)
