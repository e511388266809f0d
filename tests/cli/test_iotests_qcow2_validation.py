"""qcow2 header and snapshot validation (qemu-iotests 080): gqemu's tools
against the real qemu-img/qemu-io on the same script, stdout and stderr
merged into one pipe as the iotests take them, compared whole."""
from __future__ import annotations

import pytest

import difftools

pytestmark = pytest.mark.timeout(120)

_POKE = "poke() { printf \"$2\" | dd of=t.qcow2 bs=1 seek=$1 conv=notrunc 2>/dev/null; }\n"


def test_snapshot_table_size_limit(tmp_path, qemu_img, qemu_io):
    """65536 snapshots (all-zero entries past the end of the file): one
    more is refused with EFBIG before anything is written; the image still
    opens."""
    script = _POKE + r"""
qemu-img create -q -f qcow2 t.qcow2 64M
poke 64 '\x00\x00\x00\x00\x01\x00\x00\x00'
poke 60 '\x00\x01\x00\x00'
qemu-img snapshot -c test t.qcow2; echo "rc=$?"
qemu-io -c 'read 0 512' t.qcow2; echo "rc=$?"
"""
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "-27 (File too large)" in real and ours == real


@pytest.mark.parametrize("poke", [r"poke $((sn + 0)) '\x00\x00\x00\x00\x00\x40\x02\x00'",
                                  r"poke $((sn + 8)) '\x10\x00\x00\x00'"])
def test_invalid_snapshot_l1_table(tmp_path, qemu_img, qemu_io, poke):
    """A snapshot whose L1 table is misaligned or too large: applying it
    reports the table error, then 'Failed to load snapshot' with the errno;
    a refused write is printed after the close's flush error (qemu-io's
    stdout is buffered into a pipe, its stderr is not)."""
    script = _POKE + r"""
qemu-img create -q -f qcow2 t.qcow2 64M
qemu-io -c 'write 0 512' t.qcow2 >/dev/null
qemu-img snapshot -c test t.qcow2
sn=$(od -An -tu8 --endian=big -j64 -N8 t.qcow2 | tr -d ' ')
%s
qemu-io -c 'open -o overlap-check.inactive-l2=on t.qcow2' -c 'write 0 4k' 2>&1
qemu-img snapshot -a test t.qcow2; echo "rc=$?"
qemu-img snapshot -d test t.qcow2; echo "rc=$?"
""" % poke
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "Failed to load snapshot: " in real and ours == real
