"""blkdebug: injected errors reach the caller as -errno and nothing is
written; rules, states, sectors, once, iotype behave as in QEMU, checked by
running the same config and requests through a real qemu-io (raw over
blkdebug over file, qemu-io's default writethrough cache) and comparing
every request's outcome and the final image bytes."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from gqemu.block import BlockError, blk_new_open, blk_prw, blk_unref
from gqemu.block.blkdebug import blkdebug_parse_config

pytestmark = pytest.mark.timeout(60)

SIZE = 1 << 20


def qemu_io_outcomes(qemu_io: str, path: str, conf: str, ops: list) -> list[str]:
    args = [qemu_io, "-f", "raw"]
    for op in ops:
        if op[0] == "read":
            args += ["-c", "read %d %d" % (op[1], op[2])]
        else:
            args += ["-c", "write -P %d %d %d" % (op[3], op[1], op[2])]
    args.append("blkdebug:%s:%s" % (conf, path))
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    out = []
    for line in r.stdout.splitlines():
        if " failed: " in line:
            out.append(line.split(" failed: ", 1)[1])
        elif line.startswith(("read ", "wrote ")):
            out.append("ok")
    assert len(out) == len(ops), (r.stdout, r.stderr)
    return out


def gqemu_outcomes(path: str, conf: str, ops: list) -> list[str]:
    blk = blk_new_open("blkdebug:%s:%s" % (conf, path),
                       {"format": "raw", "cache": "writethrough", "discard": "unmap"})
    out = []
    for op in ops:
        try:
            if op[0] == "read":
                blk_prw(blk, op[1], bytearray(op[2]), op[2], False)
            else:
                blk_prw(blk, op[1], bytes([op[3]]) * op[2], op[2], True)
        except BlockError as e:
            out.append(os.strerror(e.errno))
        else:
            out.append("ok")
    blk_unref(blk)
    return out


CASES = {
    "read_sector_128": ('[inject-error]\nevent = "read_aio"\nerrno = "5"\nsector = "128"\n',
                        [("read", 0, 32768), ("read", 65536, 4096), ("read", 61440, 8192),
                         ("write", 0, 4096, 1), ("read", 65536, 512), ("read", 0, 512)]),
    "write_enospc": ('[inject-error]\nevent = "write_aio"\nerrno = "28"\n',
                     [("write", 0, 4096, 7), ("read", 0, 4096), ("write", 512, 1, 8)]),
    "set_state_then_fail": (
        '[set-state]\nevent = "write_aio"\nstate = "1"\nnew_state = "2"\n'
        '[inject-error]\nevent = "write_aio"\nstate = "2"\nerrno = "5"\n',
        [("write", 0, 4096, 1), ("write", 4096, 4096, 2), ("write", 8192, 4096, 3),
         ("read", 0, 4096)]),
    "once": ('[set-state]\nevent = "write_aio"\nstate = "1"\nnew_state = "2"\n'
             '[inject-error]\nevent = "write_aio"\nstate = "2"\nerrno = "28"\nonce = "on"\n',
             [("write", 0, 4096, 1), ("write", 4096, 4096, 2), ("write", 8192, 4096, 3),
              ("write", 12288, 4096, 4)]),
    "immediately": ('[inject-error]\nevent = "read_aio"\nerrno = "28"\nimmediately = "on"\n',
                    [("read", 0, 512), ("write", 0, 512, 9), ("read", 0, 512)]),
    "flush_to_disk": ('[inject-error]\nevent = "flush_to_disk"\nerrno = "5"\n',
                      [("write", 0, 4096, 1), ("write", 4096, 4096, 2), ("read", 0, 512)]),
    "none_iotype_write": ('[inject-error]\nevent = "none"\niotype = "write"\nerrno = "5"\n',
                          [("read", 0, 512), ("write", 0, 512, 3), ("read", 0, 512)]),
    "none_iotype_flush": ('[inject-error]\nevent = "none"\niotype = "flush"\nerrno = "5"\n',
                          [("write", 0, 4096, 4), ("read", 0, 4096)]),
    "write_sector_unaligned": (
        '[inject-error]\nevent = "write_aio"\nerrno = "5"\nsector = "3"\n',
        [("write", 1000, 600, 5), ("write", 1600, 100, 6), ("write", 0, 1536, 7),
         ("write", 1536, 512, 8)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_qemu_io(tmp_path, qemu_io, case: str) -> None:
    conf_text, ops = CASES[case]
    conf = tmp_path / "blkdebug.conf"
    conf.write_text(conf_text)
    ours, theirs = tmp_path / "ours.img", tmp_path / "theirs.img"
    ours.write_bytes(bytes(range(256)) * (SIZE // 256))
    shutil.copy(ours, theirs)
    expected = qemu_io_outcomes(qemu_io, str(theirs), str(conf), ops)
    assert gqemu_outcomes(str(ours), str(conf), ops) == expected
    assert ours.read_bytes() == theirs.read_bytes()


def test_error_reaches_caller_and_nothing_is_written(tmp_path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text('[inject-error]\nevent = "write_aio"\n')
    img = tmp_path / "img"
    img.write_bytes(b"\x11" * 65536)
    blk = blk_new_open("blkdebug:%s:%s" % (conf, img), {"format": "raw"})
    for off, n in [(0, 512), (100, 3000), (65535, 1), (4096, 8192)]:
        with pytest.raises(BlockError) as e:
            blk_prw(blk, off, b"\x99" * n, n, True)
        assert e.value.errno == errno.EIO
    assert blk.root.bs.file.bs.opaque.injected == 4
    blk_unref(blk)
    assert img.read_bytes() == b"\x11" * 65536


def test_rules_from_options(tmp_path) -> None:
    img = tmp_path / "img"
    img.write_bytes(bytes(8192))
    blk = blk_new_open(str(img), {
        "format": "raw", "file.driver": "blkdebug", "file.image": str(img),
        "file.inject-error": [{"event": "read_aio", "errno": "28", "sector": "8"}]})
    assert blk_prw(blk, 0, bytearray(4096), 4096, False) == 0
    with pytest.raises(BlockError) as e:
        blk_prw(blk, 4096, bytearray(512), 512, False)
    assert e.value.errno == errno.ENOSPC
    blk_unref(blk)


@pytest.mark.parametrize("text,msg", [
    ('[inject-error]\nevent = "read_aio"\nerrno = 5\n', "Parameter 'errno' expects a number"),
    ('[inject-error]\nevent = "read_aio"\nfoo = "5"\n', "Invalid parameter 'foo'"),
    ('[inject-error]\nevent = "bogus"\n', "invalid parameter value: bogus"),
    ('[inject-errorx]\nevent = "read_aio"\n', "There is no option group 'inject-errorx'"),
    ('[inject-error]\nerrno = "5"\n', "Missing event name for rule"),
    ('[inject-error]\nevent = "read_aio"\nonce="on"\n', "Invalid parameter 'once=\"on\"'"),
    ('[inject-error]\nevent = "read_aio"\nonce = "maybe"\n',
     "Parameter 'once' expects 'on' or 'off'"),
])
def test_bad_config_as_qemu_io(tmp_path, qemu_io, text: str, msg: str) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    img = tmp_path / "img"
    img.write_bytes(bytes(4096))
    name = "blkdebug:%s:%s" % (conf, img)
    with pytest.raises(BlockError) as e:
        blk_new_open(name, {"format": "raw"})
    assert str(e.value) == msg
    r = subprocess.run([qemu_io, "-f", "raw", "-c", "read 0 512", name],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr == "qemu-io: can't open device %s: %s\n" % (name, msg)


def test_missing_config_and_bad_filename(tmp_path) -> None:
    img = tmp_path / "img"
    img.write_bytes(bytes(4096))
    with pytest.raises(BlockError, match="^Could not read blkdebug config file: "
                                         "No such file or directory$"):
        blk_new_open("blkdebug:%s/none.conf:%s" % (tmp_path, img), {"format": "raw"})
    with pytest.raises(BlockError, match="^blkdebug requires both config file and image "
                                         "path$"):
        blk_new_open("blkdebug:%s" % img, {"format": "raw"})


def test_config_comments_and_quotes() -> None:
    groups = blkdebug_parse_config('# hi\n[set-state]\n  event = "l2_load"\n'
                                   '  new_state = "3"\n\n[inject-error]\nevent = "none"\n')
    assert groups == [("set-state", {"event": "l2_load", "new_state": "3"}),
                      ("inject-error", {"event": "none"})]


def test_breakpoint_suspends_until_resume(tmp_path) -> None:
    """As qemu-io's break / wait_break / resume (same messages as 7.2)."""
    from gqemu.aio import aio_poll
    from gqemu.block import QEMUIOVector, blk_aio_pwritev, blk_drain, blk_pread
    from gqemu.block.blkdebug import blkdebug_set_output
    img = tmp_path / "img"
    img.write_bytes(bytes(65536))
    out: list[str] = []
    old = blkdebug_set_output(out.append)
    try:
        blk = blk_new_open("blkdebug::%s" % img, {"format": "raw"})
        node = blk.root.bs.file.bs
        drv = node.drv
        assert drv.bdrv_debug_breakpoint(node, "nosuch", "X") == -errno.ENOENT
        assert drv.bdrv_debug_breakpoint(node, "write_aio", "A") == 0
        done: list = []
        blk_aio_pwritev(blk, 0, QEMUIOVector([b"\x01" * 4096]), 0,
                        lambda o, r: done.append((o, r)), "first")
        assert drv.bdrv_debug_is_suspended(node, "A")
        blk_aio_pwritev(blk, 4096, QEMUIOVector([b"\x02" * 4096]), 0,
                        lambda o, r: done.append((o, r)), "second")
        while aio_poll(blk.ctx, True):
            pass
        assert done == [("second", 0)]            # the breakpoint was used up
        assert drv.bdrv_debug_resume(node, "B") == -errno.ENOENT
        assert drv.bdrv_debug_resume(node, "A") == 0
        blk_drain(blk)
        assert done == [("second", 0), ("first", 0)]
        assert not drv.bdrv_debug_is_suspended(node, "A")
        assert drv.bdrv_debug_remove_breakpoint(node, "C") == -errno.ENOENT
        assert drv.bdrv_debug_breakpoint(node, "write_aio", "C") == 0
        assert drv.bdrv_debug_remove_breakpoint(node, "C") == 0
        assert blk_prw(blk, 0, b"\x03" * 512, 512, True) == 0      # not suspended
        assert blk_pread(blk, 0, 8192) == b"\x03" * 512 + b"\x01" * 3584 + b"\x02" * 4096
        blk_unref(blk)
    finally:
        blkdebug_set_output(old)
    assert out == ["blkdebug: Suspended request 'A'\n", "blkdebug: Resuming request 'A'\n"]
