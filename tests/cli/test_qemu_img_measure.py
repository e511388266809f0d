"""``gqemu-img measure`` against the real ``qemu-img measure`` (7.2): the
same stdout, stderr and exit status for new images of many sizes and
create options, for source images with random allocation (data, zero
clusters, unallocated holes; raw and qcow2, v2 and v3, snapshots), and
for every option error.  gqemu runs in-process, named qemu-img."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(300)


def _gqemu_img(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    rc = gimg.main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _qemu_img(qemu_img: str, args: list[str], cwd=None) -> tuple[int, str, str]:
    p = subprocess.run([qemu_img] + args, capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def _same(qemu_img, monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    want = _qemu_img(qemu_img, args)
    got = _gqemu_img(monkeypatch, capsys, args)
    assert got == want, args
    return got


def test_measure_64m_is_qemus_numbers(qemu_img, monkeypatch, capsys):
    """The plain case, whose numbers the iotests print (fails on a
    gqemu-img without ``measure``: "Command not found")."""
    rc, out, _ = _same(qemu_img, monkeypatch, capsys, ["measure", "-O", "qcow2", "--size", "64M"])
    assert rc == 0 and out.startswith("required size: ")


ERROR_CASES = [
    [], ["--size", "1G", "x"], ["--size", "1G", "a", "b"], ["-f", "qcow2", "--size", "1G"],
    ["-l", "s", "--size", "1G"], ["--image-opts", "--size", "1G"], ["--output=xml", "--size", "1"],
    ["--size", "1kk"], ["--size", "-1"], ["--size", "9E"], ["--size", "8E"],
    ["-O", "foo", "--size", "1G"], ["-O", "vmdk", "--size", "1G"],
    ["-O", "raw", "--size", "1G", "-o", "cluster_size=4k"],
    ["-O", "raw", "--size", "1023"], ["-O", "raw", "--size", "9223372036854775807"],
    ["-O", "raw", "--size", "9223372036854775807", "--output=json"],
    ["-O", "raw", "--size", "1G", "-o", "preallocation=foo,nocow=on,extent_size_hint=1M"],
    ["-O", "qcow2", "--size", "1G", "-o", "foo=bar"],
    ["-O", "qcow2", "--size", "1G", "-o", "help"],
    ["-O", "qcow2", "--size", "1G", "-o", "cluster_size=1x"],
    ["-O", "qcow2", "--size", "1G", "-o", "cluster_size=,refcount_bits="],
    ["-O", "qcow2", "--size", "1G", "-o", "cluster_size=1000"],
    ["-O", "qcow2", "--size", "1G", "-o", "cluster_size=1.5k"],
    ["-O", "qcow2", "--size", "1G", "-o", "cluster_size=0"],
    ["-O", "qcow2", "--size", "1G", "-o", "cluster_size=4G"],
    ["-O", "qcow2", "--size", "1G", "-o", "cluster_size=256,compat=0.42"],
    ["-O", "qcow2", "--size", "1G", "-o", "extended_l2=on,cluster_size=8k,compat=0.42"],
    ["-O", "qcow2", "--size", "1G", "-o", "extended_l2=maybe"],
    ["-O", "qcow2", "--size", "1G", "-o", "extended_l2=yes"],
    ["-O", "qcow2", "--size", "1G", "-o", "compat=0.10,extended_l2=on"],
    ["-O", "qcow2", "--size", "1G", "-o", "refcount_bits=3,compat=0.42"],
    ["-O", "qcow2", "--size", "1G", "-o", "refcount_bits=3,compat=0.10"],
    ["-O", "qcow2", "--size", "1G", "-o", "refcount_bits=x"],
    ["-O", "qcow2", "--size", "1G", "-o", "refcount_bits=-1"],
    ["-O", "qcow2", "--size", "1G", "-o", "refcount_bits=128"],
    ["-O", "qcow2", "--size", "1G", "-o", "refcount_bits=0x10"],
    ["-O", "qcow2", "--size", "1G", "-o", "compat=0.10,refcount_bits=8"],
    ["-O", "qcow2", "--size", "1G", "-o", "compat=v3"], ["-O", "qcow2", "--size", "1", "-o", "compat="],
    ["-O", "qcow2", "--size", "1G", "-o", "refcount_bits=3,preallocation=x"],
    ["-O", "qcow2", "--size", "1G", "-o", "preallocation=x"],
    ["-O", "qcow2", "--size", "64M", "-o", "preallocation=off,preallocation=full"],
    ["-O", "qcow2", "--size", "64M", "-o", "preallocation=full", "-o", "preallocation=off"],
    ["-O", "qcow2", "--size", "1G", "-o", "size=2G"], ["-O", "qcow2", "-o", "size=2G"],
    ["-O", "qcow2", "-o", "size=2G", "--size", "0"],
    ["-O", "qcow2", "--size", "1G", "-o", "backing_file=foo,lazy_refcounts=on,data_file=x"],
    ["-O", "qcow2", "--size", "1G", "-o", "encryption=on,compression_type=zstd"],
    ["-O", "qcow2", "--size", "9223372036854775807"],
    ["-O", "qcow2", "--size", "1P", "-o", "cluster_size=512"],
    ["-O", "qcow2", "--size", "1E", "-o", "cluster_size=2M,refcount_bits=1"],
    ["-O", "qcow2", "--size", "4T", "-o", "cluster_size=4k,extended_l2=on"],
    ["-O", "qcow2", "--size", "1T", "--output=json", "-o", "preallocation=metadata"],
    ["-O", "qcow2", "nonexistent.img"],
]


@pytest.mark.parametrize("args", ERROR_CASES, ids=lambda a: " ".join(a) or "none")
def test_measure_arguments_same_as_qemu_img(qemu_img, monkeypatch, capsys, args):
    _same(qemu_img, monkeypatch, capsys, ["measure"] + args)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.one_of(st.integers(0, 1 << 20), st.integers(0, 1 << 44),
                      st.sampled_from([0, 512, 65536, 1 << 30, (1 << 30) + 512, 1 << 40])),
       cluster_bits=st.integers(9, 21), refcount_order=st.integers(0, 6),
       extended_l2=st.booleans(), compat=st.sampled_from([None, "0.10", "1.1"]),
       prealloc=st.sampled_from([None, "off", "metadata", "falloc", "full"]),
       out_fmt=st.sampled_from(["qcow2", "qcow2", "raw"]), json_out=st.booleans())
def test_measure_new_image_same_as_qemu_img(qemu_img, monkeypatch, capsys, size, cluster_bits,
                                            refcount_order, extended_l2, compat, prealloc,
                                            out_fmt, json_out):
    args = ["measure", "-O", out_fmt, "--size", str(size)]
    if json_out:
        args.append("--output=json")
    if out_fmt == "qcow2":
        o = ["cluster_size=%d" % (1 << cluster_bits), "refcount_bits=%d" % (1 << refcount_order),
             "extended_l2=%s" % ("on" if extended_l2 else "off")]
        if compat:
            o.append("compat=" + compat)
        if prealloc:
            o.append("preallocation=" + prealloc)
        args += ["-o", ",".join(o)]
    _same(qemu_img, monkeypatch, capsys, args)


WRITES = st.lists(st.tuples(st.sampled_from(["write", "write -z", "write -zu", "discard"]),
                            st.integers(0, 63), st.integers(1, 16)), max_size=8)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(src_fmt=st.sampled_from(["qcow2", "qcow2", "raw"]), compat=st.sampled_from(["0.10", "1.1"]),
       src_cluster=st.sampled_from([512, 4096, 65536]), size_k=st.integers(1, 4096),
       writes=WRITES, dst_cluster=st.sampled_from([512, 4096, 65536, 2 << 20]),
       backing=st.booleans(), snapshot=st.booleans(), json_out=st.booleans())
def test_measure_source_image_same_as_qemu_img(qemu_img, qemu_io, monkeypatch, capsys, tmp_path,
                                               src_fmt, compat, src_cluster, size_k, writes,
                                               dst_cluster, backing, snapshot, json_out):
    """A source made and written by QEMU's own tools (4 KiB units; ``write
    -z`` makes zero clusters in a v3 qcow2)."""
    img = str(tmp_path / ("src.%s" % src_fmt))
    size = size_k * 1024
    create = [qemu_img, "create", "-q", "-f", src_fmt, img, str(size)]
    if src_fmt == "qcow2":
        create[5:5] = ["-o", "compat=%s,cluster_size=%d" % (compat, src_cluster)]
    subprocess.run(create, check=True)
    cmds = []
    for op, unit, n in writes:
        off, ln = unit * 4096 % size, n * 4096
        ln = min(ln, size - off) // 512 * 512
        if ln > 0:
            cmds += ["-c", "%s %d %d" % (op, off, ln)]
    if snapshot and src_fmt == "qcow2":
        subprocess.run([qemu_img, "snapshot", "-c", "s1", img], check=True)
        cmds += ["-c", "write 0 512"]
    if cmds:
        subprocess.run([qemu_io, "-f", src_fmt] + cmds + [img], check=True,
                       stdout=subprocess.DEVNULL)
    args = ["measure", "-O", "qcow2", "-f", src_fmt, "-o", "cluster_size=%d" % dst_cluster]
    if backing:
        args[-1] += ",backing_file=b.img"
    if snapshot and src_fmt == "qcow2":
        args += ["-l", "s1"]
    if json_out:
        args.append("--output=json")
    _same(qemu_img, monkeypatch, capsys, args + [img])
    _same(qemu_img, monkeypatch, capsys, ["measure", "-O", "raw", img])


def test_measure_snapshot_param_same_as_qemu_img(qemu_img, qemu_io, monkeypatch, capsys,
                                                 tmp_path):
    """``-l snapshot.id=/snapshot.name=``, a missing snapshot, a raw source."""
    img, raw = str(tmp_path / "s.qcow2"), str(tmp_path / "s.raw")
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", img, "8M"], check=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", raw, "8M"], check=True)
    subprocess.run([qemu_io, "-c", "write 1M 3M", img], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([qemu_img, "snapshot", "-c", "snap", img], check=True)
    subprocess.run([qemu_io, "-c", "write 0 64k", img], check=True, stdout=subprocess.DEVNULL)
    for sn in ["snap", "1", "snapshot.id=1", "snapshot.name=snap", "snapshot.id=1,snapshot.name=x",
               "nope", "snapshot.foo=1", "snapshot.name"]:
        _same(qemu_img, monkeypatch, capsys, ["measure", "-O", "qcow2", "-l", sn, img])
    _same(qemu_img, monkeypatch, capsys, ["measure", "-O", "qcow2", "-f", "raw", "-l", "x", raw])
