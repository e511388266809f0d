"""Image locking as QEMU >= 2.10 (OFD locks on bytes 100+perm/200+perm):
against a second gqemu open in this process and against a real qemu-io
holding the image open on a pipe.  And read-only opens."""
from __future__ import annotations

import subprocess
from typing import Iterator

import pytest

from gqemu.block import BlockError, blk_new_open, blk_pread, blk_pwrite, blk_unref

pytestmark = pytest.mark.timeout(60)

DEVICE = {"format": "raw", "if": "ide"}        # a guest disk: does not share write
TOOL = {"format": "raw"}                       # as qemu-io: shares everything


@pytest.fixture
def img(make_image):
    return make_image(1 << 20)


class QemuIoHolder:
    """A real qemu-io with the image open, reading commands from a pipe."""

    def __init__(self, qemu_io: str, args: list[str]) -> None:
        self.proc = subprocess.Popen([qemu_io, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.proc.stdin.write("read 0 512\n")       # type: ignore[union-attr]
        self.proc.stdin.flush()                     # type: ignore[union-attr]
        line = self.proc.stdout.readline()          # type: ignore[union-attr]
        assert "read 512/512 bytes at offset 0" in line, \
            (line, self.proc.stderr.read())         # type: ignore[union-attr]

    def command(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")           # type: ignore[union-attr]
        self.proc.stdin.flush()                     # type: ignore[union-attr]
        return self.proc.stdout.readline()          # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()                     # type: ignore[union-attr]
        self.proc.wait(timeout=30)


@pytest.fixture
def holder(qemu_io) -> Iterator:
    made: list[QemuIoHolder] = []

    def make(args: list[str]) -> QemuIoHolder:
        h = QemuIoHolder(qemu_io, args)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def expect_lock_error(path, opts: dict, what: str) -> None:
    with pytest.raises(BlockError) as e:
        blk_new_open(str(path), opts)
    assert str(e.value) == what
    assert e.value.hint == "Is another process using the image [%s]?" % path


def test_two_gqemu_devices_conflict(img) -> None:
    a = blk_new_open(str(img), DEVICE)
    expect_lock_error(img, DEVICE, 'Failed to get "write" lock')
    expect_lock_error(img, TOOL, 'Failed to get "write" lock')
    # A tool reader takes no perm that the device refuses to share...
    r = blk_new_open(str(img), {**TOOL, "readonly": "on"})
    blk_unref(r)
    # ...but a device reader does not share write, which the device uses.
    expect_lock_error(img, {**DEVICE, "readonly": "on"},
                      'Failed to get shared "write" lock')
    b = blk_new_open(str(img), {**TOOL, "readonly": "on"})
    assert blk_pread(b, 0, 4) == img.read_bytes()[:4]
    blk_unref(b)
    blk_unref(a)
    c = blk_new_open(str(img), DEVICE)          # the locks went with the fd
    blk_unref(c)


def test_two_tool_opens_share(img) -> None:
    a = blk_new_open(str(img), TOOL)
    b = blk_new_open(str(img), TOOL)
    blk_pwrite(a, 0, b"A")
    assert blk_pread(b, 0, 1) == b"A"
    blk_unref(a)
    blk_unref(b)


def test_share_rw_on_allows_two_writers(img) -> None:
    a = blk_new_open(str(img), {**DEVICE, "share-rw": "on"})
    b = blk_new_open(str(img), {**DEVICE, "share-rw": "on"})
    blk_unref(a)
    blk_unref(b)


def test_locking_off(img) -> None:
    a = blk_new_open(str(img), DEVICE)
    b = blk_new_open(str(img), {**DEVICE, "file.locking": "off"})
    blk_unref(b)
    blk_unref(a)


def test_gqemu_device_locks_out_qemu_io(img, qemu_io) -> None:
    blk = blk_new_open(str(img), DEVICE)
    r = subprocess.run([qemu_io, "-f", "raw", "-c", "write 0 512", str(img)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr == ("qemu-io: can't open device %s: Failed to get \"write\" lock\n"
                        "Is another process using the image [%s]?\n" % (img, img))
    r = subprocess.run([qemu_io, "-r", "-f", "raw", "-c", "read 0 512", str(img)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("read 512/512 bytes at offset 0")
    blk_unref(blk)
    r = subprocess.run([qemu_io, "-f", "raw", "-c", "write 0 512", str(img)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_qemu_io_holding_locks_out_gqemu(img, holder) -> None:
    h = holder(["-f", "raw", str(img)])
    expect_lock_error(img, DEVICE, 'Failed to get shared "write" lock')
    b = blk_new_open(str(img), TOOL)        # qemu-io shares all with raw
    blk_unref(b)
    h.close()
    blk_unref(blk_new_open(str(img), DEVICE))


def test_qemu_io_qcow2_holder_locks_out_gqemu_writer(tmp_path, qemu_img, holder) -> None:
    q = tmp_path / "img.qcow2"
    subprocess.run([qemu_img, "create", "-f", "qcow2", str(q), "1M"], check=True,
                   capture_output=True)
    holder(["-r", "-f", "qcow2", str(q)])      # a qcow2 reader unshares write
    expect_lock_error(q, {"driver": "file"}, 'Failed to get "write" lock')
    blk_unref(blk_new_open(str(q), {"driver": "file", "readonly": "on"}))


def test_read_only_open(img) -> None:
    img.chmod(0o444)
    blk = blk_new_open(str(img), {"format": "raw", "readonly": "on"})
    assert blk.root.bs.file.bs.opaque.open_flags & 3 == 0       # O_RDONLY
    with pytest.raises(BlockError) as e:
        blk_pwrite(blk, 0, b"x")
    assert str(e.value) == "Operation not permitted"
    blk_unref(blk)
