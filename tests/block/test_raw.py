"""raw format: offset/size windows and the probed-raw guard, each run
through real qemu-io with the same commands and compared (outcomes,
warning text, final image)."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from gqemu.block import BlockError, blk_getlength, blk_new_open, blk_prw, blk_unref
from gqemu.block.driver import set_error_sink

pytestmark = pytest.mark.timeout(60)

QCOW2_HDR = b"QFI\xfb" + struct.pack(">I", 3) + bytes(504)


def run_qemu_io(qemu_io: str, args: list[str], cmds: list[str]) -> tuple[list[str], str]:
    argv = [qemu_io]
    for c in cmds:
        argv += ["-c", c]
    r = subprocess.run(argv + args, capture_output=True, text=True, timeout=60)
    out = []
    for line in r.stdout.splitlines():
        if " failed: " in line:
            out.append(line.split(" failed: ", 1)[1])
        elif line.startswith(("read ", "wrote ")):
            out.append("ok")
    return out, r.stderr


def gqemu_run(filename: str, opts: dict, cmds: list) -> list[str]:
    """cmds: (verb, offset, length, data-or-None)."""
    blk = blk_new_open(filename, opts)
    out = []
    for verb, off, n, data in cmds:
        try:
            if verb == "read":
                blk_prw(blk, off, bytearray(n), n, False)
            else:
                blk_prw(blk, off, data, n, True)
        except BlockError as e:
            out.append(os.strerror(e.errno))
        else:
            out.append("ok")
    blk_unref(blk)
    return out


def to_qemu_io(cmds: list, src: str) -> list[str]:
    lines = []
    for verb, off, n, data in cmds:
        if verb == "read":
            lines.append("read %d %d" % (off, n))
        elif data == "hdr":
            lines.append("write -s %s %d %d" % (src, off, n))
        else:
            lines.append("write -P %d %d %d" % (data[0], off, n))
    return lines


@pytest.mark.parametrize("offset,size", [(0, None), (4096, None), (4096, 65536),
                                         (1000, 512 * 7), (0, 512)])
def test_offset_size_window_matches_qemu_io(tmp_path, qemu_io, offset, size) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.write_bytes(bytes((i * 31) & 0xff for i in range(1 << 17)))
    shutil.copy(ours, theirs)
    length = size if size is not None else (1 << 17) - offset
    cmds = [("read", 0, 512, None), ("write", 0, 100, b"\x07" * 100),
            ("write", length - 10, 10, b"\x08" * 10), ("write", length - 10, 11, b"\x09" * 11),
            ("read", length, 1, None), ("read", length - 1, 1, None),
            ("write", 300, 1000, b"\x0a" * 1000)]
    cmds = [c for c in cmds if c[1] + c[2] <= length + 1 and c[1] >= 0]
    opts = {"format": "raw", "offset": str(offset)}
    image_opts = "driver=raw,offset=%d,file.filename=%s" % (offset, theirs)
    if size is not None:
        opts["size"] = str(size)
        image_opts += ",size=%d" % size
    blk = blk_new_open(str(ours), opts)
    assert blk_getlength(blk) == length
    blk_unref(blk)
    expected, err = run_qemu_io(qemu_io, ["--image-opts", image_opts],
                                to_qemu_io(cmds, ""))
    assert gqemu_run(str(ours), opts, cmds) == expected, err
    assert ours.read_bytes() == theirs.read_bytes()


def test_probed_raw_guard_matches_qemu_io(tmp_path, qemu_io) -> None:
    hdr = tmp_path / "hdr"
    hdr.write_bytes(QCOW2_HDR)
    ours, theirs = tmp_path / "ours.img", tmp_path / "theirs.img"
    ours.write_bytes(bytes(65536))
    shutil.copy(ours, theirs)
    cmds = [("write", 0, 512, "hdr"), ("write", 0, 512, b"\x41" * 512),
            ("write", 0, 512, "hdr"), ("write", 0, 4, "hdr"), ("write", 512, 512, "hdr"),
            ("write", 8, 8, b"\x00" * 8), ("write", 0, 4, "hdr"), ("write", 1, 3, b"\x42" * 3)]
    expected, err = run_qemu_io(qemu_io, [str(theirs)], to_qemu_io(cmds, str(hdr)))
    assert err.startswith("WARNING: Image format was not specified for '%s'" % theirs)
    ours_cmds = [(v, o, n, QCOW2_HDR[:n] if d == "hdr" else d) for v, o, n, d in cmds]
    printed: list[str] = []
    old = set_error_sink(printed.append)
    try:
        got = gqemu_run(str(ours), {}, ours_cmds)
    finally:
        set_error_sink(old)
    assert got == expected
    assert "".join(printed) == err.replace(str(theirs), str(ours))
    assert ours.read_bytes() == theirs.read_bytes()
    assert "Operation not permitted" in got


def test_explicit_raw_has_no_guard(tmp_path) -> None:
    img = tmp_path / "img"
    img.write_bytes(bytes(4096))
    printed: list[str] = []
    old = set_error_sink(printed.append)
    try:
        assert gqemu_run(str(img), {"format": "raw"}, [("write", 0, 512, QCOW2_HDR)]) == ["ok"]
        other = tmp_path / "other"
        other.write_bytes(bytes(4096))
        assert gqemu_run(str(other), {"readonly": "on"}, [("read", 0, 512, None)]) == ["ok"]
    finally:
        set_error_sink(old)
    assert printed == []                  # no warning: explicit, or read-only
    # The guest's header now makes the image probe as qcow2.
    from gqemu.block import BlockError
    with pytest.raises(BlockError):
        blk_new_open(str(img), {})
