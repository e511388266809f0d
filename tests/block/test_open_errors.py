"""Bad input gives BlockError with one line, the message real qemu-io prints
for the same input (checked by running it), and touches nothing."""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile

import pytest

from gqemu.block import BlockError, blk_new_open, blk_pread, blk_prw, blk_unref

pytestmark = pytest.mark.timeout(60)


def qemu_io_error(qemu_io: str, args: list[str]) -> str:
    r = subprocess.run([qemu_io, *args, "-c", "read 0 512"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r
    return r.stderr


def open_error(filename: str, options: dict) -> BlockError:
    with pytest.raises(BlockError) as e:
        blk_new_open(filename, options)
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return e.value


def test_missing_file(tmp_path, qemu_io) -> None:
    p = str(tmp_path / "nope.img")
    err = open_error(p, {"format": "raw"})
    assert err.errno == errno.ENOENT
    assert str(err) == "Could not open '%s': No such file or directory" % p
    assert "can't open device %s: %s\n" % (p, err) in qemu_io_error(qemu_io, ["-f", "raw", p])
    assert not os.path.exists(p)


def test_directory(tmp_path, qemu_io) -> None:
    err = open_error(str(tmp_path), {"format": "raw"})
    assert err.errno == errno.EISDIR
    assert "can't open device %s: %s\n" % (tmp_path, err) in \
        qemu_io_error(qemu_io, ["-f", "raw", str(tmp_path)])
    # read-only, open(2) succeeds on a directory; QEMU then wants a regular file
    err = open_error(str(tmp_path), {"format": "raw", "readonly": "on"})
    assert err.errno == errno.EINVAL
    assert "can't open device %s: %s\n" % (tmp_path, err) in \
        qemu_io_error(qemu_io, ["-r", "-f", "raw", str(tmp_path)])


def test_no_permission() -> None:
    d = tempfile.mkdtemp(prefix="gqemu-perm-", dir="/var/tmp")
    img = os.path.join(d, "img.raw")
    try:
        with open(img, "wb") as f:
            f.write(bytes(4096))
        os.chmod(img, 0o400)
        os.chmod(d, 0o755)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:                        # child: drop rights if root
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                try:
                    blk_new_open(img, {"format": "raw"})
                    out = "opened"
                except BlockError as e:
                    out = "%d %s" % (e.errno, e)
                except BaseException as e:  # noqa: BLE001
                    out = "exception %r" % e
                os.write(wfd, out.encode())
            finally:
                os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd) as f:
            got = f.read()
        os.waitpid(pid, 0)
        assert got == "%d Could not open '%s': Permission denied" % (errno.EACCES, img)
    finally:
        os.chmod(img, 0o600)
        os.unlink(img)
        os.rmdir(d)


def test_unknown_format(make_image, qemu_io) -> None:
    img = make_image(4096)
    err = open_error(str(img), {"format": "foo"})
    assert str(err) == "Unknown driver 'foo'"
    assert str(err) in qemu_io_error(qemu_io, ["-f", "foo", str(img)])


@pytest.mark.parametrize("opts,image_opts", [
    ({"format": "raw", "foo": "bar"}, "driver=raw,file.filename={},foo=bar"),
    ({"format": "raw", "file.foo": "bar"}, "driver=raw,file.filename={},file.foo=bar"),
    ({"format": "raw", "offset": "2M"}, "driver=raw,file.filename={},offset=2M"),
    ({"format": "raw", "size": "1000"}, "driver=raw,file.filename={},size=1000"),
    ({"format": "raw", "offset": "512", "size": "1M"},
     "driver=raw,file.filename={},offset=512,size=1M"),
    ({"format": "raw", "offset": "abc"}, "driver=raw,file.filename={},offset=abc"),
    ({"format": "raw", "offset": "-1"}, "driver=raw,file.filename={},offset=-1"),
])
def test_bad_driver_options(make_image, qemu_io, opts: dict, image_opts: str) -> None:
    img = make_image(1 << 20)
    before = img.read_bytes()
    err = open_error(str(img), opts)
    assert err.errno == errno.EINVAL
    stderr = qemu_io_error(qemu_io, ["--image-opts", image_opts.format(img)])
    assert stderr.startswith("qemu-io: can't open: %s\n" % err)
    assert img.read_bytes() == before


@pytest.mark.parametrize("opts,msg", [
    ({"cache": "sometimes"}, "invalid cache option"),
    ({"readonly": "maybe"}, "Parameter 'readonly' expects 'on' or 'off'"),
    ({"werror": "explode"}, "'explode' invalid write error action"),
    ({"discard": "always"}, "Invalid discard option"),
    ({"aio": "native"}, "aio=native was specified, but it requires cache.direct=on, "
     "which was not specified."),
    ({"file.aio": "bogus"}, "invalid parameter value: bogus"),
    ({"file.locking": "perhaps"}, "invalid parameter value: perhaps"),
])
def test_bad_drive_options(make_image, opts: dict, msg: str) -> None:
    img = make_image(4096)
    err = open_error(str(img), {"format": "raw", **opts})
    assert str(err) == msg


@pytest.mark.parametrize("offset,count", [(-1, 1), (-(1 << 63), 512), (1 << 63, 512),
                                          ((1 << 20) - 511, 512), (0, 1 << 31)])
def test_bad_offsets(make_image, offset: int, count: int) -> None:
    img = make_image(1 << 20)
    blk = blk_new_open(str(img), {"format": "raw"})
    with pytest.raises(BlockError) as e:
        blk_pread(blk, offset, count if count < (1 << 24) else 1) if count < (1 << 24) \
            else blk_prw(blk, offset, bytearray(1), count, False)
    assert e.value.errno == errno.EIO and str(e.value) == "Input/output error"
    with pytest.raises(BlockError) as e:
        blk_prw(blk, offset, bytearray(1), count, True)
    assert e.value.errno == errno.EIO and str(e.value) == "Input/output error"
    blk_unref(blk)


def test_failed_open_leaves_no_fd_or_lock(make_image) -> None:
    img = make_image(1 << 20)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        open_error(str(img), {"format": "raw", "size": "1000"})
    assert len(os.listdir("/proc/self/fd")) == fds
    blk = blk_new_open(str(img), {"format": "raw", "share-rw": "off"})
    blk_unref(blk)
