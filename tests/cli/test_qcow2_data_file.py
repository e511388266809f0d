"""qcow2 external data files (issue 11) against the real qemu-img/qemu-io.

Images made by the real qemu-img with a data file are written by gqemu-io
and read back by the real qemu-io (and the other way round); create,
info, check, map and amend of data_file / data_file_raw give QEMU's
messages, headers and results.  Every command runs once with the real
tool and once with gqemu's (in process) in twin folders."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli import qemu_img as gimg
from gqemu.cli import qemu_io as gio

pytestmark = pytest.mark.timeout(300)


def run(cmd: list, cwd: Path) -> tuple[int, str, str]:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, cwd=cwd)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def grun(tool: str, args: list, cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """gqemu-img / gqemu-io in this process, named like QEMU's tool."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [tool])
    capsys.readouterr()
    args = [str(a) for a in args]
    rc = gimg.main(args) if tool == "qemu-img" else gio.main([tool] + args)
    out, err = capsys.readouterr()
    return rc, out, err


def _strip_times(text: str) -> str:
    return "\n".join(ln for ln in text.splitlines()
                     if " ops; " not in ln and not ln.startswith("Run completed in "))


@pytest.fixture
def twin(tmp_path, qemu_img, qemu_io, monkeypatch, capsys):
    """``twin(tool, args)``: run in q/ with QEMU's tool and in g/ with
    gqemu's; assert the same exit code, stdout (timings dropped), stderr."""
    q, g = tmp_path / "q", tmp_path / "g"
    q.mkdir()
    g.mkdir()

    def both(tool: str, args: list) -> tuple[int, str, str]:
        real = qemu_img if tool == "qemu-img" else qemu_io
        want = run([real] + args, q)
        got = grun(tool, args, g, monkeypatch, capsys)
        assert (got[0], _strip_times(got[1]), got[2]) == \
            (want[0], _strip_times(want[1]), want[2]), args
        return got
    both.q, both.g = q, g           # type: ignore[attr-defined]
    return both


def test_create_same_files(twin):
    """qemu-img create -o data_file=...: the same Formatting line, the
    same qcow2 file byte for byte (incompatible bit 2, the data file name
    extension), and a data file of the image's size."""
    for opts in ("data_file=t.raw", "data_file=t.raw,data_file_raw=on",
                 "data_file=t.raw,data_file_raw=off,cluster_size=4096",
                 "data_file=t.raw,data_file_raw=on,preallocation=full"):
        twin("qemu-img", ["create", "-f", "qcow2", "-o", opts, "t.qcow2", "1M"])
        for name in ("t.qcow2", "t.raw"):
            a = (twin.q / name).read_bytes()
            b = (twin.g / name).read_bytes()
            assert a == b, (opts, name)
        assert len((twin.g / "t.raw").read_bytes()) == 1 << 20
        twin("qemu-img", ["info", "t.qcow2"])
        twin("qemu-img", ["info", "--output=json", "t.qcow2"])
        twin("qemu-img", ["map", "--output=json", "t.qcow2"])
        twin("qemu-img", ["check", "t.qcow2"])


@pytest.mark.parametrize("args", [
    ["-o", "data_file=x.raw,compat=0.10"],
    ["-o", "data_file_raw=on"],
    ["-o", "data_file=x.raw,data_file_raw=on", "-b", "base.qcow2", "-F", "qcow2"],
    ["-o", "data_file=x.raw,data_file_raw=maybe"],
])
def test_create_errors(twin, args):
    """QEMU's messages, and neither file left behind."""
    for d in (twin.q, twin.g):
        run(["qemu-img", "create", "-f", "qcow2", "base.qcow2", "1M"], d)
    twin("qemu-img", ["create", "-f", "qcow2"] + args + ["t.qcow2", "1M"])
    for d in (twin.q, twin.g):
        assert not (d / "x.raw").exists() and not (d / "t.qcow2").exists()


def _interleaved(twin, qemu_io):
    """QEMU writes, gqemu writes, both read everything back."""
    q, g = twin.q, twin.g
    w1 = ["-c", "write -P 0x11 1M 64k", "-c", "write -P 0x22 0 4k", "-c", "write -P 0x33 100k 1k"]
    w2 = ["-c", "write -P 0x44 2M 64k", "-c", "write -P 0x55 0 512", "-c", "write -z 1M 64k",
          "-c", "discard 2M 64k"]
    reads = ["-c", "read -P 0x55 0 512", "-c", "read -P 0x22 512 3584",
             "-c", "read -P 0 4k 96k", "-c", "read -P 0x33 100k 1k",
             "-c", "read -P 0 1M 64k", "-c", "read -P 0 2M 64k"]
    return w1, w2, reads


def test_data_written_by_one_reads_in_the_other(twin, qemu_io, monkeypatch, capsys):
    """Both directions: the guest data sits in the data file at the guest
    offset, with no refcounts in the qcow2 file; check is clean."""
    twin("qemu-img", ["create", "-f", "qcow2", "-o", "data_file=t.raw", "t.qcow2", "4M"])
    w1, w2, reads = _interleaved(twin, qemu_io)
    g = twin.g
    # gqemu writes first on g/, QEMU second; QEMU first on q/, gqemu second
    assert grun("qemu-io", w1 + ["t.qcow2"], g, monkeypatch, capsys)[0] == 0
    assert run([qemu_io] + w2 + ["t.qcow2"], g)[0] == 0
    assert run([qemu_io] + w1 + ["t.qcow2"], twin.q)[0] == 0
    assert grun("qemu-io", w2 + ["t.qcow2"], twin.q, monkeypatch, capsys)[0] == 0
    for d in (g, twin.q):
        rc, out, err = run([qemu_io] + reads + ["t.qcow2"], d)
        assert rc == 0 and "failed" not in out + err, out + err
        rc, out, err = grun("qemu-io", reads + ["t.qcow2"], d, monkeypatch, capsys)
        assert rc == 0 and "failed" not in out + err, out + err
        raw = (d / "t.raw").read_bytes()
        assert raw[0:512] == b"\x55" * 512 and raw[100 << 10:101 << 10] == b"\x33" * 1024
        rc, out, _ = run(["qemu-img", "check", "t.qcow2"], d)
        assert rc == 0 and "No errors were found" in out
    # the same metadata either way
    assert run(["qemu-img", "map", "--output=json", "t.qcow2"], g)[1] == \
        run(["qemu-img", "map", "--output=json", "t.qcow2"], twin.q)[1]
    twin("qemu-img", ["check", "t.qcow2"])
    twin("qemu-img", ["map", "--output=json", "t.qcow2"])


def test_raw_data_file_zero_write_goes_through(twin, qemu_io):
    """data_file_raw: every cluster mapped at its own offset, and a zero
    write clears the raw file too (it stays the guest's view)."""
    twin("qemu-img", ["create", "-f", "qcow2", "-o", "data_file=t.raw,data_file_raw=on",
                      "t.qcow2", "1M"])
    for d in (twin.q, twin.g):
        run([qemu_io, "-c", "write -P 0x66 0 256k", "t.qcow2"], d)
    twin("qemu-io", ["-c", "write -z 64k 128k", "t.qcow2"])
    for d in (twin.q, twin.g):
        raw = (d / "t.raw").read_bytes()
        assert raw[:64 << 10] == b"\x66" * (64 << 10)
        assert raw[64 << 10:192 << 10] == bytes(128 << 10)
        assert raw[192 << 10:256 << 10] == b"\x66" * (64 << 10)
    twin("qemu-img", ["map", "--output=json", "t.qcow2"])
    twin("qemu-img", ["check", "t.qcow2"])


def test_open_options_and_amend(twin):
    """iotest 061's data file steps: amend of data_file (a new name, then
    none) and data_file_raw, opening with data-file.filename, info that
    names the data file without opening it, and the downgrade refusal."""
    d = "t.qcow2.data"
    twin("qemu-img", ["create", "-f", "qcow2", "-o", "data_file=" + d, "t.qcow2", "64M"])
    twin("qemu-img", ["amend", "-o", "compat=0.10", "t.qcow2"])
    twin("qemu-io", ["-c", "write -P 0x77 0 4k", "t.qcow2"])
    twin("qemu-img", ["amend", "-o", "data_file=foo", "t.qcow2"])
    twin("qemu-io", ["-c", "read 0 4k", "t.qcow2"])           # Could not open 'foo'
    spec = "data-file.filename=%s,file.filename=t.qcow2" % d
    twin("qemu-io", ["-c", "open -o " + spec, "-c", "read -P 0x77 0 4k"])
    twin("qemu-img", ["info", "--image-opts", spec])
    twin("qemu-img", ["info", "t.qcow2"])                     # foo is never opened
    twin("qemu-img", ["amend", "-o", "data_file=", "--image-opts", spec])
    twin("qemu-io", ["-c", "read 0 4k", "t.qcow2"])           # 'data-file' is required
    twin("qemu-img", ["info", "--output=json", "--image-opts", spec])
    twin("qemu-img", ["check", "--image-opts", spec])
    twin("qemu-img", ["create", "-f", "qcow2", "-o", "data_file=%s,data_file_raw=on" % d,
                      "t.qcow2", "64M"])
    for v in ("on", "off", "on"):
        twin("qemu-img", ["amend", "-o", "data_file_raw=" + v, "t.qcow2"])
        twin("qemu-img", ["info", "t.qcow2"])
    twin("qemu-img", ["create", "-f", "qcow2", "t.qcow2", "64M"])
    twin("qemu-img", ["amend", "-o", "data_file=foo", "t.qcow2"])
    twin("qemu-io", ["-c", "open -o data-file.filename=%s,file.filename=t.qcow2" % d])


def test_data_file_is_not_probed(twin, qemu_io):
    """A data file that holds a qcow2 header is still the guest's raw data
    (opened as a protocol node, never probed)."""
    twin("qemu-img", ["create", "-f", "qcow2", "-o", "data_file=t.raw", "t.qcow2", "1M"])
    for d in (twin.q, twin.g):
        run(["qemu-img", "create", "-f", "qcow2", "inner.qcow2", "1M"], d)
        shutil.copy(d / "inner.qcow2", d / "t.raw")
        run([qemu_io, "-c", "write -P 0x5 0 64k", "t.qcow2"], d)
    twin("qemu-io", ["-c", "read -P 0x5 0 64k", "t.qcow2"])
    twin("qemu-img", ["compare", "t.qcow2", "t.raw"])


def test_large_write_one_allocation_per_request(tmp_path, qemu_img, monkeypatch, capsys):
    """iotest 270: a write longer than 2 GiB over 2 MiB clusters with a
    backing file: each allocation (head COW merged with the data) stays
    within BDRV_REQUEST_MAX_BYTES, so the write succeeds (a null-co data
    file takes the bytes).  The real qemu-img checks the result."""
    run([qemu_img, "create", "-f", "qcow2", "b.qcow2", "4G"], tmp_path)
    run([qemu_img, "create", "-f", "qcow2", "-o", "cluster_size=2M,data_file=t.orig",
         "-b", "b.qcow2", "-F", "qcow2", "t.qcow2", "4G"], tmp_path)
    spec = json.dumps({"driver": "qcow2", "file": {"filename": "t.qcow2"},
                       "data-file": {"driver": "null-co", "size": "4294967296"}})
    rc, out, err = grun("qemu-io", ["-c", "write 768 %d" % (2 ** 31 - 512), "json:" + spec],
                        tmp_path, monkeypatch, capsys)
    assert rc == 0 and "wrote 2147483136/2147483136 bytes at offset 768" in out, out + err
    rc, out, _ = run([qemu_img, "check", "t.qcow2"], tmp_path)
    assert rc == 0 and "No errors were found" in out
    rc, out, _ = run([qemu_img, "map", "--output=json", "t.qcow2"], tmp_path)
    got = json.loads(out)
    assert got[0]["start"] == 0 and got[0]["data"] and got[0]["length"] >= 2 ** 31


def test_failed_data_write_frees_nothing(tmp_path, qemu_img, monkeypatch, capsys):
    """iotest 289: an I/O error writing the data file aborts the allocation
    without "freeing" the data file's clusters in the qcow2 refcounts."""
    run([qemu_img, "create", "-f", "qcow2", "-o", "data_file=t.data", "t.qcow2", "64k"], tmp_path)
    (tmp_path / "bd.conf").write_text('[inject-error]\nevent = "write_aio"\nerrno = "5"\n'
                                      'once = "on"\n')
    spec = json.dumps({"driver": "qcow2", "file": {"driver": "file", "filename": "t.qcow2"},
                       "data-file": {"driver": "raw", "file": {
                           "driver": "blkdebug", "config": "bd.conf",
                           "image": {"driver": "file", "filename": "t.data"}}}})
    rc, out, err = grun("qemu-io", ["-c", "write 0 64k", "json:" + spec], tmp_path,
                        monkeypatch, capsys)
    assert "write failed: Input/output error" in out + err
    rc, out, err = run([qemu_img, "check", "t.qcow2"], tmp_path)
    assert rc == 0 and "No errors were found" in out, out + err


def test_downgrade_expands_zero_clusters_in_every_slice(twin, qemu_io):
    """iotest 061: with 4 KiB L2 cache entries the zero clusters of the
    second slice are expanded too (the v2 image reads them as zero)."""
    twin("qemu-img", ["create", "-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on",
                      "t.qcow2", "64M"])
    for d in (twin.q, twin.g):
        run([qemu_io, "-c", "write -z 0 128k", "-c", "write -z 32M 128k", "t.qcow2"], d)
    twin("qemu-img", ["amend", "-o", "compat=0.10", "--image-opts",
                      "driver=qcow2,file.filename=t.qcow2,l2-cache-entry-size=4096"])
    assert (twin.q / "t.qcow2").read_bytes() == (twin.g / "t.qcow2").read_bytes()
    twin("qemu-io", ["-c", "read -P 0 32M 128k", "-c", "map", "t.qcow2"])


def test_resize_follows_and_snapshots_refused(twin):
    """Without preallocation a resize takes the data file to the image's new
    size, growing and shrinking (qcow2_co_truncate's PREALLOC_MODE_OFF);
    an internal snapshot of a data-file image is refused with ENOTSUP."""
    twin("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "data_file=d.raw", "t.qcow2", "1M"])
    twin("qemu-io", ["-c", "write -P 0x5a 0 768k", "t.qcow2"])
    for args in (["resize", "t.qcow2", "2M"], ["resize", "--shrink", "t.qcow2", "512k"]):
        twin("qemu-img", args)
        assert (twin.g / "d.raw").stat().st_size == (twin.q / "d.raw").stat().st_size
    twin("qemu-io", ["-c", "read -P 0x5a 0 512k", "t.qcow2"])
    twin("qemu-img", ["check", "t.qcow2"])
    twin("qemu-img", ["snapshot", "-c", "s1", "t.qcow2"])
    twin("qemu-img", ["snapshot", "-l", "t.qcow2"])
