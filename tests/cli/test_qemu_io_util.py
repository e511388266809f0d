"""qemu-io's formatting and parsing helpers, with values taken from QEMU
7.2's qemu-io (the differential tests cover them again end to end)."""
from __future__ import annotations

import errno

import pytest

from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_util import (breakline, cvtnum, cvtstr,
                                    dump_buffer, parse_pattern, print_report,
                                    timestr)


@pytest.mark.parametrize("value, text", [
    (0, "0 bytes"), (1, "1 bytes"), (512, "512 bytes"), (1024, "1 KiB"),
    (1536, "1.500 KiB"), (65536, "64 KiB"), (1 << 20, "1 MiB"),
    (1048575, "1023.999 KiB"), (718.874702, "718.874702 bytes"),
    (3 << 30, "3 GiB"), (1 << 40, "1 TiB"), (1 << 50, "1 PiB"), (7 << 60, "7 EiB"),
    (67108352, "64 MiB"), (67107840, "63.999 MiB"),
])
def test_cvtstr(value: float, text: str) -> None:
    assert cvtstr(value) == text


@pytest.mark.parametrize("ns, fmt, text", [
    (0, 0, "00.00 sec"), (4_000_000, 0, "00.00 sec"), (126_000_000, 0, "00.13 sec"),
    (1_500_000_000, 0, "0:00:01.50"), (3_723_250_000_000, 0, "1:02:03.25"),
    (1_000_000, 2, "0:00:00.00"), (61_000_000_000, 1, "1:01.00"),
    (3_600_000_000_000, 1, "1:00:00.00"),
])
def test_timestr(ns: int, fmt: int, text: str) -> None:
    assert timestr(ns, fmt) == text


@pytest.mark.parametrize("s, value", [
    ("0", 0), ("512", 512), ("1k", 1024), ("1K", 1024), ("1.5k", 1536), ("1.k", 1024),
    ("0x200", 512), ("0X10", 16), ("07", 7), ("+1", 1), ("1b", 1), ("1.", 1),
    ("0.3k", 307), ("1E", 1 << 60), ("9223372036854775807", (1 << 63) - 1),
    ("1.5", -errno.EINVAL), ("1e3", -errno.EINVAL), ("-1", -errno.EINVAL),
    ("1kb", -errno.EINVAL), (".5k", -errno.EINVAL), ("0x", -errno.EINVAL),
    ("0x1.5", -errno.EINVAL), ("", -errno.EINVAL), ("k", -errno.EINVAL),
    ("8E", -errno.ERANGE), ("9223372036854775808", -errno.ERANGE),
    ("18446744073709551616", -errno.ERANGE),
    ("18446744073709551616k", -errno.EINVAL),    # unparsed rest wins
])
def test_cvtnum(s: str, value: int) -> None:
    assert cvtnum(s) == value


def test_hex_suffix_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert cvtnum("0x1k", "xio") == 1024
    assert capsys.readouterr().err == ("xio: warning: Using a multiplier suffix on "
                                       "hex numbers is deprecated: 0x1k\n")


@pytest.mark.parametrize("s, value", [("0", 0), ("255", 255), ("0xff", 255),
                                      ("010", 8), ("-1", -1), ("256", -1),
                                      ("abc", -1), ("0x", -1), ("1x", -1)])
def test_parse_pattern(s: str, value: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_pattern(s) == value
    out = capsys.readouterr().out
    assert out == ("" if value >= 0 else "%s is not a valid pattern byte\n" % s)


def test_dump_buffer(capsys: pytest.CaptureFixture[str]) -> None:
    dump_buffer(bytes(range(0x28, 0x50)) + b"\xff\x00 z", 0x100, 44)
    assert capsys.readouterr().out == (
        "00000100:  28 29 2a 2b 2c 2d 2e 2f 30 31 32 33 34 35 36 37  ........01234567\n"
        "00000110:  38 39 3a 3b 3c 3d 3e 3f 40 41 42 43 44 45 46 47  89.......ABCDEFG\n"
        "00000120:  48 49 4a 4b 4c 4d 4e 4f ff 00 20 7a  HIJKLMNO...z\n")


def test_print_report(capsys: pytest.CaptureFixture[str]) -> None:
    print_report("read", 1_000_000_000, 4096, 512, 512, 1, False)
    print_report("wrote", 500_000_000, 0, 65536, 65536, 1, True)
    assert capsys.readouterr().out == (
        "read 512/512 bytes at offset 4096\n"
        "512 bytes, 1 ops; 0:00:01.00 (512 bytes/sec and 1.0000 ops/sec)\n"
        "65536,1,0:00:00.50,131072.000,2.000\n")


def test_breakline() -> None:
    assert breakline("  read   0\t1  512 ") == ["read", "0\t1", "512"]
    assert breakline("") == []


def _opts(argv: list[str], optstring: str) -> tuple[list, list[str]]:
    g = Getopt(argv, optstring)
    return list(g), g.args


def test_getopt_permutes_and_clusters(capsys: pytest.CaptureFixture[str]) -> None:
    assert _opts(["read", "0", "-qv", "16", "-P5"], "CP:qv") == (
        [("q", None), ("v", None), ("P", "5")], ["0", "16"])
    assert _opts(["read", "-P", "7", "--", "-1", "-v"], "P:v") == (
        [("P", "7")], ["-1", "-v"])
    assert _opts(["read", "-", "1"], "v") == ([], ["-", "1"])
    assert capsys.readouterr().err == ""


def test_getopt_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert _opts(["read", "-x", "0"], "v")[0] == [("?", None)]
    assert _opts(["read", "-P"], "P:")[0] == [("?", None)]
    assert capsys.readouterr().err == ("read: invalid option -- 'x'\n"
                                       "read: option requires an argument -- 'P'\n")


def test_getopt_long(capsys: pytest.CaptureFixture[str]) -> None:
    longopts = {"cmd": (True, "c"), "copy-on-read": (False, "C"),
                "cache": (True, "t"), "read-only": (False, "r")}
    g = Getopt(["x", "--cmd=a b", "--cache", "none", "--read", "f"], "c:Ct:r", longopts)
    assert list(g) == [("c", "a b"), ("t", "none"), ("r", None)]
    assert g.args == ["f"]
    for argv in (["x", "--c"], ["x", "--read-only=1"], ["x", "--foo"], ["x", "--cmd"],
                 ["x", "--c=y"]):
        assert list(Getopt(argv, "c:Ct:r", longopts)) == [("?", None)]
    assert capsys.readouterr().err == (
        "x: option '--c' is ambiguous; possibilities: '--cmd' '--copy-on-read' '--cache'\n"
        "x: option '--read-only' doesn't allow an argument\n"
        "x: unrecognized option '--foo'\n"
        "x: option '--cmd' requires an argument\n"
        # glibc names the word as typed (qemu-io --c=x: real qemu-io's line)
        "x: option '--c=y' is ambiguous; possibilities: '--cmd' '--copy-on-read' '--cache'\n")


def test_internal_error_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """A bug below a command prints one line and fails the run; no traceback."""
    from gqemu.cli import qemu_io, qemu_io_rw

    def boom(*args: object) -> int:
        raise RuntimeError("boom")
    monkeypatch.setattr(qemu_io_rw, "blk_prw", boom)
    img = tmp_path / "t.img"
    img.write_bytes(bytes(4096))
    rc = qemu_io.main(["qemu-io", "-f", "raw", "-c", "read 0 1", "-c", "write -P 1 0 1",
                       str(img)])
    cap = capsys.readouterr()
    assert rc == 1
    assert cap.err == "qemu-io: internal error in 'read': RuntimeError: boom\n"
    assert cap.out.startswith("wrote 1/1 bytes at offset 0\n")
    assert img.read_bytes()[:2] == b"\x01\x00"
