"""Random qemu-io sessions (sync and aio reads, writes, vectored I/O, zero
writes, discards, flushes, allocation queries) through qemu-io and gqemu-io
on identical images: same output, same exit status, same image.  Only
sequences whose output does not depend on timing are generated: every aio
request is followed by aio_flush."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import qemu_io_corpus_runner as runner  # tests/qemu-io/runner.py, via conftest


def _registered(fmt: str) -> bool:
    from gqemu.block import bdrv_drivers
    return fmt in bdrv_drivers


SIZE = 256 * 1024
_pat = st.sampled_from([0, 0x11, 0x41, 0xcd, 0xff, 7])


@st.composite
def _range(draw: st.DrawFn, maxlen: int = 16384) -> tuple[int, int]:
    length = draw(st.one_of(st.integers(0, 600), st.integers(0, maxlen),
                            st.sampled_from([512, 4096, 65536])))
    offset = draw(st.one_of(st.integers(0, SIZE - 1),
                            st.integers(0, SIZE // 512).map(lambda s: s * 512),
                            st.integers(SIZE - 2048, SIZE + 16)))
    return offset, length


def _split(length: int, parts: int) -> list[int]:
    cuts = sorted({length * i // parts for i in range(1, parts)})
    sizes, prev = [], 0
    for c in cuts + [length]:
        sizes.append(c - prev)
        prev = c
    return [s for s in sizes if s] or [length]


@st.composite
def _command(draw: st.DrawFn, zero: bool = True) -> list[str]:
    kinds = ["write", "write", "read", "readv", "writev", "discard", "aio_write",
             "aio_read", "flush", "dump", "alloc"] + (["zero"] if zero else [])
    kind = draw(st.sampled_from(kinds))
    off, n = draw(_range())
    p = draw(_pat)
    if kind == "write":
        return ["write -P %d %d %d" % (p, off, n)]
    if kind == "read":
        return ["read -P %d %d %d" % (p, off, n)]
    if kind == "dump":
        return ["read -v %d %d" % (off, min(n, 80))]
    if kind in ("readv", "writev"):
        parts = " ".join(map(str, _split(n, draw(st.integers(1, 4)))))
        return ["%s -P %d %d %s" % (kind, p, off, parts)]
    if kind == "zero":
        return ["write -z%s %d %d" % (draw(st.sampled_from(["", " -u"])), off, n)]
    if kind == "discard":
        return ["discard %d %d" % (off, n)]
    if kind in ("aio_write", "aio_read"):
        return ["%s -P %d %d %d" % (kind, p, off, n), "aio_flush"]
    if kind == "alloc":
        return ["alloc %d %d" % (off, n)]
    return ["flush"]


@pytest.mark.parametrize("fmt, zero", [
    ("raw", True), ("qcow2", False), ("qcow2", True)])
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),      # the report lists all commands
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_session(fmt: str, zero: bool, qemu_io: str, qemu_img: str,
                        tmp_path_factory: pytest.TempPathFactory,
                        data: st.DataObject) -> None:
    assert _registered(fmt), "the %s driver is not registered in gqemu.block" % fmt
    cmds = data.draw(st.lists(_command(zero), min_size=5, max_size=30))
    script = runner.Script(Path("random.qio"), size=str(SIZE),
                           commands=[c for group in cmds for c in group] + ["map"])
    work = tmp_path_factory.mktemp("rand")
    q, g = runner.run_both(script, fmt, qemu_io, qemu_img, work)
    problems = runner.compare(script, fmt, q, g, qemu_img, work)
    assert not problems, "\n".join(problems + script.commands)


_NAMES = ["read", "r", "readv", "write", "w", "writev", "aio_read", "aio_write",
          "aio_flush", "flush", "f", "discard", "d", "length", "l", "info", "i", "map",
          "alloc", "a", "help", "?", "open", "o", "close", "c", "truncate", "t",
          "reopen", "break", "remove_break", "resume", "q", "quit", "bogus"]
_TOKENS = st.one_of(
    st.sampled_from(["-P", "-v", "-q", "-C", "-z", "-u", "-f", "-n", "-c", "-b", "-s",
                     "-l", "-r", "-w", "-p", "-x", "-i", "-o", "-t", "-m", "--", "-",
                     "-Pq", "-qv"]),
    st.integers(0, 1100000).map(str),
    st.sampled_from(["1k", "4k", "0x200", "1.5k", "64k", "1M", "1x", "-1", "512", "0",
                     "2G", "8E", "none", "raw", "test.img", "driver=raw", "off"]))


@st.composite
def _garbage(draw: st.DrawFn) -> str:
    return " ".join([draw(st.sampled_from(_NAMES))] + draw(st.lists(_TOKENS, max_size=6)))


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmds=st.lists(_garbage(), min_size=5, max_size=25))
def test_random_command_lines(qemu_io: str, qemu_img: str, tmp_path_factory:
                              pytest.TempPathFactory, cmds: list[str]) -> None:
    """Any mix of command names, flags and numbers (bad ones included):
    the same messages, exit status and image as qemu-io, never a traceback."""
    script = runner.Script(Path("garbage.qio"), size="1M", commands=cmds)
    work = tmp_path_factory.mktemp("garbage")
    q, g = runner.run_both(script, "raw", qemu_io, qemu_img, work)
    problems = runner.compare(script, "raw", q, g, qemu_img, work)
    assert not problems, "\n".join(problems + cmds)
