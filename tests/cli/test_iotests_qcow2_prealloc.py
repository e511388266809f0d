"""qcow2 preallocation at create and the file protocol's extent_size_hint
option (qemu-iotests 243, its part without data files): gqemu-img against
the real qemu-img on the same script, compared whole."""
from __future__ import annotations

import pytest

import difftools

pytestmark = pytest.mark.timeout(120)


def test_create_preallocation_sizes(tmp_path, qemu_img, qemu_io):
    """Each mode's file size, and whether the host allocated the whole
    disk; extent_size_hint (a file-posix create option) is accepted by
    qcow2 create and shown last on the Formatting line."""
    script = r"""
for mode in off metadata falloc full; do
    rm -f t.qcow2
    qemu-img create -f qcow2 -o "preallocation=$mode,extent_size_hint=0" t.qcow2 64M
    echo "size $(du -b t.qcow2 | cut -f1)"
    [ $(du -B1 t.qcow2 | cut -f1) -lt 1048576 ] && echo low || echo high
done
qemu-img create -f qcow2 -o extent_size_hint=1M,compat=1.1 t.qcow2 1M; echo "rc=$?"
qemu-img create -f qcow2 -o extent_size_hint=abc t.qcow2 1M; echo "rc=$?"
qemu-img create -f qcow2 -o extent_size_hint=5G t.qcow2 1M; echo "rc=$?"; ls t.qcow2
"""
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "extent_size_hint=0" in real and "high" in real and ours == real
