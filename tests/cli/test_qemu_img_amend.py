"""gqemu-img amend against the real qemu-img amend (issue 11).

Each image is made once with QEMU's own tools and copied; the real
qemu-img amends one copy, gqemu-img (in process) the other.  Then: the
same messages and exit code, the same ``qemu-img info --output=json``, a
clean real ``qemu-img check`` of gqemu's result, the data read back by the
real qemu-io, and (where both walk the same allocations) the same bytes in
the file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(300)


def run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    """Output decoded without newline translation: progress lines end in CR."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, cwd=cwd)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(),
                                       p.stderr.decode())


def ok(*cmd, cwd=None) -> str:
    p = run(*cmd, cwd=cwd)
    assert p.returncode == 0, "%s: %s%s" % (cmd, p.stdout, p.stderr)
    return p.stdout


def gqemu_img(args: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """gqemu-img in this process, named qemu-img, in ``cwd``."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    capsys.readouterr()
    rc = gimg.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def both(tmp_path: Path, setup, args: list[str], monkeypatch, capsys) -> tuple[Path, Path]:
    """Make the image in q/ with ``setup(dir)``, copy it to g/, amend both
    with ``args``; assert the same stdout, stderr and exit code."""
    q, g = tmp_path / "q", tmp_path / "g"
    q.mkdir()
    setup(q)
    shutil.copytree(q, g)
    want = run("qemu-img", *args, cwd=q)
    rc, out, err = gqemu_img(args, g, monkeypatch, capsys)
    assert (rc, out, err) == (want.returncode, want.stdout, want.stderr), args
    return q, g


def info(d: Path, name: str = "t.qcow2") -> dict:
    doc = json.loads(ok("qemu-img", "info", "--output=json", name, cwd=d))
    doc.pop("actual-size", None)            # st_blocks: how the file system allocated
    return doc


def assert_same_image(q: Path, g: Path, name: str = "t.qcow2", same_bytes: bool = True) -> None:
    assert info(g, name) == info(q, name)
    check = run("qemu-img", "check", name, cwd=g)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No errors were found on the image." in check.stdout
    if same_bytes:
        assert (q / name).read_bytes() == (g / name).read_bytes()


def create(d: Path, *opts: str, size: str = "64M", name: str = "t.qcow2") -> None:
    ok("qemu-img", "create", "-q", "-f", "qcow2", *opts, name, size, cwd=d)


def qio(d: Path, *cmds: str, name: str = "t.qcow2") -> str:
    args: list[str] = []
    for c in cmds:
        args += ["-c", c]
    return ok("qemu-io", *args, name, cwd=d)


# ------------------------------------------------------------ messages


ERROR_CASES = [
    ["amend", "t.qcow2"],
    ["amend", "-o", "help", "t.qcow2"],
    ["amend", "-o", "?", "t.qcow2"],
    ["amend", "-o", "help"],
    ["amend", "-f", "qcow2", "-o", "help"],
    ["amend", "-f", "qcow2", "-o", "cluster_size=4k,help", "nonexistent"],
    ["amend", "-f", "raw", "-o", "help"],
    ["amend", "-f", "bochs", "-o", "help"],
    ["amend", "-f", "foo", "-o", "help"],
    ["amend", "-f", "raw", "-o", "compat=1.1", "t.qcow2"],
    ["amend", "-o", "compat=1.1", "disk.raw"],
    ["amend", "-o", "compat=1.1", "nonexistent"],
    ["amend", "-o", "foo=bar", "t.qcow2"],
    ["amend", "-o", "foo", "t.qcow2"],
    ["amend", "-o", "=x", "t.qcow2"],
    ["amend", "-o", "cluster_size=4k", "t.qcow2"],
    ["amend", "-o", "cluster_size=xyz", "t.qcow2"],
    ["amend", "-o", "cluster_size=4k,foo=bar", "t.qcow2"],
    ["amend", "-o", "encryption=on", "t.qcow2"],
    ["amend", "-o", "encrypt.format=luks", "t.qcow2"],
    ["amend", "-o", "encrypt.keyslot=1", "t.qcow2"],
    ["amend", "-o", "encrypt.keyslot=x", "t.qcow2"],
    ["amend", "-o", "extended_l2=on", "t.qcow2"],
    ["amend", "-o", "preallocation=metadata", "t.qcow2"],
    ["amend", "-o", "compat=0.42", "t.qcow2"],
    ["amend", "-o", "compat=", "t.qcow2"],
    ["amend", "-o", "refcount_bits=3,compat=0.42", "t.qcow2"],
    ["amend", "-o", "lazy_refcounts=maybe", "t.qcow2"],
    ["amend", "-o", "refcount_bits=3", "t.qcow2"],
    ["amend", "-o", "refcount_bits=128", "t.qcow2"],
    ["amend", "-o", "refcount_bits=-16", "t.qcow2"],
    ["amend", "-o", "refcount_bits=16k", "t.qcow2"],
    ["amend", "-o", "refcount_bits=x", "t.qcow2"],
    ["amend", "-o", "size=foo", "t.qcow2"],
    ["amend", "-o", "size=-1", "t.qcow2"],
    ["amend", "-o", "size=0x20000k", "t.qcow2"],
    ["amend", "-o", "size=0x20000k,foo=1", "t.qcow2"],
    ["amend", "-o", "data_file=foo", "t.qcow2"],
    ["amend", "-o", "data_file_raw=on", "t.qcow2"],
    ["amend", "-o", "data_file_raw=x", "t.qcow2"],
    ["amend", "-o", "backing_file=x", "t.qcow2"],
    ["amend", "-o", "backing_fmt=raw", "t.qcow2"],
    ["amend", "-o", "compat=0.10", "t.qcow2", "b", "c"],
    ["amend", "-t", "foo", "-o", "compat=0.10", "t.qcow2"],
    ["amend", "-o", "help", "-t", "foo", "t.qcow2"],
    ["amend", "-o", "a,", "t.qcow2"],
    ["amend", "-o", ",help", "t.qcow2"],
    ["amend", "-o", "backing_file=x,,help", "t.qcow2"],
    ["amend", "-x"],
    ["amend", "-o"],
]


@pytest.mark.parametrize("args", ERROR_CASES, ids=" ".join)
def test_messages_and_exit_codes(tmp_path, args, monkeypatch, capsys):
    def setup(d: Path) -> None:
        create(d)
        ok("qemu-img", "create", "-q", "-f", "raw", "disk.raw", "1M", cwd=d)
    q, g = both(tmp_path, setup, args, monkeypatch, capsys)
    assert_same_image(q, g)


# ------------------------------------------------------------ version changes


def test_downgrade_expands_zero_clusters(tmp_path, monkeypatch, capsys):
    def setup(d: Path) -> None:
        create(d, "-o", "compat=1.1,lazy_refcounts=on")
        qio(d, "write -P 0x2a 0 192k", "write -z 0 128k", "write -z 32M 128k")
    q, g = both(tmp_path, setup, ["amend", "-o", "compat=0.10", "t.qcow2"], monkeypatch, capsys)
    assert_same_image(q, g)
    assert info(g)["format-specific"]["data"]["compat"] == "0.10"
    qio(g, "read -P 0 0 128k", "read -P 0x2a 128k 64k", "read -P 0 32M 128k")


def test_downgrade_backed_and_snapshots(tmp_path, monkeypatch, capsys):
    """Plain zero clusters over a backing file become zero-filled data
    clusters, in the active and in a snapshot's (shared) L2 tables."""
    def setup(d: Path) -> None:
        create(d, name="t.base")
        qio(d, "write -P 0x2a 0 256k", name="t.base")
        create(d, "-b", "t.base", "-F", "qcow2")
        qio(d, "write -z 0 64k", "write -z 128k 64k")
        ok("qemu-img", "snapshot", "-c", "foo", "t.qcow2", cwd=d)
        qio(d, "write -P 0x42 0 64k")
    q, g = both(tmp_path, setup, ["amend", "-o", "compat=0.10", "t.qcow2"], monkeypatch, capsys)
    assert_same_image(q, g)
    qio(g, "read -P 0x42 0 64k", "read -P 0x2a 64k 64k", "read -P 0 128k 64k")
    ok("qemu-img", "snapshot", "-a", "foo", "t.qcow2", cwd=g)
    assert run("qemu-img", "check", "t.qcow2", cwd=g).returncode == 0
    qio(g, "read -P 0 0 64k", "read -P 0x2a 64k 64k", "read -P 0 128k 64k")


@pytest.mark.parametrize("setup_opts,args", [
    ("compat=1.1,extended_l2=on", "compat=0.10"),            # incompatible feature 0x10
    ("compat=1.1,refcount_bits=64", "compat=0.10"),           # refcount width
    ("compat=1.1,refcount_bits=64", "compat=0.10,refcount_bits=16"),
    ("compat=0.10", "refcount_bits=32,compat=0.10"),
    ("compat=0.10", "lazy_refcounts=on"),
    ("compat=0.10", "compat=1.1,lazy_refcounts=on,size=128M"),
    ("compat=1.1,lazy_refcounts=on", "lazy_refcounts=off"),
    ("compat=1.1", "compat=v2"),
    ("compat=1.1", "size=32M"),
    ("compat=1.1", "size=0"),
    ("compat=1.1", "size=4M,size=148M"),
    ("compat=1.1", "nolazy_refcounts,lazy_refcounts"),
    ("compat=1.1", "data_file_raw=off"),
])
def test_options(tmp_path, setup_opts, args, monkeypatch, capsys):
    def setup(d: Path) -> None:
        create(d, "-o", setup_opts)
        qio(d, "write -P 7 1M 256k")
    q, g = both(tmp_path, setup, ["amend", "-o", args, "t.qcow2"], monkeypatch, capsys)
    assert_same_image(q, g)
    qio(g, "read -P 7 1M 256k")


def test_v2_snapshots_upgrade_and_resize(tmp_path, monkeypatch, capsys):
    """A v2 image with a snapshot: resizing alone is refused, upgrading and
    resizing together works; downgrading is refused while the snapshot has
    another size."""
    def setup(d: Path) -> None:
        create(d, "-o", "compat=0.10", size="32M")
        qio(d, "write -P 0x2a 24M 64k")
        ok("qemu-img", "snapshot", "-c", "foo", "t.qcow2", cwd=d)
    for args in (["-o", "size=64M"], ["-o", "compat=1.1,size=128M"], ["-o", "compat=0.10"]):
        for side in ("q", "g"):
            shutil.rmtree(tmp_path / side, ignore_errors=True)
        q, g = both(tmp_path, setup, ["amend", *args, "t.qcow2"], monkeypatch, capsys)
        assert_same_image(q, g)


def test_dirty_image_downgrade(tmp_path, monkeypatch, capsys):
    """A dirty image (lazy refcounts, killed writer) is repaired at open,
    then downgraded.  The repair leaves stale bytes in clusters no longer
    referenced, so the files are compared by content, not byte for byte."""
    def setup(d: Path) -> None:
        create(d, "-o", "compat=1.1,lazy_refcounts=on")
        run("qemu-io", "-c", "write -P 0x2a 0 128k", "-c", "flush", "-c", "sigraise 9",
            "t.qcow2", cwd=d)
    q, g = both(tmp_path, setup, ["amend", "-o", "compat=0.10", "t.qcow2"], monkeypatch, capsys)
    assert_same_image(q, g, same_bytes=False)
    qio(g, "read -P 0x2a 0 128k")


# ------------------------------------------------------------ refcount width


@pytest.mark.parametrize("bits", ["1", "2", "4", "8", "32", "64"])
def test_refcount_bits(tmp_path, bits, monkeypatch, capsys):
    """The refcount structures are rebuilt in the new width, or (a refcount
    of 2 from the snapshot does not fit one bit) the image is left as it
    was."""
    def setup(d: Path) -> None:
        create(d, "-o", "cluster_size=4k")
        qio(d, "write -P 3 0 3M")
        ok("qemu-img", "snapshot", "-c", "foo", "t.qcow2", cwd=d)
        qio(d, "write -P 4 1M 64k")
    q, g = both(tmp_path, setup, ["amend", "-o", "refcount_bits=" + bits, "t.qcow2"],
                monkeypatch, capsys)
    assert_same_image(q, g)
    qio(g, "read -P 3 0 1M", "read -P 4 1M 64k", "read -P 3 1088k 1984k")


def test_refcount_bits_multiple_walks_progress(tmp_path, monkeypatch, capsys):
    """iotest 112's case: the first new refcount block has exactly one free
    entry, which takes its own reference; the new table then needs another
    block, so the allocating walk runs once more (the progress regresses
    from 66.67% to 50.00%, as qemu-img's)."""
    def setup(d: Path) -> None:
        create(d, "-o", "refcount_bits=1,cluster_size=512", size="64k")
        qio(d, "write 0 %d" % (58 * 512))
    q, g = both(tmp_path, setup, ["amend", "-o", "refcount_bits=64", "-p", "t.qcow2"],
                monkeypatch, capsys)
    assert_same_image(q, g)
    r = tmp_path / "r"                  # the progress itself, once more on a fresh copy
    r.mkdir()
    setup(r)
    rc, out, _ = gqemu_img(["amend", "-o", "refcount_bits=64", "-p", "t.qcow2"], r,
                           monkeypatch, capsys)
    steps = [s.strip() for s in out.split("\r")]
    assert "(66.67/100%)" in steps and "(50.00/100%)" in steps


def test_downgrade_progress(tmp_path, monkeypatch, capsys):
    """-p: qemu-img's progress lines while zero clusters are expanded in
    the active table and a snapshot's (iotest 061's case)."""
    def setup(d: Path) -> None:
        create(d, "-o", "compat=1.1", size="4G", name="t.base")
        create(d, "-o", "compat=1.1", "-b", "t.base", "-F", "qcow2", size="4G")
        qio(d, "write -z 0 64k", "write -z 1G 64k", "write -z 2G 64k", "write -z 3G 64k")
        ok("qemu-img", "snapshot", "-c", "foo", "t.qcow2", cwd=d)
    q, g = both(tmp_path, setup, ["amend", "-p", "-o", "compat=0.10", "t.qcow2"],
                monkeypatch, capsys)
    assert_same_image(q, g)


def test_upgrade_progress_and_quiet(tmp_path, monkeypatch, capsys):
    def setup(d: Path) -> None:
        create(d, "-o", "compat=0.10")
    for args in (["-p"], ["-p", "-q"], ["-q"]):
        for side in ("q", "g"):
            shutil.rmtree(tmp_path / side, ignore_errors=True)
        q, g = both(tmp_path, setup, ["amend", *args, "-o", "compat=v3", "t.qcow2"],
                    monkeypatch, capsys)
        assert_same_image(q, g)


def test_image_opts_and_cache(tmp_path, monkeypatch, capsys):
    def setup(d: Path) -> None:
        create(d)
        qio(d, "write -z 0 128k", "write -P 1 1M 64k")
    q, g = both(tmp_path, setup, ["amend", "-t", "none", "-o", "compat=0.10", "--image-opts",
                                  "driver=qcow2,file.filename=t.qcow2"], monkeypatch, capsys)
    assert_same_image(q, g)


# ------------------------------------------ what iotests 061 and 112 need besides


def test_shrink_keeps_snapshot_l2_tables(tmp_path, monkeypatch, capsys):
    """resize --shrink of an image whose L2 table a snapshot shares
    discards in a copy of the table (iotest 061 'resize with snapshots'):
    the snapshot keeps its clusters and the image checks clean."""
    def setup(d: Path) -> None:
        create(d, size="32M")
        qio(d, "write -P 0x2a 24M 64k", "write -P 0x2b 0 64k")
        ok("qemu-img", "snapshot", "-c", "foo", "t.qcow2", cwd=d)
    q, g = both(tmp_path, setup, ["resize", "--shrink", "t.qcow2", "16M"], monkeypatch, capsys)
    assert_same_image(q, g, same_bytes=False)
    ok("qemu-img", "snapshot", "-a", "foo", "t.qcow2", cwd=g)
    assert run("qemu-img", "check", "t.qcow2", cwd=g).returncode == 0
    qio(g, "read -P 0x2a 24M 64k", "read -P 0x2b 0 64k")


def test_snapshot_create_failure_message(tmp_path, monkeypatch, capsys):
    """qemu-img snapshot -c prints the errno number and text (iotest 112:
    a snapshot cannot take a second reference with refcount_bits=1)."""
    def setup(d: Path) -> None:
        create(d, "-o", "refcount_bits=1")
        qio(d, "write 0 512")
    q, g = both(tmp_path, setup, ["snapshot", "-c", "foo", "t.qcow2"], monkeypatch, capsys)
    want = run("qemu-img", "check", "t.qcow2", cwd=q)
    rc, out, err = gqemu_img(["check", "t.qcow2"], g, monkeypatch, capsys)
    assert (rc, out, err) == (want.returncode, want.stdout, want.stderr)


def test_check_refcount_overflow_hint(tmp_path, monkeypatch, capsys):
    """check names amend as the way out of a refcount overflow (iotest 112:
    two compressed clusters in one host cluster with refcount_bits=1)."""
    def setup(d: Path) -> None:
        create(d, "-o", "refcount_bits=1")
        qio(d, "write -P 0 -c 0 64k", "write -P 1 -c 64k 64k")
    q, g = both(tmp_path, setup, ["check", "t.qcow2"], monkeypatch, capsys)


@pytest.mark.parametrize("size", ["4096", "512", "64k", "1000", "128k", "x"])
def test_l2_cache_entry_size_option(tmp_path, size, monkeypatch, capsys):
    """amend --image-opts with l2-cache-entry-size (iotest 061): valid
    values are taken, invalid ones refused with QEMU's messages."""
    def setup(d: Path) -> None:
        create(d)
        qio(d, "write -z 0 128k")
    q, g = both(tmp_path, setup, ["amend", "-o", "compat=0.10", "--image-opts",
                                  "driver=qcow2,file.filename=t.qcow2,l2-cache-entry-size="
                                  + size], monkeypatch, capsys)
    assert_same_image(q, g)


@pytest.mark.parametrize("where,value", [(0, b"\0\0\0\0\0\x40\x02\0"), (8, b"\x10\0\0\0")],
                         ids=["l1_offset", "l1_size"])
def test_downgrade_corrupt_snapshot_l1(tmp_path, where, value, monkeypatch, capsys):
    """iotest 080: a snapshot whose L1 table offset or size is invalid stops
    the zero-cluster expansion with QEMU's two messages; the image is left
    as QEMU leaves it."""
    def setup(d: Path) -> None:
        create(d)
        qio(d, "write 0 512")
        ok("qemu-img", "snapshot", "-c", "test", "t.qcow2", cwd=d)
        table = json.loads(ok("qemu-img", "info", "--output=json", "t.qcow2", cwd=d))
        assert len(table["snapshots"]) == 1
        with open(d / "t.qcow2", "r+b") as f:
            f.seek(64)
            snap_table = int.from_bytes(f.read(8), "big")
            f.seek(snap_table + where)
            f.write(value)
    q, g = both(tmp_path, setup, ["amend", "-o", "compat=0.10", "t.qcow2"], monkeypatch, capsys)
    assert (q / "t.qcow2").read_bytes() == (g / "t.qcow2").read_bytes()


def test_iotest_061_resize_with_snapshots(tmp_path, monkeypatch, capsys):
    """iotest 061's sequence: upgrade+grow a v2 image with a snapshot, add a
    snapshot, shrink (the snapshot table is the file's partial last
    cluster: it must survive the cut), a downgrade refused by the snapshot
    of another size (the resize in the same amend still happens), then
    allowed once that snapshot is gone."""
    def setup(d: Path) -> None:
        create(d, "-o", "compat=0.10", size="32M")
        qio(d, "write -P 0x2a 24M 64k")
        ok("qemu-img", "snapshot", "-c", "foo", "t.qcow2", cwd=d)
    q, g = both(tmp_path, setup, ["amend", "-o", "compat=1.1,size=128M", "t.qcow2"],
                monkeypatch, capsys)
    assert_same_image(q, g)

    def step(args: list[str], tools_only: bool = False) -> None:
        want = run("qemu-img", *args, cwd=q)
        if tools_only:
            got = run("qemu-img", *args, cwd=g)
            assert got.returncode == want.returncode == 0, got.stderr
            return
        rc, out, err = gqemu_img(args, g, monkeypatch, capsys)
        assert (rc, out, err) == (want.returncode, want.stdout, want.stderr), args

        def undated(d: Path) -> dict:     # 'bar' was taken separately on each side
            doc = info(d)
            for sn in doc.get("snapshots", []):
                del sn["date-sec"], sn["date-nsec"]
            return doc
        assert undated(g) == undated(q)
        assert run("qemu-img", "check", "t.qcow2", cwd=g).returncode == 0

    step(["snapshot", "-c", "bar", "t.qcow2"], tools_only=True)
    step(["resize", "--shrink", "t.qcow2", "64M"])
    step(["amend", "-o", "compat=0.10,size=32M", "t.qcow2"])
    step(["snapshot", "-a", "bar", "t.qcow2"])
    step(["snapshot", "-d", "bar", "t.qcow2"])
    step(["amend", "-o", "compat=0.10,size=32M", "t.qcow2"])
    assert info(g)["format-specific"]["data"]["compat"] == "0.10"
    qio(g, "read -P 0x2a 24M 64k")
    ok("qemu-img", "snapshot", "-a", "foo", "t.qcow2", cwd=g)
    qio(g, "read -P 0x2a 24M 64k")


@pytest.mark.parametrize("resize", [["t.qcow2", "64M"], ["--shrink", "t.qcow2", "16M"]],
                         ids=["grown", "shrunk"])
def test_snapshot_apply_restores_its_size(tmp_path, resize, monkeypatch, capsys):
    """snapshot -a of a snapshot taken at another size resizes the image to
    it, as qemu-img 7.2 does (iotest 061 applies one after an amend
    changed the size)."""
    def setup(d: Path) -> None:
        create(d, size="32M")
        qio(d, "write -P 5 0 64k", "write -P 7 20M 64k")
        ok("qemu-img", "snapshot", "-c", "a", "t.qcow2", cwd=d)
        ok("qemu-img", "resize", *resize, cwd=d)
        qio(d, "write -P 6 0 64k")
    q, g = both(tmp_path, setup, ["snapshot", "-a", "a", "t.qcow2"], monkeypatch, capsys)
    assert_same_image(q, g, same_bytes=False)
    qio(g, "read -P 5 0 64k", "read -P 7 20M 64k")


@pytest.mark.parametrize("args", [["-p", "-o", "foo=bar", "t.qcow2"],
                                  ["-p", "-o", "compat=0.42", "t.qcow2"]])
def test_error_comes_before_the_progress_end(tmp_path, args):
    """With -p and an error, qemu-img prints the error, then ends the
    progress line: the same order on one stream."""
    create(tmp_path)
    cmd = ["amend", *args]
    want = subprocess.run(["qemu-img", *cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, cwd=tmp_path)
    code = ("import sys; sys.argv[0] = 'qemu-img'; from gqemu.cli.qemu_img import main; "
            "sys.exit(main(sys.argv[1:]))")
    got = subprocess.run([sys.executable, "-c", code, *cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, cwd=tmp_path)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
