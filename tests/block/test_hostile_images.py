"""Hostile images, built byte by byte (tests/block/hostile_qcow2.py), run
through gqemu's qemu-img/qemu-io and the real QEMU 7.2 tools by the same
script: the whole output (exit codes, messages, data read back, the file's
size and checksum after writes) must be QEMU's.

qcow version 1 images are QEMU's ``qcow`` format: probed as such and
checked at open with qcow_open's messages, never taken for a raw disk whose
metadata a guest could read and overwrite."""
from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from tests.block.hostile_qcow2 import (EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO, EXT_DATA_FILE,
                                       QCOW_OFLAG_COMPRESSED, Layout, ext, qcow1,
                                       snapshot_entry)
from tests.cli import difftools

pytestmark = pytest.mark.timeout(180)

# one qemu-img info, one qemu-io with reads and a write, the file after it
_SCRIPT = r"""
cp "$SRC" t.img
qemu-img info t.img; echo "info rc=$?"
qemu-io -c 'read -P 0x11 0 4k' -c 'read 4k 4k' -c 'write -P 0x55 2k 6k' \
        -c 'read -P 0x55 2k 6k' -c map t.img; echo "io rc=$?"
echo "size $(stat -c %s t.img) $(md5sum < t.img)"
"""


def _same(tmp_path, qemu_img, qemu_io, image: bytes, script: str = _SCRIPT) -> str:
    src = tmp_path / "src.img"
    src.write_bytes(image)
    real, ours = difftools.both("SRC=%s\n%s" % (src, script), tmp_path, qemu_img, qemu_io)
    assert "Traceback" not in ours
    assert ours == real
    return real


QCOW1_CASES = {
    "sound": qcow1(),
    "size 0": qcow1(size=0),
    "size 1": qcow1(size=1),
    "size 2^64-1": qcow1(size=(1 << 64) - 1),
    "cluster_bits 8": qcow1(cluster_bits=8),
    "cluster_bits 17": qcow1(cluster_bits=17),
    "l2_bits 5": qcow1(l2_bits=5),
    "l2_bits 14": qcow1(l2_bits=14),
    "crypt_method 2": qcow1(crypt=2),
    "L1 table at 2^64-4096": qcow1(l1_offset=0xFFFFFFFFFFFFF000),
    "backing name 1024 bytes": qcow1(backing=b"a" * 10, backing_size=1024),
    "file of 47 bytes": qcow1(truncate=47),
    "file ends inside the L1": qcow1(truncate=0x1004),
    "L1 entry past EOF": qcow1(l1={0: 0x10000000}),
    "L1 entry at 2^64-4096": qcow1(l1={0: 0xFFFFFFFFFFFFF000}),
    "L2 entry unaligned": qcow1(l2={0: 0x4004}),
    "L2 entry at 2^63-4096": qcow1(l2={0: 0x7FFFFFFFFFFFF000}),
    "compressed garbage": qcow1(l2={0: QCOW_OFLAG_COMPRESSED | 100 << 51 | 0x4000}),
    "compressed past EOF": qcow1(l2={0: QCOW_OFLAG_COMPRESSED | 100 << 51 | 0x100000}),
}


@pytest.mark.parametrize("name", sorted(QCOW1_CASES))
def test_qcow1_images_as_qemu(tmp_path, qemu_img, qemu_io, name):
    """A version-1 header is QEMU's qcow format: the old code probed it as
    raw (info said 'file format: raw' and a write landed on its L1)."""
    out = _same(tmp_path, qemu_img, qemu_io, QCOW1_CASES[name])
    assert "file format: raw" not in out


def test_qcow1_with_backing_and_compressed_clusters(tmp_path, qemu_img, qemu_io):
    """qcow images made by the real qemu-img: reads through a qcow2
    backing file, compressed clusters, a partial write into a compressed
    cluster (copied out first), map and compare, byte for byte."""
    made = tmp_path / "made"
    made.mkdir()
    for cmd in ([qemu_img, "create", "-q", "-f", "qcow2", "base.qcow2", "1M"],
                [qemu_io, "-c", "write -P 5 0 64k", "base.qcow2"],
                [qemu_img, "create", "-q", "-f", "qcow", "-b", "base.qcow2", "-F", "qcow2",
                 "ov.qcow"],
                [qemu_io, "-c", "write -P 6 4k 4k", "ov.qcow"],
                [qemu_img, "create", "-q", "-f", "raw", "r.raw", "1M"],
                [qemu_io, "-f", "raw", "-c", "write -P 9 0 100k", "r.raw"],
                [qemu_img, "convert", "-c", "-O", "qcow", "-f", "raw", "r.raw", "c.qcow"]):
        # (7.2's convert -c -O qcow leaves a complete image but exits 1)
        p = subprocess.run(cmd, cwd=made, stdout=subprocess.DEVNULL)
        assert p.returncode == 0 or "convert" in cmd
    script = r"""
cp "$MADE"/* .
qemu-img info ov.qcow
qemu-io -c 'read -P 5 0 4k' -c 'read -P 6 4k 4k' -c 'read -P 5 8k 56k' \
        -c 'read -P 0 64k 64k' -c 'write -P 7 6k 4k' -c 'read -P 7 6k 4k' ov.qcow
echo "size $(stat -c %s ov.qcow) $(md5sum < ov.qcow)"
qemu-img compare ov.qcow base.qcow2; echo "compare rc=$?"
qemu-img map --output=json c.qcow
qemu-img convert -O raw c.qcow out.raw; cmp out.raw r.raw; echo "cmp rc=$?"
qemu-io -c 'write -P 1 512 512' -c 'read -P 9 0 512' -c 'read -P 1 512 512' \
        -c 'read -P 9 1k 63k' -c 'read -P 0 100k 100k' c.qcow
echo "size $(stat -c %s c.qcow) $(md5sum < c.qcow)"
"""
    real = _same(tmp_path, qemu_img, qemu_io, b"", "MADE=%s\n%s" % (made, script))
    assert "file format: qcow\n" in real and "Pattern verification failed" not in real
    assert "cmp rc=0" in real


def test_rebase_without_room_in_the_header(tmp_path, qemu_img, qemu_io):
    """A backing name that does not fit in the header cluster: qemu-img
    rebase says so ('No space left in the file header'), as for an image
    whose header_length already fills its cluster."""
    long_name = "b" * 1000
    script = r"""
qemu-img create -q -f qcow2 -o cluster_size=512 t.qcow2 1M
qemu-img rebase -u -b %s -F raw t.qcow2 2>&1 | sed 's/bbbbb*/NAME/'; echo "rc=${PIPESTATUS[0]}"
cp "$SRC" h.qcow2
qemu-img rebase -u -b '' h.qcow2; echo "rc=$?"
qemu-img create -q -f raw r.raw 1M
qemu-img rebase -u -b x -F raw -f raw r.raw; echo "rc=$?"
""" % long_name
    real = _same(tmp_path, qemu_img, qemu_io, Layout(hdr=dict(header_length=4096)).build(),
                 script)
    assert real.count("No space left in the file header") == 2
    assert "Operation not supported" in real


def test_create_extreme_sizes_and_backing_names(tmp_path, qemu_img, qemu_io):
    """qemu-img create at the edges: sizes whose round-up to a sector
    passes 2^63 (an int64_t offset gone negative), EFBIG from a
    preallocation (bdrv_img_create's 'too large' message), a raw size
    rounded up to a sector also when preallocated, a backing file named as
    the image itself, and backing keys given to raw's -o."""
    script = r"""
for sz in 9223372036854775807 9223372036854775296 1000; do
  for p in off full falloc; do
    rm -f r; qemu-img create -q -f raw -o preallocation=$p r $sz
    echo "raw $sz $p rc=$? $(stat -c %s r 2>/dev/null)"
  done
  rm -f q; qemu-img create -q -f qcow2 q $sz; echo "qcow2 $sz rc=$?"
done
qemu-img create -q -f qcow2 t 1M
qemu-img create -q -f qcow2 -b t t 1M; echo "rc=$?"
qemu-img create -q -f qcow2 -o backing_file=t,backing_fmt=qcow2 t 1M; echo "rc=$?"
qemu-img create -q -f raw -b '' t 1M; echo "rc=$?"
qemu-img create -q -f raw -o backing_file=t t 1M; echo "rc=$?"
echo "size $(stat -c %s t)"
"""
    real = _same(tmp_path, qemu_img, qemu_io, b"", script)
    assert "same filename as the backing file" in real
    assert "Image size cannot be negative" in real



def test_qemu_io_sleep_of_a_huge_time_wraps_as_qemu(tmp_path, qemu_img, qemu_io):
    """'sleep N' computes its deadline in int64_t: a huge N wraps into the
    past and returns at once in QEMU (the old code slept for ever)."""
    script = r"""
qemu-img create -q -f qcow2 t 1M
qemu-io -c 'sleep 99999999999999999999' -c 'sleep 10000000000000' -c 'read 0 512' t
echo "rc=$?"
"""
    src = tmp_path / "src.img"
    src.write_bytes(b"")
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io, timeout=30)
    assert "read 512/512" in real and ours == real


def _point_l2_at_bitmap_directory(path) -> None:
    """Make guest cluster 0's L2 entry name the bitmap directory's cluster."""
    d = bytearray(path.read_bytes())
    off = struct.unpack_from(">I", d, 100)[0]
    doff = None
    while True:
        etype, elen = struct.unpack_from(">II", d, off)
        if etype == 0:
            break
        if etype == EXT_BITMAPS:
            doff = struct.unpack_from(">IIQQ", d, off + 8)[3]
        off += 8 + ((elen + 7) & ~7)
    assert doff is not None
    l1 = struct.unpack_from(">Q", d, 40)[0]
    l2 = struct.unpack_from(">Q", d, l1)[0] & 0x00FFFFFFFFFFFE00
    struct.pack_into(">Q", d, l2, doff | 1 << 63)
    path.write_bytes(bytes(d))


def test_writes_over_the_bitmap_directory_are_refused(tmp_path, qemu_img, qemu_io):
    """The overlap check covers the bitmap directory (the old code had no
    such check and wrote over it): an L2 entry aimed at the directory of a
    real bitmap, and the bitmaps autoclear bit with no bitmaps extension
    (an empty range at 0, which QEMU's uint64_t ranges_overlap takes to
    overlap every write)."""
    made = tmp_path / "made"
    made.mkdir()
    for cmd in ([qemu_img, "create", "-q", "-f", "qcow2", "b.qcow2", "1M"],
                [qemu_io, "-c", "write -P 1 0 64k", "b.qcow2"],
                [qemu_img, "bitmap", "--add", "b.qcow2", "b0"]):
        subprocess.run(cmd, cwd=made, check=True, stdout=subprocess.DEVNULL)
    _point_l2_at_bitmap_directory(made / "b.qcow2")
    script = r"""
cp "$MADE"/b.qcow2 .
qemu-io -c 'write -P 2 0 512' b.qcow2; echo "rc=$?"
echo "size $(stat -c %s b.qcow2) $(md5sum < b.qcow2)"
cp "$SRC" t.img
qemu-io -c 'write -P 2 0 512' -c 'read -P 0x11 4k 4k' t.img; echo "rc=$?"
qemu-img check t.img; echo "rc=$?"
echo "size $(stat -c %s t.img) $(md5sum < t.img)"
"""
    real = _same(tmp_path, qemu_img, qemu_io, Layout(hdr=dict(autoclear_features=1)).build(),
                 "MADE=%s\n%s" % (made, script))
    assert real.count("overlaps with bitmap directory") == 2


def _crypto_ext(offset: int, length: int = 0x1000, size: int = 16) -> bytes:
    return ext(EXT_CRYPTO, struct.pack(">QQ", offset, length)[:size])


QCOW2_OPEN_CASES = {
    "crypt_method 0xffffffff": Layout(hdr=dict(crypt_method=0xFFFFFFFF)),
    "LUKS without a CRYPTO extension": Layout(hdr=dict(crypt_method=2)),
    "CRYPTO extension without LUKS": Layout(extensions=[_crypto_ext(0x5000)]),
    "CRYPTO extension of 8 bytes": Layout(hdr=dict(crypt_method=2),
                                          extensions=[_crypto_ext(0x5000, size=8)]),
    "CRYPTO header unaligned": Layout(hdr=dict(crypt_method=2),
                                      extensions=[_crypto_ext(0x5008)]),
    "CRYPTO header not LUKS": Layout(hdr=dict(crypt_method=2),
                                     extensions=[_crypto_ext(0x5000, 0xFFFFFFFFFFFF)]),
    # an empty backing format: probe the backing file, as QEMU does
    "backing format ''": Layout(extensions=[ext(EXT_BACKING_FORMAT, b"")], backing=b"x.img"),
    # the image names its data file: a plain file name, never json: options
    # (QEMU 7.2.22 has CVE-2024-4467's fix; the old code read /etc/hostname)
    "data file json:": Layout(hdr=dict(incompatible_features=4), extensions=[ext(
        EXT_DATA_FILE, b'json:{"driver":"file","filename":"/etc/hostname"}')]),
    # sizes: an int64_t from 2^63 on, the L1 index kept in a uint64_t
    "size 2^63": Layout(hdr=dict(size=1 << 63)),
    "size 2^64-512": Layout(hdr=dict(size=(1 << 64) - 512)),
    "size 2^64-1": Layout(hdr=dict(size=(1 << 64) - 1)),
}


@pytest.mark.parametrize("name", sorted(QCOW2_OPEN_CASES))
def test_qcow2_headers_refused_as_qemu(tmp_path, qemu_img, qemu_io, name):
    """crypt_method and the CRYPTO header extension are checked in QEMU's
    order with its messages (the old code answered every LUKS image with
    the key-secret error and printed an unsigned method); a size just under
    2^64 passes the L1 check as an int64_t and fails as a total sector
    count (EFBIG), as in QEMU (the old code said 'Image is too big').
    'qemu-img info' is left out for LUKS without the extension: QEMU 7.2
    crashes there."""
    script = r"""
cp "$SRC" t.img
qemu-img check t.img; echo "check rc=$?"
qemu-io -c 'read 0 4k' t.img; echo "io rc=$?"
"""
    if name != "LUKS without a CRYPTO extension":
        script += 'qemu-img info t.img; echo "info rc=$?"\n'
    _same(tmp_path, qemu_img, qemu_io, QCOW2_OPEN_CASES[name].build(), script)


def test_deep_backing_chains(tmp_path, qemu_img, qemu_io):
    """A chain of 100 backing files reads, writes (copying up through all
    of them) and maps as in QEMU (the old code refused any chain over 16);
    one level more is refused in one line, never a RecursionError."""
    made = tmp_path / "made"
    made.mkdir()
    (made / "c0.qcow2").write_bytes(Layout(data_clusters=1).build())
    for i in range(1, 102):
        (made / ("c%d.qcow2" % i)).write_bytes(Layout(
            data_clusters=0, backing=b"c%d.qcow2" % (i - 1),
            extensions=[ext(EXT_BACKING_FORMAT, b"qcow2")]).build())
    script = r"""
cp "$MADE"/* .
qemu-io -c 'read -P 0x11 0 4k' -c 'read -P 0 4k 4k' -c 'write -P 5 2k 1k' \
        -c 'read -P 0x11 0 2k' -c 'read -P 5 2k 1k' -c 'read -P 0x11 3k 1k' c100.qcow2
echo "rc=$? $(md5sum < c100.qcow2)"
qemu-img map c100.qcow2; echo "rc=$?"
"""
    _same(tmp_path, qemu_img, qemu_io, b"", "MADE=%s\n%s" % (made, script))
    p = subprocess.run([str(difftools.gqemu_bin(tmp_path) / "qemu-io"), "-r",
                        "-c", "read 0 4k", str(made / "c101.qcow2")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "Backing chain" in p.stderr and "internal error" not in p.stderr


def test_snapshot_delete_and_create_as_qemu(tmp_path, qemu_img, qemu_io):
    """qemu-img snapshot -d finds the snapshot by name only (the old code
    took an ID first and deleted the wrong one: '-d 2' removed ID 2, not
    the snapshot named 2); creating a snapshot over an unaligned L1 or L2
    entry marks the image corrupt with QEMU's message and fails."""
    made = tmp_path / "made"
    made.mkdir()
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "s.qcow2", "1M"], cwd=made,
                   check=True)
    for name in ("2", "x", "1"):
        subprocess.run([qemu_img, "snapshot", "-c", name, "s.qcow2"], cwd=made, check=True)
    (made / "l1.qcow2").write_bytes(Layout(l1={0: 0x4200 | 1 << 63}).build())
    (made / "l2.qcow2").write_bytes(Layout(l2={1: 0x6200 | 1 << 63}).build())
    script = r"""
cp "$MADE"/* .
qemu-img snapshot -d 2 s.qcow2; echo "rc=$?"
qemu-img snapshot -d 3 s.qcow2; echo "rc=$?"
qemu-img snapshot -l s.qcow2 | cut -c1-24
echo "$(md5sum < s.qcow2)"
for f in l1 l2; do
  qemu-img snapshot -c s2 $f.qcow2; echo "rc=$?"
  qemu-img check $f.qcow2; echo "rc=$? $(md5sum < $f.qcow2)"
done
"""
    real = _same(tmp_path, qemu_img, qemu_io, b"", "MADE=%s\n%s" % (made, script))
    assert "unaligned (L1 index: 0)" in real and "unaligned (L2 offset: 0x4000" in real


def test_qcow1_compressed_writes(tmp_path, qemu_img, qemu_io):
    """qemu-io write -c on a qcow image: a cluster deflated at the end of
    the file (unaligned), the short-request refusal (EINVAL), and QEMU's
    quirk of deflating into an already allocated cluster -- byte for byte
    (the old code: 'Operation not supported')."""
    script = r"""
cp "$SRC" t.img
qemu-io -c 'write -c -P 3 16k 4k' -c 'read -P 3 16k 4k' -c 'write -c -P 4 0 4k' \
        -c 'read -P 4 0 4k' -c 'write -c 20k 4k' -c 'write -c 2k 2k' t.img; echo "rc=$?"
qemu-img map --output=json t.img
echo "size $(stat -c %s t.img) $(md5sum < t.img)"
"""
    real = _same(tmp_path, qemu_img, qemu_io, qcow1(), script)
    # the deflated bytes land in the allocated cluster 0 and read back as such
    assert "Invalid argument" in real and "failed at offset 0, 4096" in real


def test_snapshot_table_rewrite_keeps_foreign_entries(tmp_path, qemu_img, qemu_io):
    """Creating a snapshot rewrites the table: an ID past ULONG_MAX makes
    the next ID wrap as QEMU's strtoul/%lu do, and a name that is not UTF-8
    is written back byte for byte (the old code grew the ID to 301 digits
    and replaced the name's bytes with U+FFFD)."""
    def image(**kw) -> bytes:
        return Layout(snapshots=snapshot_entry(0x3000, 1, **kw), nb_snapshots=1,
                      refblock={3: 2, 4: 2, 5: 2, 6: 2}).build()
    made = tmp_path / "made"
    made.mkdir()
    (made / "id.qcow2").write_bytes(image(sid=b"9" * 300))
    (made / "name.qcow2").write_bytes(image(name=b"\xff\xfe\x80"))
    script = r"""
cp "$MADE"/* .
for f in id name; do
  qemu-img snapshot -c new $f.qcow2; echo "rc=$?"
  echo "size $(stat -c %s $f.qcow2)"
  "$PY" "$DUMP" $f.qcow2
done
"""
    dump = tmp_path / "dump.py"       # every entry's ID and name bytes (not its date)
    dump.write_text(_DUMP_SNAPSHOTS)
    _same(tmp_path, qemu_img, qemu_io, b"",
          "MADE=%s\nPY=%s\nDUMP=%s\n%s" % (made, sys.executable, dump, script))


_DUMP_SNAPSHOTS = """
import struct, sys
d = open(sys.argv[1], "rb").read()
n, off = struct.unpack_from(">IQ", d, 60)
for _ in range(n):
    h = struct.unpack_from(">QIHHIIQII", d, off)
    off += 40 + h[8]
    print(h[1], d[off:off + h[2]].hex(), d[off + h[2]:off + h[2] + h[3]].hex())
    off += h[2] + h[3]
    off += -off % 8
"""


def test_snapshot_commands_on_formats_without_snapshots(tmp_path, qemu_img, qemu_io):
    """raw and qcow have no snapshots: -c, -a and -d fail with the words
    img_snapshot uses for each (the old code said 'Operation not supported'
    to all three)."""
    script = r"""
cp "$SRC" t.qcow
qemu-img create -q -f raw r.raw 1M
for f in t.qcow r.raw; do
  for a in "-c s" "-a s" "-d s" "-l"; do qemu-img snapshot $a $f; echo "rc=$?"; done
done
"""
    _same(tmp_path, qemu_img, qemu_io, qcow1(), script)


def test_qcow_driver_named_for_a_qcow2_image(tmp_path, qemu_img, qemu_io):
    """-f qcow on a version 2/3 image: qcow_open's refusal and its hint."""
    script = r"""
cp "$SRC" t.img
qemu-img info -f qcow t.img; echo "rc=$?"
qemu-io -f qcow -c 'read 0 512' t.img; echo "rc=$?"
"""
    real = _same(tmp_path, qemu_img, qemu_io, Layout(version=2).build(), script)
    assert "Try the 'qcow2' driver instead." in real
