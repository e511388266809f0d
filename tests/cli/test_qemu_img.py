"""gqemu-img against the real qemu-img: the same output text and exit codes
for info, check, map (human and JSON), compare, create and snapshot -l on
the same images."""
from __future__ import annotations

import os
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
def images(tmp_path_factory) -> Path:
    """A zoo of QEMU-made images in one folder (relative backing names)."""
    qi, qio = "qemu-img", "qemu-io"
    if not (os.path.exists("/usr/bin/qemu-img") or os.environ.get("CI") == "true"):
        pytest.skip("qemu-img is not installed")
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
        assert g.stderr == q.stderr.replace("qemu-img", "gqemu-img").splitlines(True)[0]
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
    assert p.stdout.splitlines()[-1].startswith("Supported formats:")
    assert {"qcow2", "raw"} <= set(p.stdout.splitlines()[-1].split()[2:])
    link = tmp_path / "myimg"
    os.symlink(sys.executable, tmp_path / "py")
    link.write_text("#!%s\nimport sys\nfrom gqemu.cli.qemu_img import main\nsys.exit(main())\n"
                    % (tmp_path / "py"))
    link.chmod(0o755)
    p = run(link, "info", tmp_path / "nothing")
    assert p.returncode == 1 and p.stderr.startswith("myimg: Could not open ")


def test_convert_progress_and_errors(images, tmp_path):
    p = run("gqemu-img", "convert", "-p", "-O", "raw", "top.qcow2", tmp_path / "t.raw",
            cwd=images)
    assert p.returncode == 0 and p.stdout.endswith("    (100.00/100%)\n")
    assert ok("qemu-img", "compare", "-F", "raw", images / "top.qcow2", tmp_path / "t.raw") \
        == "Images are identical.\n"
    p = run("gqemu-img", "convert", "-c", "-O", "raw", "top.qcow2", tmp_path / "x", cwd=images)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
