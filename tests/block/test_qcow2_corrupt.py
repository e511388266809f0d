"""Malformed qcow2 images (reliability section 8, T01-T31 where they apply):
each is refused at open with QEMU's one-line message, or fails the request
with -EIO and marks the image corrupt; never a traceback, a hang, growth of
the file, or I/O outside it.
"""
from __future__ import annotations

import errno
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

import gqemu.block as blk_api
from gqemu.block.driver import BlockError
from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20


def run(*cmd, ok=(0,)):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert p.returncode in ok, "%s -> %d\n%s%s" % (cmd, p.returncode, p.stdout, p.stderr)
    return p


def poke(path: Path, offset: int, fmt: str, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def peek(path: Path, offset: int, fmt: str) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


@pytest.fixture
def fresh(qemu_img, qemu_io, tmp_path):
    """A 64 MiB qcow2 (L1 0x30000, reftable 0x10000, refblock 0x20000) with
    data in cluster 0 of the guest (L2 at 0x40000, data at 0x50000)."""
    img = tmp_path / "img.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", img, "64M")
    run(qemu_io, "-c", "write -P 0x11 0 64k", img)
    assert peek(img, 0x30000, ">Q") == 0x8000000000040000
    return img


def img_info(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["gqemu-img"])
    rc = gimg.main(["info", *args])
    out, err = capsys.readouterr()
    return rc, out, err


OPEN_CASES = [
    # (id, [(offset, fmt, value)], message)
    ("T01-magic", [(0, ">I", 0x12345678)], "Image is not in qcow2 format"),
    ("T02-bits8", [(20, ">I", 8)], "Unsupported cluster size: 2^8"),
    ("T02-bits22", [(20, ">I", 22)], "Unsupported cluster size: 2^22"),
    ("T02-bitsmax", [(20, ">I", 0xFFFFFFFF)], "Unsupported cluster size: 2^4294967295"),
    ("T03-v1", [(4, ">I", 1)], "Unsupported qcow2 version 1"),
    ("T03-v4", [(4, ">I", 4)], "Unsupported qcow2 version 4"),
    ("T04-hdr72", [(100, ">I", 72)], "qcow2 header too short"),
    ("T04-hdrbig", [(100, ">I", 0x20000)], "qcow2 header exceeds cluster size"),
    ("T05-l1huge", [(36, ">I", 0xFFFFFFFF)], "Active L1 table too large"),
    ("T05-l1big", [(36, ">I", 0x400001)], "Active L1 table too large"),
    ("T06-l1unaligned", [(40, ">Q", 0x30200)], "Active L1 table offset invalid"),
    ("T06-l1far", [(40, ">Q", 0x7FFFFFFFFFFF0000)],
     "Could not read L1 table: Input/output error"),
    ("T07-size62", [(24, ">Q", 1 << 62)], "Image is too big"),
    ("T07-size63", [(24, ">Q", (1 << 63) - 512)], "Image is too big"),
    ("T07-l1zero", [(36, ">I", 0)], "L1 table is too small"),
    ("T08-rthuge", [(56, ">I", 0xFFFFFFFF)], "Reference count table too large"),
    ("T08-rtzero", [(56, ">I", 0)], "Image does not contain a reference count table"),
    ("T08-rtunaligned", [(48, ">Q", 0x10200)], "Reference count table offset invalid"),
    ("T08-order7", [(96, ">I", 7)],
     "Reference count entry width too large; may not exceed 64 bits"),
    ("T09-snhuge", [(60, ">I", 0xFFFFFFFF)], "Snapshot table too large"),
    ("T09-snunaligned", [(60, ">I", 1), (64, ">Q", 0x10200)], "Snapshot table offset invalid"),
    ("T10-bit5", [(72, ">Q", 1 << 5)],
     "Unsupported qcow2 feature(s): Unknown incompatible feature: 20"),
    ("T10-bit63", [(72, ">Q", 1 << 63)],
     "Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000000"),
    ("T12-extlen", [(0x74, ">I", 0xFFFFF000)], "Header extension too large"),
    ("T12-bfsize", [(8, ">Q", 0x200), (16, ">I", 0xFFFFFFFF)], "Backing file name too long"),
    ("T12-bfoffset", [(8, ">Q", 0x20000)], "Invalid backing file offset"),
    ("crypt", [(32, ">I", 7)], "Unsupported encryption method 7"),
]


@pytest.mark.parametrize("case", OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_open_refused_one_line(fresh, capsys, monkeypatch, case):
    _, pokes, msg = case
    for off, fmt, val in pokes:
        poke(fresh, off, fmt, val)
    size = fresh.stat().st_size
    rc, out, err = img_info(capsys, monkeypatch, "-f", "qcow2", str(fresh))
    assert rc == 1 and out == ""
    assert err == "gqemu-img: Could not open '%s': %s\n" % (fresh, msg)
    assert fresh.stat().st_size == size


def test_open_refused_matches_qemu(fresh, qemu_img):
    """The same pokes, checked against qemu-img's own message."""
    for cid, pokes, msg in OPEN_CASES[:12]:
        data = fresh.read_bytes()
        for off, fmt, val in pokes:
            poke(fresh, off, fmt, val)
        p = run(qemu_img, "info", "-f", "qcow2", fresh, ok=(1,))
        assert p.stderr.strip().endswith(msg), (cid, p.stderr)
        fresh.write_bytes(data)


def test_data_file_bit_without_name(fresh, qemu_img, capsys, monkeypatch):
    """T18: the data-file bit with no data file named.  qemu-img info opens
    no data file (BDRV_O_NO_IO, QEMU 7.2.13+), so it shows the image as the
    real one does; check (and any I/O open) refuses it."""
    poke(fresh, 72, ">Q", 1 << 2)
    want = run(qemu_img, "info", "-f", "qcow2", fresh)
    rc, out, err = img_info(capsys, monkeypatch, "-f", "qcow2", str(fresh))
    assert (rc, out, err) == (0, want.stdout, "")
    assert "data file raw: false" in out and "data file:" not in out
    monkeypatch.setattr(sys, "argv", ["gqemu-img"])
    capsys.readouterr()
    rc = gimg.main(["check", str(fresh)])
    assert rc == 1 and capsys.readouterr().err == (
        "gqemu-img: Could not open '%s': 'data-file' is required for this image\n" % fresh)


def test_truncated_header(tmp_path, capsys, monkeypatch, qemu_img):
    img = tmp_path / "t.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", img, "1M")
    img.write_bytes(img.read_bytes()[:50])
    rc, _, err = img_info(capsys, monkeypatch, "-f", "qcow2", str(img))
    assert rc == 1 and err.endswith(": qcow2 header too short\n")


def test_snapshot_extra_data_and_bad_snapshot_l1(fresh, qemu_img, capsys, monkeypatch):
    run(qemu_img, "snapshot", "-c", "s", fresh)
    sn_off = peek(fresh, 64, ">Q")
    good = fresh.read_bytes()
    poke(fresh, sn_off + 36, ">I", 1025)                        # T09 extra data
    rc, _, err = img_info(capsys, monkeypatch, str(fresh))
    assert rc == 1 and err.endswith("Too much extra metadata in snapshot table entry 0\n"
                                    "You can force-remove this extra metadata with "
                                    "qemu-img check -r all\n")        # QEMU's hint
    fresh.write_bytes(good)
    poke(fresh, sn_off + 8, ">I", 0x10000000)                   # T11 snapshot L1 size
    monkeypatch.setattr(sys, "argv", ["gqemu-img"])
    rc = gimg.main(["snapshot", "-a", "s", str(fresh)])
    assert rc == 1
    assert capsys.readouterr().err == \
        "gqemu-img: Snapshot L1 table too large\n" \
        "gqemu-img: Could not apply snapshot 's': Failed to load snapshot: File too large\n"
    blk = blk_api.blk_new_open(str(fresh), {"format": "qcow2"})   # the active image works
    assert blk_api.blk_pread(blk, 0, 4) == b"\x11" * 4
    blk_api.blk_unref(blk)


def test_unknown_compat_kept_autoclear_cleared(fresh):
    poke(fresh, 80, ">Q", 0x80)
    poke(fresh, 88, ">Q", 0x80)
    blk = blk_api.blk_new_open(str(fresh), {"format": "qcow2"})
    blk_api.blk_unref(blk)
    assert peek(fresh, 80, ">Q") == 0x80 and peek(fresh, 88, ">Q") == 0


def test_corrupt_bit(fresh, qemu_img):
    poke(fresh, 72, ">Q", 2)
    with pytest.raises(BlockError, match="^qcow2: Image is corrupt; cannot be opened "
                                         "read/write$"):
        blk_api.blk_new_open(str(fresh), {"format": "qcow2"})
    blk = blk_api.blk_new_open(str(fresh), {"format": "qcow2", "readonly": "on"})
    assert blk_api.blk_pread(blk, 0, 8) == b"\x11" * 8
    blk_api.blk_unref(blk)
    assert run("gqemu-img", "check", fresh).returncode == 0
    assert peek(fresh, 72, ">Q") == 2                     # plain check keeps it
    run("gqemu-img", "check", "-r", "leaks", fresh)
    assert peek(fresh, 72, ">Q") == 0


def test_backing_loops_and_host_file(qemu_img, tmp_path):
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", a, "1M")
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
    run(qemu_img, "rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a)
    for img in (a, b):
        p = run("gqemu-img", "map", img, ok=(1,))
        assert p.stderr.count("\n") == 1 and "creates an infinite loop" in p.stderr
    run(qemu_img, "rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", a)        # self loop
    assert "infinite loop" in run("gqemu-img", "map", a, ok=(1,)).stderr
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n" * 100)
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "secret.txt", "-F", "raw", a)
    assert peek(a, 0x70, ">I") == 0xE2792ACA
    poke(a, 0x70, ">I", 0)                     # drop the backing-format extension
    p = run("gqemu-img", "map", a, ok=(1,))
    assert "refusing" in p.stderr and "Traceback" not in p.stderr
    # info inspects without opening anything the image names
    assert "backing file: secret.txt" in run("gqemu-img", "info", a).stdout


def open_rw(img: Path, **kw) -> object:
    return blk_api.blk_new_open(str(img), {"format": "qcow2", **kw})


def read(blk: object, off: int, n: int) -> int:
    return blk_api.blk_prw(blk, off, bytearray(n), n, False)


def write(blk: object, off: int, n: int) -> int:
    return blk_api.blk_prw(blk, off, bytearray(b"\x77" * n), n, True)


def assert_eio(fn: Callable[..., int], *args: object) -> None:
    """``fn(*args)`` raises BlockError carrying EIO."""
    with pytest.raises(BlockError) as e:
        fn(*args)
    assert e.value.errno == errno.EIO


def test_T20_T21_unaligned_l2_offset(fresh, capfd):
    poke(fresh, 0x30000, ">Q", 0x8000000000042A00)
    before = fresh.read_bytes()
    ro = open_rw(fresh, readonly="on")
    assert_eio(read, ro, 0, 512)
    blk_api.blk_unref(ro)
    assert fresh.read_bytes() == before                   # T21: read-only: untouched
    err = capfd.readouterr().err
    assert "qcow2: Image is corrupt: L2 table offset 0x42a00 unaligned (L1 index: 0); " \
           "further non-fatal corruption events will be suppressed" in err
    blk = open_rw(fresh)
    assert_eio(read, blk, 0, 512)
    with pytest.raises(BlockError):                        # the node stays unusable
        read(blk, 0, 512)
    blk_api.blk_unref(blk)
    assert "qcow2: Marking image as corrupt: L2 table offset 0x42a00 unaligned " \
           "(L1 index: 0)" in capfd.readouterr().err
    assert peek(fresh, 72, ">Q") & 2


def test_T22_unaligned_data_offset(fresh, capfd):
    poke(fresh, 0x40000, ">Q", 0x8000000000052A00)
    blk = open_rw(fresh)
    assert_eio(read, blk, 0, 512)
    blk_api.blk_unref(blk)
    assert "Cluster allocation offset 0x52a00 unaligned (L2 offset: 0x40000, L2 index: 0)" \
        in capfd.readouterr().err
    assert peek(fresh, 72, ">Q") & 2


@pytest.mark.parametrize("where", ["l1", "l2"])
def test_T23_pointer_past_eof_never_grows_file(fresh, where):
    if where == "l1":
        poke(fresh, 0x30000, ">Q", 0x8000000010000000)
    else:
        poke(fresh, 0x40000, ">Q", 0x8000000010000000)
    size = fresh.stat().st_size
    blk = open_rw(fresh)
    assert_eio(write, blk, 0, 4096)
    blk_api.blk_unref(blk)
    assert fresh.stat().st_size == size
    assert peek(fresh, 72, ">Q") & 2


@pytest.mark.parametrize("entry,kind", [
    (0x8000000000030000, "active L1 table"),      # T24: L2 entry = the L1 table
    (0x8000000000010000, "refcount table"),       # T25
    (0x8000000000020000, "refcount block"),
    (0x8000000000000000 | 0, None),               # offset 0 counts as unallocated
])
def test_T24_T25_overlap_checks(fresh, capfd, qemu_img, entry, kind):
    poke(fresh, 0x40000 + 8, ">Q", entry)
    protected = fresh.read_bytes()[:0x40000]
    blk = open_rw(fresh)
    if kind is None:
        assert write(blk, 65536, 4096) == 0
    else:
        assert_eio(write, blk, 65536, 4096)
    blk_api.blk_unref(blk)
    err = capfd.readouterr().err
    if kind is None:
        assert run(qemu_img, "check", fresh).returncode == 0
        return
    assert "Preventing invalid write on metadata (overlaps with %s)" % kind in err
    now = fresh.read_bytes()[:0x40000]
    assert now[:72] == protected[:72] and now[80:] == protected[80:]   # only the bit


def test_T24_l1_points_at_itself(fresh, capfd):
    poke(fresh, 0x30000, ">Q", 0x8000000000030000)
    blk = open_rw(fresh)
    assert_eio(write, blk, 0, 512)
    blk_api.blk_unref(blk)
    assert "overlaps with active L1 table" in capfd.readouterr().err


def test_T26_zeroed_refblock_then_repair(fresh, capfd, qemu_img):
    with open(fresh, "r+b") as f:
        f.seek(0x20000)
        f.write(bytes(65536))
    blk = open_rw(fresh)
    assert_eio(write, blk, 8 * MiB, 4096)
    blk_api.blk_unref(blk)
    # the line real qemu-io prints for the same write on the same image
    assert capfd.readouterr().err == (
        "qcow2: Marking image as corrupt: Preventing invalid write on metadata "
        "(overlaps with qcow2_header); further corruption events will be suppressed\n")
    assert run("gqemu-img", "check", fresh, ok=(2,)).returncode == 2
    p = run("gqemu-img", "check", "-r", "all", fresh)
    assert "Rebuilding refcount structure" in p.stderr
    assert run(qemu_img, "check", fresh).returncode == 0
    blk = open_rw(fresh)
    assert write(blk, 8 * MiB, 4096) == 0
    assert blk_api.blk_pread(blk, 0, 4) == b"\x11" * 4
    blk_api.blk_unref(blk)
    assert run(qemu_img, "check", fresh).returncode == 0


def test_T27_unaligned_refblock(fresh, capfd):
    poke(fresh, 0x10000, ">Q", 0x22A00)
    blk = open_rw(fresh)
    assert_eio(write, blk, 8 * MiB, 4096)
    blk_api.blk_unref(blk)
    assert "Refblock offset 0x22a00 unaligned (reftable index: 0)" in capfd.readouterr().err
    p = run("gqemu-img", "check", fresh, ok=(1,))
    assert "Check failed" in p.stderr


def test_T28_zero_flag_in_v2(qemu_img, qemu_io, tmp_path, capfd):
    img = tmp_path / "v2.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", img, "1M")
    run(qemu_io, "-c", "write 0 64k", img)
    poke(img, 0x40000, ">Q", peek(img, 0x40000, ">Q") | 1)
    blk = open_rw(img)
    assert_eio(read, blk, 0, 512)
    blk_api.blk_unref(blk)
    assert "Zero cluster entry found in pre-v3 image (L2 offset: 0x40000, L2 index: 0)" \
        in capfd.readouterr().err


def test_T29_garbage_compressed_cluster(qemu_img, qemu_io, tmp_path):
    src, img = tmp_path / "s.qcow2", tmp_path / "c.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", src, "1M")
    run(qemu_io, "-c", "write -P 1 0 64k", "-c", "write -P 2 64k 64k", src)
    run(qemu_img, "convert", "-c", "-O", "qcow2", src, img)
    l2 = peek(img, 0x30000, ">Q") & 0x00FFFFFFFFFFFE00
    ent = peek(img, l2, ">Q")
    coff = ent & ((1 << 54) - 1)
    with open(img, "r+b") as f:
        f.seek(coff)
        f.write(b"\xff" * 16)
    blk = open_rw(img)
    assert_eio(read, blk, 0, 512)
    assert blk_api.blk_pread(blk, 65536, 4) == b"\x02" * 4
    blk_api.blk_unref(blk)
    assert not peek(img, 72, ">Q") & 2
    poke(img, l2, ">Q", ent | (0xFF << 54))                # sector count past EOF
    blk = open_rw(img, readonly="on")
    assert_eio(read, blk, 0, 512)
    blk_api.blk_unref(blk)
    p = run("gqemu-img", "convert", "-O", "raw", img, tmp_path / "o.raw", ok=(1,))
    assert p.stderr == "gqemu-img: error while reading at byte 0: Input/output error\n"


def test_T30_reserved_bits(fresh):
    poke(fresh, 0x40000, ">Q", 0x8100000000050000)
    blk = open_rw(fresh, readonly="on")
    assert blk_api.blk_pread(blk, 0, 4) == b"\x11" * 4
    blk_api.blk_unref(blk)
    p = run("gqemu-img", "check", fresh, ok=(2,))
    assert "ERROR found l2 entry with reserved bits set: 8100000000050000" in p.stderr


def test_T31_truncated_data_cluster(fresh):
    data = fresh.read_bytes()
    fresh.write_bytes(data[:0x50000 + 1000])
    blk = open_rw(fresh, readonly="on")
    got = blk_api.blk_pread(blk, 0, 65536)
    blk_api.blk_unref(blk)
    assert got == b"\x11" * 1000 + bytes(65536 - 1000)


def test_tool_errors_are_one_line(tmp_path, qemu_img):
    # Errors qemu-img reports on two lines (a bad size, an unknown command:
    # "Try '... --help'") are compared with qemu-img itself in
    # tests/cli/test_qemu_img_sizes.py.
    cases = [
        (["info", str(tmp_path / "nope")], 1),
        (["check", "-f", "raw", str(tmp_path / "r.raw")], 63),
        (["create", "-f", "qcow2", "-o", "cluster_size=1000", str(tmp_path / "x"), "1M"], 1),
        (["compare", str(tmp_path / "nope"), str(tmp_path / "nope2")], 2),
        (["info", "--output=xml", "x"], 1),
    ]
    (tmp_path / "r.raw").write_bytes(bytes(4096))
    for args, code in cases:
        p = run("gqemu-img", *args, ok=(code,))
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("gqemu-img: "), (args, p.stderr)
    # a missing backing file: qemu-img 7.2's own second line, nothing more
    p = run("gqemu-img", "create", "-f", "qcow2", "-b", "a", str(tmp_path / "x"), "1M", ok=(1,))
    assert p.stderr.endswith(": No such file or directory\nCould not open backing image.\n")
    assert p.stderr.count("\n") == 2 and p.stderr.startswith("gqemu-img: "), p.stderr
    p = run("gqemu-img", "--help")
    assert "Supported formats: " in p.stdout and " qcow2 " in p.stdout + " "


def test_short_feature_table_names_the_feature(tmp_path, qemu_img):
    """A feature-table extension whose only entry is cut short (2 + 12
    bytes, as qemu-iotests 036 writes it) still names the feature: QEMU
    reads entries up to an empty name, zero-padding the last one."""
    img = tmp_path / "f.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", img, "1M")
    data = bytearray(img.read_bytes())
    hdr_len = struct.unpack(">I", data[100:104])[0]
    entry = b"\x00\x3fTest feature"
    ext = struct.pack(">II", 0x6803f857, len(entry)) + entry + b"\0" * (-len(entry) % 8)
    ext += struct.pack(">II", 0, 0)
    data[hdr_len:hdr_len + len(ext)] = ext
    data[72:80] = struct.pack(">Q", (1 << 63) | (1 << 62) | (1 << 61))
    img.write_bytes(bytes(data))
    q = run(qemu_img, "info", img, ok=(1,)).stderr
    g = subprocess.run([sys.executable, "-m", "gqemu.cli.qemu_img", "info", str(img)],
                       capture_output=True, text=True).stderr
    assert "Test feature, Unknown incompatible feature: 6000000000000000" in q
    assert g.split(": ", 1)[1] == q.split(": ", 1)[1]


@pytest.mark.parametrize("cut", [0, 8])
def test_check_image_truncated_before_l1_table(qemu_img, tmp_path, cut):
    """An image cut off before (or inside) its L1 table: real qemu-img reads
    the missing part as zeroes and finds no errors; gqemu-img reports the
    corruption and exits 2 (issue 10 item 7)."""
    img = tmp_path / "t.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", img, "1G")
    l1_offset = peek(img, 40, ">Q")
    l1_size = peek(img, 36, ">I")
    assert l1_size and l1_offset + l1_size * 8 == img.stat().st_size
    with open(img, "r+b") as f:
        f.truncate(l1_offset + cut)
    p = run("gqemu-img", "check", img, ok=(2,))
    assert "ERROR l1_offset=%#x: L1 table" % l1_offset in p.stderr
    assert "beyond the end of the image file" in p.stderr
    assert "1 errors were found on the image." in p.stdout
    p = run("gqemu-img", "check", "-r", "all", img, ok=(2,))
    assert "beyond the end of the image file" in p.stderr
