"""qemu-img convert --salvage against the real qemu-img (qemu-iotests 251,
scaled down): a source behind blkdebug whose block status fails at some
sectors and whose reads fail at others.  A failed block status is retried
on a quarter of the range down to one sector, then that sector is read; a
failed read is retried sector by sector and a sector that still fails is
written as zeroes; each gives a warning (none with -q).  Without
--salvage the first error ends the conversion."""
from __future__ import annotations

import pytest

import difftools

pytestmark = pytest.mark.timeout(180)

SALVAGE = r"""
qemu-img create -q -f raw o.raw 8M
qemu-io -f raw -c 'write -P 42 0 8M' o.raw >/dev/null
J="'driver':'blkdebug','image':{'driver':'raw','file':{'driver':'file','filename':'o.raw'}}"
E=""
for s in $(((2 * 1024 * 1024 + 8192) / 512)) $(((5 * 1024 * 1024 + 512) / 512)); do
    E="$E{'event':'none','iotype':'block-status','errno':5,'sector':$s},"
done
for s in $(((4 * 1024 * 1024 - 65536) / 512)) $(((5 * 1024 * 1024 + 512) / 512)) \
         $(seq 12288 12295); do
    E="$E{'event':'none','iotype':'read','errno':5,'sector':$s},"
done
SRC="json:{$J,'inject-error':[${E%,}]}"
qemu-img convert --salvage "$SRC" t.raw; echo rc=$?
qemu-img compare o.raw t.raw; echo rc=$?
for ofs in $((4 * 1024 * 1024 - 65536)) $((5 * 1024 * 1024 + 512)) \
           $(seq $((6 * 1024 * 1024)) 512 $((6 * 1024 * 1024 + 3584))); do
    qemu-io -f raw -c "write -z $ofs 512" o.raw >/dev/null
done
qemu-img compare o.raw t.raw; echo rc=$?
qemu-img convert -q --salvage -O qcow2 "$SRC" t.qcow2; echo rc=$?
qemu-img compare o.raw t.qcow2; echo rc=$?
qemu-img convert "$SRC" u.raw; echo rc=$?
"""


def test_convert_salvage_same_as_qemu_img(tmp_path, qemu_img, qemu_io):
    real, ours = difftools.both(SALVAGE, tmp_path, qemu_img, qemu_io)
    assert "warning: error while reading offset" in real and ours == real
