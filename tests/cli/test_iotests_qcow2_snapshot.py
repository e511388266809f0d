"""qcow2 internal snapshots and their repair by qemu-img check (qemu-iotests
217, 261 and the snapshot parts of 080): gqemu's tools against the real
qemu-img/qemu-io on the same script, output and exit statuses compared
whole."""
from __future__ import annotations

import re

import pytest

import difftools

pytestmark = pytest.mark.timeout(120)


def test_snapshot_delete_io_error_then_repair(tmp_path, qemu_img, qemu_io):
    """217: an I/O error while freeing a deleted snapshot's clusters names
    the errno; the leaks it leaves are then repaired by 'check -r leaks',
    which also fixes the OFLAG_COPIED flags once the refcounts are right."""
    script = r"""
printf '[inject-error]\nevent = "cluster_free"\nerrno = "5"\n' > bd.conf
qemu-img create -q -f qcow2 t.qcow2 64M
qemu-io -c 'write 0 64k' t.qcow2 >/dev/null
qemu-img snapshot -c foo t.qcow2
qemu-img snapshot -d foo blkdebug:bd.conf:t.qcow2; echo "rc=$?"
qemu-img snapshot -l t.qcow2
qemu-img check t.qcow2; echo "rc=$?"
qemu-img check -r leaks t.qcow2; echo "rc=$?"
qemu-img check t.qcow2; echo "rc=$?"
"""
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "Repairing OFLAG_COPIED" in real and ours == real


# Rewrites an image's snapshot table (python3 craft.py IMG MODE), as 261's
# poke_file/dd steps do: the header's table pointer and count, raw entries.
_CRAFT = r'''
import struct, sys
img, mode = sys.argv[1], sys.argv[2]
f = open(img, "r+b")
def be(off, fmt):
    f.seek(off); return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
def poke(off, data):
    f.seek(off); f.write(data)
def entry(eds=0, id_size=0, name_size=0, l1=(0, 0)):
    return struct.pack(">QIHHIIQII", l1[0], l1[1], id_size, name_size, 0, 0, 0, 0, eds)
def allocate(start, end):          # refcount 1 for clusters [start, end) in refblock 0
    rb = be(be(48, ">Q"), ">Q")
    for c in range(start >> 16, (end + 0xffff) >> 16):
        poke(rb + 2 * c, b"\0\1")
if mode == "v3-incomplete":        # entries 0 and 2 keep 0 and 8 bytes of extra data
    off, out = be(64, ">Q"), b""
    for i in range(be(60, ">I")):
        off = (off + 7) & ~7
        f.seek(off); h = bytearray(f.read(40))
        eds, idn = be(off + 36, ">I"), be(off + 12, ">H") + be(off + 14, ">H")
        f.seek(off + 40); extra = f.read(eds); names = f.read(idn)
        keep = {0: 0, 2: 8}.get(i, eds)
        h[36:40] = struct.pack(">I", keep)
        out += bytes(-len(out) % 8) + bytes(h) + extra[:keep] + names
        off += 40 + eds + idn
    poke(be(64, ">Q"), out)
    poke(4, b"\0\0\0\3"); poke(100, b"\0\0\0\x68"); poke(96, b"\0\0\0\4")
elif mode == "extra":              # 64 KiB of extra data in the last entry
    off = be(64, ">Q")
    for i in range(be(60, ">I") - 1):
        off = (off + 7) & ~7
        off += 40 + be(off + 36, ">I") + be(off + 12, ">H") + be(off + 14, ">H")
    poke(((off + 7) & ~7) + 36, struct.pack(">I", 65536))
elif mode == "too-many":           # 65538 all-zero (v2) entries at 1 MiB
    n = 65538
    poke(64, struct.pack(">Q", 1 << 20)); poke(60, struct.pack(">I", n))
    f.truncate((1 << 20) + 40 * n)
    poke((1 << 20) + 40 * 65536, entry(l1=(0xe0000, 1)))
    poke((1 << 20) - 2 * 65536, struct.pack(">Q", 0x80000000000f0000))
    allocate((1 << 20) - 2 * 65536, (1 << 20) + 40 * n)
elif mode == "too-big":            # entries of 130 KiB until the table passes 64 MiB
    size, off, n = 40 + 1024 + 65535 + 65535 + 2, 1 << 20, 0
    while off - (1 << 20) <= 64 << 20:
        poke(off, entry(1024, 0xffff, 0xffff)); off += size; n += 1
    f.truncate(off)
    poke(off - size, entry(1024, 0xffff, 0xffff, l1=(0xe0000, 1)))
    poke((1 << 20) - 2 * 65536, struct.pack(">Q", 0x80000000000f0000))
    allocate((1 << 20) - 2 * 65536, off)
    poke(64, struct.pack(">Q", 1 << 20)); poke(60, struct.pack(">I", n))
'''

_SHOW = ("qemu-img info t.qcow2 >/dev/null; echo \"rc=$?\"; "
         "qemu-img check t.qcow2; echo \"rc=$?\"; "
         "qemu-img check -r all t.qcow2; echo \"rc=$?\"; "
         "qemu-img snapshot -l t.qcow2 | wc -l; od -An -tu4 --endian=big -j60 -N4 t.qcow2; "
         "qemu-img check t.qcow2; echo \"rc=$?\"\n")


def _craft_both(tmp_path, qemu_img, qemu_io, setup: str) -> tuple[str, str]:
    craft = tmp_path / "craft.py"
    craft.write_text(_CRAFT)
    script = setup.replace("CRAFT", "python3 %s t.qcow2" % craft) + _SHOW
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    # where a rebuilt refcount structure lands is not compared here
    end = re.compile(r"(?m)^Image end offset: \d+\n")
    return end.sub("", real), end.sub("", ours)


def test_v3_incomplete_entries_repaired(tmp_path, qemu_img, qemu_io):
    """261 'Repair botched v3': v3 entries with less than 16 bytes of extra
    data are corruptions; check -r all rewrites the table with 24."""
    real, ours = _craft_both(tmp_path, qemu_img, qemu_io, (
        "qemu-img create -q -f qcow2 -o compat=0.10 t.qcow2 64M\n"
        "for s in sn0 sn1 sn2; do qemu-img snapshot -c $s t.qcow2; done\n"
        "CRAFT v3-incomplete\n"))
    assert "snapshot table entry 2 is incomplete" in real and ours == real


def test_too_much_extra_data(tmp_path, qemu_img, qemu_io):
    """261 'Reject too much unknown extra data': open refuses with a hint,
    check names it, check -r all cuts the extra data to 1 KiB."""
    real, ours = _craft_both(tmp_path, qemu_img, qemu_io, (
        "qemu-img create -q -f qcow2 t.qcow2 64M\n"
        "for s in sn0 sn1 sn2 sn3; do qemu-img snapshot -c $s t.qcow2; done\n"
        "CRAFT extra\n"))
    assert "Discarding too much extra metadata" in real and ours == real


def test_table_too_big_dropped(tmp_path, qemu_img, qemu_io):
    """261 'Snapshot table too big': the entries past 64 MiB of table are
    dropped by check -r all (the header count updated, their clusters
    leaked and then freed)."""
    real, ours = _craft_both(tmp_path, qemu_img, qemu_io, (
        "qemu-img create -q -f qcow2 -o compat=0.10 t.qcow2 64M\nCRAFT too-big\n"))
    assert "overhanging snapshots (snapshot table is too big)" in real and ours == real


def test_too_many_snapshots_refused(tmp_path, qemu_img, qemu_io):
    """261 'Too many snapshots': more than 65536 entries fail the open and
    the check with QEMU's hint (the repair, which real qemu-img takes tens
    of seconds over, is proven by iotest 261 through the runner)."""
    craft = tmp_path / "craft.py"
    craft.write_text(_CRAFT)
    script = ("qemu-img create -q -f qcow2 -o compat=0.10 t.qcow2 64M\n"
              "python3 %s t.qcow2 too-many\n"
              "qemu-img info t.qcow2 >/dev/null; echo \"rc=$?\"\n"
              "qemu-img check t.qcow2; echo \"rc=$?\"\n" % craft)
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "2 overhanging snapshots" in real and ours == real
