"""Copy-on-read of the partial cluster at the end of an unaligned qcow2
image (qemu-iotests 197, "Partial final cluster"): gqemu-io against the
real qemu-io on the same script.  It used to loop for ever zeroing a
cluster of length 0."""
from __future__ import annotations

import pytest

import difftools

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("size", ["1024", "65537", "200k"])
def test_cor_of_partial_final_cluster(tmp_path, qemu_img, qemu_io, size):
    script = ("qemu-img create -q -f qcow2 -o compat=1.1 t.qcow2 %s; "
              "qemu-io -f qcow2 -C -c 'read 0 %s' t.qcow2; "
              "qemu-io -f qcow2 -c map t.qcow2; qemu-img check t.qcow2" % (size, size))
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io, timeout=60)
    assert "read " in real and ours == real
