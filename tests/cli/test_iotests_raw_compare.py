"""qemu-img compare as QEMU 7.2 does it, against the real qemu-img on the
same scripts (qemu-iotests 048 and 197): the walk by block status (ranges
zero in both images are not read - a read error injected there goes
unnoticed, as in QEMU), one side allocated and the other not (the sector of
the first non-zero byte), sizes that differ (the verdict comes after the
common part is compared; the rest of the longer image must be zero),
strict mode, -p, -q, -T, -U, --image-opts, and the exit codes of failed
opens (2), block status (3) and reads (4)."""
from __future__ import annotations

import pytest

import difftools

pytestmark = pytest.mark.timeout(180)

SIZES = r"""
qemu-img create -q -f raw a.raw 128M
qemu-io -c "write -P 45 512k 4k" -c "write -P 45 520k 4k" -c "write -P 45 528k 4k" a.raw >/dev/null
cp a.raw b.raw
qemu-img compare -q a.raw b.raw; echo $?
qemu-img resize -q -f raw a.raw +32M
qemu-img compare a.raw b.raw; echo $?
qemu-img compare -s a.raw b.raw; echo $?
qemu-io -c "write -P 67 1228800 4096" a.raw > /dev/null
qemu-img compare a.raw b.raw; echo $?
qemu-io -c "write -P 67 0 4096" -c "write -P 67 1228800 4096" b.raw > /dev/null
qemu-io -c "write -P 67 0 4096" -c "write -P 1 150M 3" a.raw > /dev/null
qemu-img compare -p a.raw b.raw; echo $?
qemu-img compare -T none b.raw a.raw; echo $?
qemu-io -f raw -c "write -P 1 1000 1" b.raw >/dev/null
qemu-img compare -p -q b.raw c.raw; echo $?
qemu-img compare -T bogus a.raw b.raw; echo $?
qemu-img compare b.raw; echo $?
qemu-img compare -f raw -F raw --image-opts driver=raw,file.filename=a.raw b.raw; echo $?
qemu-img compare -U --image-opts driver=raw,file.filename=b.raw driver=raw,file.filename=a.raw
echo $?
"""

CHAINS = r"""
qemu-img create -q -f qcow2 q.qcow2 128M
qemu-io -c "write -P 45 4k 4k" -c "write -z 64k 64k" q.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b q.qcow2 -F qcow2 t.qcow2
qemu-io -c "write -P 46 8k 512" t.qcow2 >/dev/null
qemu-img compare q.qcow2 t.qcow2; echo $?
qemu-img compare -s q.qcow2 q.qcow2; echo $?
qemu-img convert -O raw q.qcow2 q.raw; qemu-img compare -s q.qcow2 q.raw; echo $?
qemu-img compare q.raw q.qcow2; echo $?
qemu-img create -q -f raw c.raw 128M
qemu-io -f raw -c "write -P 1 1001 1" -c "write -P 2 3M 64k" c.raw >/dev/null
qemu-img create -q -f qcow2 e.qcow2 128M
qemu-img compare -F qcow2 -f raw c.raw e.qcow2; echo $?
qemu-io -f raw -c "write -z 0 4k" c.raw >/dev/null
qemu-io -f qcow2 -c "write -P 2 3M 64k" e.qcow2 >/dev/null
qemu-img compare -f qcow2 -F raw e.qcow2 c.raw; echo $?
qemu-img compare -s -f qcow2 -F raw e.qcow2 c.raw; echo $?
"""

ERRORS = r"""
qemu-img create -q -f raw c.raw 128M
qemu-io -f raw -c "write -P 2 3M 64k" c.raw >/dev/null
J="'driver':'blkdebug','image':{'driver':'raw','file':{'driver':'file','filename':'c.raw'}}"
R="json:{$J,'inject-error':[{'event':'none','iotype':'read','errno':5,'sector':6200}]}"
Z="json:{$J,'inject-error':[{'event':'none','iotype':'read','errno':5,'sector':100000}]}"
S="json:{$J,'inject-error':[{'event':'none','iotype':'block-status','errno':5,'sector':6200}]}"
qemu-img compare -F raw "$R" c.raw; echo $?
qemu-img compare -F raw "$Z" c.raw; echo $?
qemu-img compare -F raw "$S" c.raw; echo $?
qemu-img compare -F raw c.raw "$S"; echo $?
"""


@pytest.mark.parametrize("script", [SIZES, CHAINS, ERRORS], ids=["sizes", "chains", "errors"])
def test_compare_same_as_qemu_img(tmp_path, qemu_img, qemu_io, script):
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "Images are identical." in real and ours == real
