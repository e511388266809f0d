"""qemu-img map as QEMU 7.2 answers it, against the real qemu-img on the
same scripts: ``--image-opts``, ``-U``, ``-s/--start-offset`` and
``-l/--max-length`` (an entry of length 0 at or past the end), and block
status of raw files whose length is not a multiple of 512 (the node is
rounded up to a sector; the tail past the file's end is a hole with an
unaligned host offset; with O_DIRECT a data extent ending there is rounded
up to request_alignment) - qemu-iotests 221 and 253."""
from __future__ import annotations

import pytest

import difftools

pytestmark = pytest.mark.timeout(120)

OPTIONS = r"""
qemu-img create -q -f raw a.raw 1M; qemu-io -f raw -c "w 4096 4096" a.raw >/dev/null
qemu-img map --output=json -s 512 -l 8192 a.raw; echo rc=$?
qemu-img map --output=json --start-offset=5000 a.raw
qemu-img map --output=json --start-offset=2M a.raw; echo "rc=$?"
qemu-img map --start-offset=2M a.raw; echo "rc=$?"
qemu-img map --start-offset=x a.raw; echo "rc=$?"
qemu-img map --max-length=-1 a.raw; echo "rc=$?"
qemu-img map -U --image-opts driver=raw,file.filename=a.raw
qemu-img map --format raw --output json --image-opts driver=raw,file.filename=a.raw; echo rc=$?
qemu-img map --image-opts driver=raw,file.filename=nonexist; echo rc=$?
qemu-img create -q -f raw e.raw 0; qemu-img map e.raw; qemu-img map --output=json e.raw
"""

UNALIGNED_DIRECT = r"""
qemu-img create -q -f raw u.raw 1048575
M="driver=raw,file.driver=file,file.filename=u.raw,cache.direct=on"
qemu-img map --output=json --image-opts "$M"
truncate --size=1048575 u.raw
qemu-img map --output=json --image-opts "$M"
qemu-io -c "w 983040 65535" u.raw
qemu-img map --output=json --image-opts "$M"
truncate --size=1048575 u.raw
qemu-img map --output=json --image-opts "$M"
qemu-img map --output=json u.raw
"""

UNALIGNED_PROBED = r"""
qemu-img create -q -f raw v.raw 65537; qemu-io -c 'discard 0 65537' v.raw
truncate --size=65537 v.raw; qemu-img map --output=json v.raw
qemu-io -c 'w 65536 1' v.raw; truncate --size=65537 v.raw
qemu-img map --output=json v.raw; qemu-img map v.raw; qemu-img map -f raw v.raw
qemu-io -f raw -c 'map' -c 'alloc 65536 512' -c 'alloc 0 66048' v.raw
"""


@pytest.mark.parametrize("script", [OPTIONS, UNALIGNED_DIRECT, UNALIGNED_PROBED],
                         ids=["options", "unaligned-direct", "unaligned-probed"])
def test_map_same_as_qemu_img(tmp_path, qemu_img, qemu_io, script):
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "[{" in real and ours == real
