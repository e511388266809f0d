"""qcow2 internal snapshots and their repair by qemu-img check (qemu-iotests
217, 261 and the snapshot parts of 080): gqemu's tools against the real
qemu-img/qemu-io on the same script, output and exit statuses compared
whole."""
from __future__ import annotations

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
