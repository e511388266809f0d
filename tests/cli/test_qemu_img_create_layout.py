"""``gqemu-img create -f qcow2`` writes the very file ``qemu-img create``
(7.2) writes: byte for byte, over sizes, cluster sizes, refcount widths,
extended L2, compat levels, lazy refcounts, backing files and the four
preallocation modes (QEMU builds a three-cluster image and grows it with
the driver's own truncate; the L1 table, L2 tables, data and any new
refcount structures land where its allocator puts them)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(300)


def _create_both(qemu_img, monkeypatch, capsys, tmp_path, size: str, opts: str,
                 extra: tuple = ()) -> tuple[bytes, bytes]:
    want, got = tmp_path / "want.qcow2", tmp_path / "got.qcow2"
    for p in (want, got):
        if p.exists():
            p.unlink()
    args = ["create", "-f", "qcow2"] + list(extra) + (["-o", opts] if opts else [])
    p = subprocess.run([qemu_img] + args + [str(want), size], capture_output=True, text=True)
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    rc = gimg.main(args + [str(got), size])
    out = capsys.readouterr()
    assert (rc, out.err) == (p.returncode, p.stderr.replace(str(want), str(got))), (size, opts)
    assert out.out == p.stdout.replace(str(want), str(got))
    return want.read_bytes(), got.read_bytes()


def _assert_same_file(want: bytes, got: bytes, what) -> None:
    assert len(got) == len(want), what
    if got != want:
        i = next(i for i in range(len(want)) if want[i] != got[i])
        pytest.fail("%s: first difference at byte %#x" % (what, i))


CASES = [
    ("64M", ""), ("0", ""), ("512", ""), ("1M", "cluster_size=512"),
    ("1G", "cluster_size=512"), ("1G", "cluster_size=512,refcount_bits=64"),
    ("100G", "cluster_size=4096,refcount_bits=1"), ("1T", ""), ("1T", "cluster_size=2M"),
    ("64M", "cluster_size=4096"), ("64M", "cluster_size=8192"),
    ("64M", "compat=0.10"), ("64M", "lazy_refcounts=on"),
    ("64M", "extended_l2=on"), ("1G", "extended_l2=on,cluster_size=16k,refcount_bits=8"),
    ("1536k", "cluster_size=2M,preallocation=metadata"),
    ("64M", "preallocation=metadata"), ("4M", "cluster_size=512,preallocation=metadata"),
    ("100M", "extended_l2=on,preallocation=metadata"),
    ("8M", "cluster_size=512,refcount_bits=64,preallocation=metadata"),
    ("0", "preallocation=falloc"), ("512", "preallocation=falloc"),
    ("1536k", "cluster_size=4096,preallocation=falloc"),
    ("8M", "cluster_size=512,refcount_bits=64,preallocation=falloc"),
    ("4M", "cluster_size=2M,preallocation=full"), ("3M", "cluster_size=512,preallocation=full"),
    ("16M", "extended_l2=on,cluster_size=16k,preallocation=falloc"),
]


@pytest.mark.parametrize("size,opts", CASES)
def test_create_qcow2_file_is_qemus(qemu_img, monkeypatch, capsys, tmp_path, size, opts):
    """Fails on the old layout: a 64M image was 262144 bytes, QEMU's 196616."""
    want, got = _create_both(qemu_img, monkeypatch, capsys, tmp_path, size, opts)
    _assert_same_file(want, got, (size, opts))


def test_create_qcow2_with_backing_file_is_qemus(qemu_img, monkeypatch, capsys, tmp_path):
    base = tmp_path / "base.raw"
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(base), "4M"], check=True)
    for opts in ["", "cluster_size=4096", "extended_l2=on,preallocation=metadata",
                 "compat=0.10"]:
        want, got = _create_both(qemu_img, monkeypatch, capsys, tmp_path, "8M", opts,
                                 ("-b", str(base), "-F", "raw"))
        _assert_same_file(want, got, opts)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 1 << 26).map(lambda n: n // 512 * 512 if n % 3 else n),
       cluster_bits=st.integers(9, 21), refcount_order=st.integers(0, 6),
       extended_l2=st.booleans(),
       prealloc=st.sampled_from(["off", "off", "metadata", "falloc", "full"]))
def test_create_qcow2_layout_property(qemu_img, monkeypatch, capsys, tmp_path, size,
                                      cluster_bits, refcount_order, extended_l2, prealloc):
    if extended_l2 and cluster_bits < 14:
        cluster_bits = 14
    if prealloc != "off":
        size = min(size, 4 << 20 if cluster_bits < 12 else 16 << 20)
    opts = "cluster_size=%d,refcount_bits=%d,extended_l2=%s,preallocation=%s" % (
        1 << cluster_bits, 1 << refcount_order, "on" if extended_l2 else "off", prealloc)
    want, got = _create_both(qemu_img, monkeypatch, capsys, tmp_path, str(size), opts)
    _assert_same_file(want, got, opts)
