"""``gqemu-img create`` prints what ``qemu-img create`` (7.2) prints --
the ``Formatting ...`` line and the error after it, or the error alone
when the option list itself is bad -- and exits the same (iotests 049,
054).  Both run in the same directory with the same relative name."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(120)

CASES = [
    ["-o", "compat=0.42", "t.q", "64M"], ["-o", "compat=foobar", "t.q", "64M"],
    ["-o", "compat=v2", "t.q", "64M"], ["-o", "compat=v3", "t.q", "64M"],
    ["-o", "preallocation=1234", "t.q", "64M"],
    ["-o", "preallocation=1234,compat=0.42", "t.q", "64M"],
    ["-o", "encryption=off", "t.q", "64M"],
    ["-o", "encryption=off,cluster_size=4k,compat=1.1", "t.q", "64M"],
    ["-b", "", "t.q", "1M"], ["-b", "", "-F", "raw", "t.q", "1M"],
    ["t.q", "1E"], ["-o", "cluster_size=512", "t.q", "1T"], ["t.q", "8E"],
    ["-o", "compat=0.42,refcount_bits=3", "t.q", "64M"],
    ["-o", "refcount_bits=3,cluster_size=1000", "t.q", "64M"],
    ["-o", "compat=0.10,lazy_refcounts=on,refcount_bits=8", "t.q", "64M"],
    ["-o", "compat=0.10,refcount_bits=8", "t.q", "64M"],
    ["-o", "extended_l2=on,cluster_size=4k,compat=0.10", "t.q", "64M"],
    ["-o", "extended_l2=on,cluster_size=4k", "t.q", "64M"],
    ["-o", "compat=v3,extended_l2=on,cluster_size=4k,preallocation=foo", "t.q", "64M"],
    ["-o", "compression_type=foo", "t.q", "64M"],
    ["-o", "backing_fmt=raw", "t.q", "64M"],
    ["-o", "cluster_size=256", "t.q", "64M"], ["-o", "cluster_size=4M", "t.q", "64M"],
    ["-o", "refcount_bits=128", "t.q", "64M"], ["-o", "refcount_bits=0", "t.q", "64M"],
    ["-o", "lazy_refcounts=maybe", "t.q", "64M"], ["-o", "foo=bar", "t.q", "64M"],
    ["-o", "preallocation=metadata,backing_file=t.b,backing_fmt=raw", "t.q", "1M"],
    ["-o", "encryption=on", "t.q", "64M"],
    ["-o", "encryption=on,encrypt.key-secret=sec0", "t.q", "64M"],
    ["--object", "secret,id=sec0,data=123456", "-o", "encryption=on,encrypt.key-secret=sec1",
     "t.q", "64M"],
]


def test_create_aes_encrypted_is_qemus(qemu_img, monkeypatch, capsys, tmp_path):
    """iotest 049's ``encryption=on``: the file is QEMU's, byte for byte."""
    monkeypatch.chdir(tmp_path)
    args = ["create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data=123456", "-o",
            "encryption=on,encrypt.key-secret=sec0"]
    subprocess.run([qemu_img] + args + ["want.q", "64M"], check=True)
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    assert gimg.main(args + ["got.q", "64M"]) == 0
    assert (tmp_path / "got.q").read_bytes() == (tmp_path / "want.q").read_bytes()


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a))
def test_create_messages_same_as_qemu_img(qemu_img, monkeypatch, capsys, tmp_path, args):
    monkeypatch.chdir(tmp_path)
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", "t.b", "1M"], check=True)
    args = ["create", "-f", "qcow2"] + args
    p = subprocess.run([qemu_img] + args, capture_output=True, text=True)
    want = (p.returncode, p.stdout, p.stderr, os.path.exists("t.q"))
    if os.path.exists("t.q"):
        os.unlink("t.q")
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    rc = gimg.main(args)
    out = capsys.readouterr()
    assert (rc, out.out, out.err, os.path.exists("t.q")) == want
