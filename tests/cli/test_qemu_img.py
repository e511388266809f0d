"""gqemu-img against the real qemu-img: the same output text and exit codes
for info, check, map (human and JSON), compare, create and snapshot -l on
the same images."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(120)


def run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)


def ok(*cmd, cwd=None) -> str:
    p = run(*cmd, cwd=cwd)
    assert p.returncode == 0, "%s: %s%s" % (cmd, p.stdout, p.stderr)
    return p.stdout


@pytest.fixture(scope="module")
def images(tmp_path_factory, qemu_img, qemu_io) -> Path:
    """A zoo of QEMU-made images in one folder (relative backing names)."""
    qi, qio = qemu_img, qemu_io
    d = tmp_path_factory.mktemp("zoo")
    ok(qi, "create", "-q", "-f", "qcow2", "plain.qcow2", "64M", cwd=d)
    ok(qio, "-c", "write -P 1 0 100k", "-c", "write -P 2 1M 64k", "-c", "write -z 2M 128k",
       "-c", "write -P 3 63M 1M", "plain.qcow2", cwd=d)
    ok(qi, "create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", "v2.qcow2",
       "8M", cwd=d)
    ok(qio, "-c", "write -P 4 4k 40k", "-c", "write -P 5 7M 9k", "v2.qcow2", cwd=d)
    ok(qi, "create", "-q", "-f", "qcow2", "-b", "plain.qcow2", "-F", "qcow2", "top.qcow2", cwd=d)
    ok(qio, "-c", "write -P 6 50k 100k", "-c", "write -z 1M 64k", "-c", "discard 63M 64k",
       "top.qcow2", cwd=d)
    ok(qi, "convert", "-c", "-O", "qcow2", "top.qcow2", "comp.qcow2", cwd=d)
    ok(qi, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=65536",
       "-b", "plain.qcow2", "-F", "qcow2", "ext.qcow2", cwd=d)
    ok(qio, "-c", "write -P 7 4k 2k", "-c", "write -z 70k 6k", "-c", "write -P 8 1M 64k",
       "ext.qcow2", cwd=d)
    ok(qi, "create", "-q", "-f", "qcow2", "-o", "refcount_bits=4,lazy_refcounts=on",
       "snap.qcow2", "16M", cwd=d)
    ok(qio, "-c", "write -P 9 0 1M", "snap.qcow2", cwd=d)
    ok(qi, "snapshot", "-c", "first", "snap.qcow2", cwd=d)
    ok(qio, "-c", "write -P 10 512k 1M", "snap.qcow2", cwd=d)
    ok(qi, "create", "-q", "-f", "raw", "disk.raw", "3M", cwd=d)
    return d


NAMES = ["plain.qcow2", "v2.qcow2", "top.qcow2", "comp.qcow2", "ext.qcow2", "snap.qcow2",
         "disk.raw"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("args", [["info"], ["info", "--output=json"], ["map"],
                                  ["map", "--output=json"], ["check"],
                                  ["check", "--output=json"], ["info", "--backing-chain"],
                                  ["snapshot", "-l"]])
def test_same_output_as_qemu_img(images, name, args, monkeypatch, capsys):
    q = run("qemu-img", *args, name, cwd=images)
    monkeypatch.chdir(images)
    monkeypatch.setattr(sys, "argv", ["gqemu-img"])
    rc = gimg.main([*args, name])
    out, err = capsys.readouterr()
    assert rc == q.returncode, (err, q.stderr)
    assert out == q.stdout
    assert err.replace("gqemu-img", "qemu-img") == q.stderr


def test_info_with_snapshots(images):
    q = run("qemu-img", "info", "snap.qcow2", cwd=images)
    g = run("gqemu-img", "info", "snap.qcow2", cwd=images)
    assert g.stdout == q.stdout and "Snapshot list:" in g.stdout


def test_map_json_agrees_on_data_and_zero(images):
    """Every byte is classified the same (data/zero/present) by both tools."""
    import json
    for name in NAMES:
        q = json.loads(ok("qemu-img", "map", "--output=json", name, cwd=images))
        g = json.loads(ok("gqemu-img", "map", "--output=json", name, cwd=images))
        assert g == q, name


def test_compare(images, tmp_path):
    assert run("gqemu-img", "compare", "top.qcow2", "comp.qcow2", cwd=images).stdout == \
        "Images are identical.\n"
    p = run("gqemu-img", "compare", "plain.qcow2", "top.qcow2", cwd=images)
    q = run("qemu-img", "compare", "plain.qcow2", "top.qcow2", cwd=images)
    assert (p.returncode, p.stdout) == (q.returncode, q.stdout) == (1, q.stdout)
    p = run("gqemu-img", "compare", "-s", "plain.qcow2", "v2.qcow2", cwd=images)
    assert p.returncode == 1 and "Strict mode: Image size mismatch!" in p.stdout


@pytest.mark.parametrize("args", [
    ["-f", "qcow2", "x.qcow2", "64M"],
    ["-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", "x.qcow2", "1G"],
    ["-f", "qcow2", "-o", "preallocation=metadata,lazy_refcounts=on,extended_l2=on",
     "x.qcow2", "1M"],
    ["-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", "x.qcow2"],
    ["-f", "raw", "x.raw", "1M"],
    ["-f", "qcow2", "-o", "cluster_size=1000", "x.qcow2", "1M"],
    ["-f", "qcow2", "x.qcow2"],
    ["-f", "qcow2", "-b", "../base.qcow2", "x.qcow2", "1M"],
])
def test_create_same_as_qemu_img(tmp_path, args):
    ok("qemu-img", "create", "-q", "-f", "qcow2", tmp_path / "base.qcow2", "5M")
    (tmp_path / "q").mkdir()
    (tmp_path / "g").mkdir()
    q = run("qemu-img", "create", *args, cwd=tmp_path / "q")
    g = run("gqemu-img", "create", *args, cwd=tmp_path / "g")
    assert g.returncode == q.returncode
    assert g.stdout == q.stdout
    if q.returncode:
        assert g.stderr == q.stderr.replace("qemu-img", "gqemu-img")
        return
    img = args[-2] if args[-1][0].isdigit() else args[-1]
    for d in ("q", "g"):
        assert run("qemu-img", "check", img, cwd=tmp_path / d).returncode in (0, 63)
    qi = ok("qemu-img", "info", img, cwd=tmp_path / "q")
    gi = ok("qemu-img", "info", img, cwd=tmp_path / "g")
    strip = lambda s: [x for x in s.splitlines() if not x.startswith("disk size")]  # noqa
    assert strip(gi) == strip(qi)


def test_help_and_prog_name(tmp_path):
    p = run("gqemu-img", "--help")
    assert p.returncode == 0
    formats = [ln for ln in p.stdout.splitlines() if ln.startswith("Supported formats:")]
    assert len(formats) == 1 and {"qcow2", "raw"} <= set(formats[0].split()[2:])
    # A script named myimg run by this very interpreter: argv[0] is the
    # script, and a virtualenv's interpreter keeps its environment (a
    # symlink to sys.executable elsewhere does not: Python finds pyvenv.cfg
    # beside the path it was started by).
    link = tmp_path / "myimg"
    link.write_text("import sys\nfrom gqemu.cli.qemu_img import main\nsys.exit(main())\n")
    p = run(sys.executable, link, "info", tmp_path / "nothing")
    assert p.returncode == 1 and p.stderr.startswith("myimg: Could not open ")


def test_convert_progress_and_errors(images, tmp_path):
    p = run("gqemu-img", "convert", "-p", "-O", "raw", "top.qcow2", tmp_path / "t.raw",
            cwd=images)
    assert p.returncode == 0 and p.stdout.endswith("    (100.00/100%)\n")
    assert ok("qemu-img", "compare", "-F", "raw", images / "top.qcow2", tmp_path / "t.raw") \
        == "Images are identical.\n"
    p = run("gqemu-img", "convert", "-c", "-O", "raw", "top.qcow2", tmp_path / "x", cwd=images)
    assert p.returncode == 1 and p.stderr.count("\n") == 1


def _poke(path: Path, off: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


@pytest.mark.parametrize("case", ["leak", "corruption", "copied", "dirty"])
def test_check_damaged_same_as_qemu_img(tmp_path, case, monkeypatch, capsys):
    """Damaged images: the same report lines, counts and exit codes, before
    and after ``-r leaks`` / ``-r all``."""
    imgs = {}
    for who in ("q", "g"):
        img = tmp_path / who / "d.qcow2"
        img.parent.mkdir()
        ok("qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
        ok("qemu-io", "-c", "write -P 1 0 192k", img)     # L2 0x40000, data 0x50000..
        if case == "leak":                                # cluster 8 counted, unused
            with open(img, "ab") as f:
                f.write(bytes(2 * 65536))
            _poke(img, 0x20000 + 2 * 8, b"\x00\x01")
        elif case == "corruption":                        # data cluster 6 refcount 0
            _poke(img, 0x20000 + 2 * 6, b"\x00\x00")
        elif case == "copied":                            # refcount 2 on a COPIED cluster
            _poke(img, 0x20000 + 2 * 5, b"\x00\x02")
        else:                                             # dirty bit only
            _poke(img, 72 + 7, b"\x01")
        imgs[who] = img
    monkeypatch.setattr(sys, "argv", ["gqemu-img"])
    for args in (["check"], ["check", "--output=json"], ["check", "-r", "leaks"],
                 ["check", "-r", "all"], ["check"]):
        q = run("qemu-img", *args, "d.qcow2", cwd=imgs["q"].parent)
        monkeypatch.chdir(imgs["g"].parent)
        rc = gimg.main([*args, "d.qcow2"])
        out, err = capsys.readouterr()
        assert rc == q.returncode, (args, out, err, q.stdout, q.stderr)
        if case == "corruption" and args[-1] == "all":
            continue            # the rebuilt refcount structures are laid out differently
        assert out == q.stdout, args
        assert err.replace("gqemu-img", "qemu-img") == q.stderr, args


def test_dirty_image_read_only_and_repair(tmp_path):
    img = tmp_path / "d.qcow2"
    ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "4M")
    ok("qemu-io", "-c", "write -P 3 0 64k", img)
    _poke(img, 0x20000 + 2 * 4, b"\x00\x00")      # refcount lost, as after a crash
    _poke(img, 72 + 7, b"\x01")                   # dirty
    assert "cleanly shut down: no" in ok("gqemu-img", "info", img)
    assert run("qemu-img", "check", img).returncode == 2
    import gqemu.block as b
    blk = b.blk_new_open(str(img), {"format": "qcow2", "readonly": "on"})
    assert b.blk_pread(blk, 0, 4) == b"\x03" * 4   # read-only: no repair needed
    b.blk_unref(blk)
    assert run("qemu-img", "check", img).returncode == 2
    blk = b.blk_new_open(str(img), {"format": "qcow2"})   # writable: repaired on open
    b.blk_unref(blk)
    assert run("qemu-img", "check", img).returncode == 0
    assert "cleanly shut down" not in ok("gqemu-img", "info", img)
