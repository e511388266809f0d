"""gqemu-img against the real qemu-img where qemu-iotests 111, 020, 098,
029, 122, 110 and 126 found differences: each case runs the same setup
(real qemu-img / qemu-io) in two folders, then one command through the
real qemu-img in one and gqemu-img (named qemu-img) in the other, and
requires the same stdout, stderr and exit status (the folder names
replaced), and, where given, the same check of the image afterwards."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

import qemu_io_corpus_runner as runner       # tests/cli/conftest.py loads it

pytestmark = pytest.mark.timeout(120)

GQEMU_IMG = ("import sys; sys.argv[0] = 'qemu-img'; "
             "from gqemu.cli.qemu_img import main; sys.exit(main())")


def _sh(cmd: str, cwd: Path, tools: dict) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    prog = tools[argv[0]]
    p = subprocess.run(prog + argv[1:], capture_output=True, text=True, cwd=cwd)
    return p


def _filter(text: str, d: Path) -> str:
    text = runner.filter_qemu_io(text.replace(str(d), "DIR"))
    return re.sub(r"(?m)^disk size: .*\n", "", text)     # host file system detail


def both(tmp_path: Path, qemu_img: str, qemu_io: str, setup: list[str],
         cmds: list[str], files: Optional[dict] = None) -> None:
    """Write ``files``, run ``setup`` (real tools) then ``cmds`` with each
    qemu-img in its own folder; compare the outputs of ``cmds``."""
    outs = []
    for name, img in (("q", [qemu_img]), ("g", [sys.executable, "-c", GQEMU_IMG])):
        d = tmp_path / name
        d.mkdir()
        for fname, text in (files or {}).items():
            (d / fname).write_text(text)
        real = {"qemu-img": [qemu_img], "qemu-io": [qemu_io]}
        for cmd in setup:
            p = _sh(cmd, d, real)
            assert p.returncode == 0 or cmd.startswith("-"), (cmd, p.stderr)
        tools = {"qemu-img": img, "qemu-io": [qemu_io], "real-img": [qemu_img],
                 "stat": ["stat"], "ls": ["ls"]}
        got = []
        for cmd in cmds:
            p = _sh(cmd, d, tools)
            got.append((cmd, p.returncode, _filter(p.stdout, d), _filter(p.stderr, d)))
        outs.append(got)
    for q, g in zip(*outs):
        assert g == q


# ------------------------------------------------ create: backing checks (111)


@pytest.mark.parametrize("args", [
    "-b nonexist 1M",                   # 111: open error + hint, before the format check
    "-b nonexist",
    "-b nonexist -F qcow2 1M",          # the backing file is opened even with a size
    "-u -b nonexist 1M",                # -u: no open, the format is still required
    "-u -b nonexist -F qcow2",          # -u and no size
    "-u -b nonexist -F qcow2 1M",
    "-b base.qcow2 1M",                 # the hint names the detected format
    "-b base.qcow2 -F foo",
    "-b base.qcow2 -F raw",
    # a json: backing name with a blkdebug node (iotest 020's setup)
    "-b \"json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', 'image': "
    "{'driver': 'file', 'filename': 'base.qcow2'}}}\" -F qcow2",
])
def test_create_backing_checks(tmp_path, qemu_img, qemu_io, args):
    both(tmp_path, qemu_img, qemu_io, ["qemu-img create -q -f qcow2 base.qcow2 2M"],
         ["qemu-img create -f qcow2 t.qcow2 " + args, "real-img info t.qcow2"])


# ------------------------------------------------- convert: several sources (122)

_THREE = ["qemu-img create -q -f qcow2 s1.qcow2 4M", "qemu-img create -q -f qcow2 s2.qcow2 4M",
          "qemu-img create -q -f qcow2 s3.qcow2 1000k",
          "qemu-io -c 'write -P 0x11 0 64k' s1.qcow2",
          "qemu-io -c 'write -P 0x22 0 64k' -c 'write -P 0x23 4032k 64k' s2.qcow2",
          "qemu-io -c 'write -P 0x33 0 64k' s3.qcow2",
          "qemu-img create -q -f qcow2 base.qcow2 16M",
          "qemu-img create -q -f qcow2 small.qcow2 4M"]


@pytest.mark.parametrize("args", [
    "-O qcow2 s1.qcow2 s2.qcow2 s3.qcow2 t.qcow2",
    "-c -O qcow2 s1.qcow2 s2.qcow2 s3.qcow2 t.qcow2",
    "-O raw s3.qcow2 s1.qcow2 t.qcow2",
    "-O qcow2 -B base.qcow2 -F qcow2 s1.qcow2 s2.qcow2 t.qcow2",
    "-O qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 s1.qcow2 s2.qcow2 t.qcow2",
    "-O qcow2 -c -B base.qcow2 s1.qcow2 s2.qcow2 t.qcow2",
    "-n -O qcow2 s1.qcow2 s2.qcow2 base.qcow2",      # the target is big enough
    "-n -O qcow2 s1.qcow2 s2.qcow2 small.qcow2",     # it is not
    "-O qcow2 s1.qcow2 nosuch.qcow2 t.qcow2",
])
def test_convert_concatenates(tmp_path, qemu_img, qemu_io, args):
    both(tmp_path, qemu_img, qemu_io, _THREE,
         ["qemu-img convert " + args,
          "real-img map --output=json t.qcow2", "real-img map --output=json base.qcow2",
          "qemu-io -r -c 'read -P 0x11 0 64k' -c 'read -P 0x22 4M 64k' "
          "-c 'read -P 0x23 8128k 64k' -c 'read -P 0x33 8192k 64k' -c 'read -P 0 8256k 936k' "
          "t.qcow2"])


# ------------------------------------------------------ convert -l snapshot (029)

_SNAP = ["qemu-img create -q -f qcow2 s.qcow2 1M", "qemu-io -c 'write -P 1 0 64k' s.qcow2",
         "qemu-img snapshot -c snap1 s.qcow2", "qemu-io -c 'write -P 2 0 64k' s.qcow2",
         "qemu-img snapshot -c 5 s.qcow2", "qemu-io -c 'write -P 3 0 64k' s.qcow2",
         "qemu-img create -q -f raw r.raw 1M"]


@pytest.mark.parametrize("opt", [
    "snap1", "1", "5", "nosuch", "snapshot.name=snap1", "snapshot.id=1",
    "snapshot.id=1,snapshot.name=snap1", "snapshot.id=2,snapshot.name=snap1",
    "snapshot.id=5", "snapshot.name=5", "snapshot.foo=1", "snapshot.id=1,foo=2",
    "snapshot.name", "snapshot.name=snap1,snapshot.name=5",
])
def test_convert_snapshot(tmp_path, qemu_img, qemu_io, opt):
    both(tmp_path, qemu_img, qemu_io, _SNAP,
         ["qemu-img convert -O raw -l %s s.qcow2 t.raw" % opt,
          "qemu-io -f raw -r -c 'read -v 0 4' -c 'read -v 64k 4' t.raw"])


@pytest.mark.parametrize("args", ["-l snap1 s.qcow2 s.qcow2 t.raw",
                                  "-l snapshot.name=snap1 s.qcow2 s.qcow2 t.raw",
                                  "-l snap1 -f raw r.raw t.raw"])
def test_convert_snapshot_errors(tmp_path, qemu_img, qemu_io, args):
    both(tmp_path, qemu_img, qemu_io, _SNAP,
         ["qemu-img convert -O raw " + args,
          "qemu-io -f raw -r -c 'read -v 0 4' -c 'read -v 64k 4' t.raw"])


# ------------------------------------------------------ commit errors (020, 098)

_JSON_BASE = ("json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', 'inject-error': "
              "[{'event': 'write_aio', 'errno': 28, 'once': true}], 'image': "
              "{'driver': 'file', 'filename': 'base.qcow2'}}}")


def test_commit_into_failing_json_base(tmp_path, qemu_img, qemu_io):
    """The base is written through its own graph (the blkdebug node of the
    json: backing name): the job fails with ENOSPC (iotest 020)."""
    both(tmp_path, qemu_img, qemu_io,
         ["qemu-img create -q -f qcow2 base.qcow2 1M",
          "qemu-img create -q -f qcow2 -b \"%s\" -F qcow2 t.qcow2" % _JSON_BASE,
          "qemu-io -c 'writev 0 64k' t.qcow2"],
         ["qemu-img commit t.qcow2", "real-img check t.qcow2", "real-img check base.qcow2",
          "real-img map --output=json t.qcow2"])


@pytest.mark.parametrize("event", [None, "l1_update", "empty_image_prepare",
                                   "reftable_update", "refblock_alloc"])
def test_commit_make_empty(tmp_path, qemu_img, qemu_io, event):
    """Emptying the committed v3 image rebuilds it (make_completely_empty);
    an error at each of its steps is reported as bdrv_make_empty does and
    leaves what the next open repairs (iotest 098)."""
    conf = '[inject-error]\nevent = "%s"\n' % event if event else ""
    both(tmp_path, qemu_img, qemu_io,
         ["qemu-img create -q -f qcow2 base.qcow2 64M",
          "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 t.qcow2 64M",
          "qemu-io -c 'write -P 7 0 64k' -c 'write -P 8 1M 64k' t.qcow2"],
         ["qemu-img commit blkdebug:b.conf:t.qcow2", "qemu-io -c close t.qcow2",
          "real-img check t.qcow2", "stat -c %s t.qcow2",
          "qemu-io -c 'read -P 7 0 64k' -c 'read -P 8 1M 64k' base.qcow2"],
         files={"b.conf": conf})


def test_commit_make_empty_file_size(tmp_path, qemu_img, qemu_io):
    """After a commit the emptied image is as small as QEMU leaves it."""
    both(tmp_path, qemu_img, qemu_io,
         ["qemu-img create -q -f qcow2 base.qcow2 64M",
          "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 t.qcow2 64M",
          "qemu-io -c 'write -P 7 0 64k' -c 'write -P 8 10M 64k' t.qcow2"],
         ["qemu-img commit t.qcow2", "stat -c %s t.qcow2", "real-img check t.qcow2"])


# --------------------------------------------------- image names (110, 126)

_BLKDEBUG_JSON = ("json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', %s'image': "
                  "{'driver': 'file', 'filename': 'DIR/t.qcow2'}}}")


@pytest.mark.parametrize("name", [
    "file:image:top.qcow2",                          # 126: ./image:top.qcow2, ./base.qcow2
    "file:t.qcow2",
    "DIR/t.qcow2",
    "json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'DIR/t.qcow2'}}",
    "json:{'driver': 'qcow2', 'lazy-refcounts': true, 'file': {'driver': 'file', "
    "'filename': 'DIR/t.qcow2'}}",
    _BLKDEBUG_JSON % "",                              # blkdebug::DIR/t.qcow2
    _BLKDEBUG_JSON % "'config': '/dev/null', ",       # blkdebug:/dev/null:DIR/t.qcow2
    "blkdebug::DIR/t.qcow2",
])
def test_info_image_name(tmp_path, qemu_img, qemu_io, name):
    """``image:`` and the backing file's actual path as qemu-img 7.2 shows
    them (bdrv_refresh_filename, bdrv_dirname)."""
    setup = ["qemu-img create -q -f qcow2 base.qcow2 1M",
             "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 t.qcow2",
             "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 file:image:top.qcow2"]
    outs = []
    for tool in ("q", "g"):
        d = tmp_path / tool
        d.mkdir()
        for cmd in setup:
            _sh(cmd, d, {"qemu-img": [qemu_img]})
        img = [qemu_img] if tool == "q" else [sys.executable, "-c", GQEMU_IMG]
        p = _sh("qemu-img info " + shlex.quote(name.replace("DIR", str(d))), d,
                {"qemu-img": img})
        outs.append((p.returncode, _filter(p.stdout, d), _filter(p.stderr, d)))
    assert outs[1] == outs[0]


@pytest.mark.parametrize("args", [
    "-q -f qcow2 file:a:b.qcow2 1M", "-f raw file:a:b.raw 1M",
    "-f qcow2 -o preallocation=metadata file:c:d.qcow2 1M",
])
def test_create_file_prefix(tmp_path, qemu_img, qemu_io, args):
    """``file:`` names the host file after the prefix (126)."""
    both(tmp_path, qemu_img, qemu_io, [],
         ["qemu-img create " + args, "ls"])


def test_info_json_blkdebug_with_rules(tmp_path, qemu_img, qemu_io):
    """A blkdebug node with rules has no plain name: info shows json:{...}
    (key order is not compared: QEMU prints its hash order) and still finds
    the backing file next to the image (110)."""
    name = _BLKDEBUG_JSON % "'set-state': [{'event': 'read_aio', 'new_state': 42}], "
    outs = []
    for tool in ("q", "g"):
        d = tmp_path / tool
        d.mkdir()
        _sh("qemu-img create -q -f qcow2 base.qcow2 1M", d, {"qemu-img": [qemu_img]})
        _sh("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 t.qcow2", d,
            {"qemu-img": [qemu_img]})
        img = [qemu_img] if tool == "q" else [sys.executable, "-c", GQEMU_IMG]
        p = _sh("qemu-img info " + shlex.quote(name.replace("DIR", str(d))), d,
                {"qemu-img": img})
        out = _filter(p.stdout, d)
        assert out.startswith("image: json:{")
        outs.append((p.returncode, re.sub(r"(?m)^image: json:.*$", "image: JSON", out)))
    assert outs[1] == outs[0]
