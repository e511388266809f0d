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


def test_cor_over_a_subcluster_run_before_the_request(tmp_path, qemu_img, qemu_io):
    """Extended L2: the allocation-status run at the start of the copied
    cluster ends before the request does (a zeroed subcluster).  QEMU 7.2
    aborts there (bdrv_co_do_copy_on_readv: Assertion 'skip_bytes < pnum');
    gqemu copies that run up and reads what a read without -C gives, which
    the real qemu-io is the reference for; the session then closes."""
    make = ("qemu-img create -q -f qcow2 -o cluster_size=65536,extended_l2=on t.qcow2 256k; "
            "qemu-io -f qcow2 %s -c 'write -z -u 338 196608' -c 'read -v 238987 493' "
            "t.qcow2; echo rc=$?; qemu-img check t.qcow2")
    real, _ = difftools.both(make % "", tmp_path / "plain", qemu_img, qemu_io, timeout=60)
    _, ours = difftools.both(make % "-C", tmp_path / "cor", qemu_img, qemu_io, timeout=60)
    assert "rc=0" in real and ours == real
