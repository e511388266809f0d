"""Random qemu-io sessions (sync and aio reads, writes, vectored I/O, zero
writes with and without unmap, discards, compressed writes, flushes,
allocation queries; also read/write flags, many vectors, length, info,
truncate, close/open and bad arguments) through qemu-io and gqemu-io on
identical images: same
output, same exit status, same image, and for qcow2 the same ``qemu-img
map`` and ``qemu-img check`` of the result.  The qcow2 sessions also draw
the image: cluster size, extended L2, compat=0.10, a qcow2 or raw backing
file smaller, equal or larger than the overlay, read-only or copy-on-read
opening and blkdebug-injected errors.  Only sequences whose output does not depend on
timing are generated: every aio request is followed by aio_flush.

GQEMU_FUZZ_EXAMPLES=N runs N sessions per case instead of the few that CI
runs, from a random seed (hypothesis prints the failing session).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import qemu_io_corpus_runner as runner  # tests/qemu-io/runner.py, via conftest


def _registered(fmt: str) -> bool:
    from gqemu.block import bdrv_drivers
    return fmt in bdrv_drivers


SIZE = 256 * 1024
_pat = st.sampled_from([0, 0x11, 0x41, 0xcd, 0xff, 7])
_LONG = int(os.environ.get("GQEMU_FUZZ_EXAMPLES", "0"))


def _settings(examples: int) -> settings:
    """CI: a few derandomized sessions; GQEMU_FUZZ_EXAMPLES=N: N random ones."""
    return settings(max_examples=_LONG or examples, deadline=None,
                    derandomize=not _LONG, database=None,
                    phases=(Phase.explicit, Phase.generate),   # report every command
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@st.composite
def _range(draw: st.DrawFn, maxlen: int = 16384, size: int = SIZE,
           cluster: int = 65536) -> tuple[int, int]:
    length = draw(st.one_of(st.integers(0, 600), st.integers(0, maxlen),
                            st.sampled_from([512, 4096, 65536, cluster, 2 * cluster]),
                            st.integers(1, 4).map(lambda n: n * cluster)))
    offset = draw(st.one_of(st.integers(0, size - 1),
                            st.integers(0, size // 512).map(lambda s: s * 512),
                            st.integers(0, size // cluster).map(lambda c: c * cluster),
                            st.integers(size - 2048, size + 16)))
    return offset, length


def _split(length: int, parts: int) -> list[int]:
    cuts = sorted({length * i // parts for i in range(1, parts)})
    sizes, prev = [], 0
    for c in cuts + [length]:
        sizes.append(c - prev)
        prev = c
    return [s for s in sizes if s] or [length]


# arguments qemu-io rejects or clamps: negative, unaligned, huge, malformed
_BAD_NUM = st.sampled_from(["-1", "-512", "1.5k", "0x", "1x", "abc", "8E", "9E",
                            "0x7fffffffffffffff", "4611686018427387904", "2G", "1T",
                            "", "1 2 3"])
_BAD_PAT = st.sampled_from(["-1", "256", "0x100", "x", "0x1ff", "-0", "1k", "0x7f"])


@st.composite
def _other(draw: st.DrawFn, kind: str, off: int, n: int, p: int, size: int,
           cluster: int, opener: str) -> list[str]:
    """Commands and flags the basic kinds do not draw."""
    if kind == "readflags":        # -C prints the short statistics line
        flags = draw(st.sampled_from([" -q", " -C", " -v -q", " -C -q", " -b",
                                      " -v -C"]))
        n = min(n, 80) if "-v" in flags else n
        pat = draw(st.sampled_from(["", " -P %d" % p]))
        return ["read%s%s %d %d" % (flags, pat, off, n)]
    if kind == "writeflags":
        flags = draw(st.sampled_from([" -q", " -C", " -f", " -f -q", " -z -q", " -z -f",
                                      " -u", " -b", " -n", " -C -q"]))
        pat = "" if "-z" in flags else " -P %d" % p
        return ["write%s%s %d %d" % (flags, pat, off, n)]
    if kind == "vectors":          # many vectors, odd sizes, flags
        cmd = draw(st.sampled_from(["readv", "writev", "aio_read", "aio_write"]))
        parts = draw(st.lists(st.one_of(st.integers(1, 600), st.sampled_from(
            [512, 4096, cluster])), min_size=2, max_size=20))
        flags = draw(st.sampled_from(["", " -q", " -C", " -v"] if "read" in cmd
                                     else ["", " -q", " -C"]))
        if flags == " -v":
            parts = parts[:4]
        out = ["%s%s -P %d %d %s" % (cmd, flags, p, off, " ".join(map(str, parts)))]
        return out + (["aio_flush"] if cmd.startswith("aio") else [])
    if kind == "query":
        return [draw(st.sampled_from(["length", "info", "map", "l", "i"]))]
    if kind == "discard_q":
        return ["discard -q %d %d" % (off, n)]
    if kind == "truncate":
        new = draw(st.sampled_from([size, size // 2, size + cluster, size + 512,
                                    off, 0, 2 * size]))
        return ["truncate %d" % new, "length"]
    if kind == "reopen":           # close and open again, flags drawn
        return ["close", "open%s -o driver=%s" % (draw(st.sampled_from(
            ["", " -C", " -r", " -C -r", " -n", " -U"])), opener)]
    # a command with a bad argument, as a session would type it
    cmd = draw(st.sampled_from(["read", "write", "readv", "writev", "write -z",
                                "discard", "alloc", "aio_read", "aio_write",
                                "write -c", "truncate", "read -P", "write -P",
                                "read -s", "read -l"]))
    if cmd.endswith("-P"):
        return ["%s %s %d %d" % (cmd, draw(_BAD_PAT), off, n)]
    if cmd in ("read -s", "read -l"):
        return ["read -P %d %s %s %d %d" % (p, cmd[5:], draw(st.one_of(
            _BAD_NUM, st.integers(0, 2 * n).map(str))), off, n)]
    if cmd == "truncate":
        return ["truncate %s" % draw(_BAD_NUM)]
    args = draw(st.sampled_from([[_BAD_NUM, str(n)], [str(off), _BAD_NUM], [_BAD_NUM],
                                 [], [_BAD_NUM, _BAD_NUM], [str(off)]]))
    line = " ".join([cmd] + [a if isinstance(a, str) else draw(a) for a in args])
    # (an aio request the "bad" arguments still allow must complete here)
    return [line, "aio_flush"] if cmd.startswith("aio") else [line]


_OTHER = ["readflags", "writeflags", "vectors", "query", "discard_q", "truncate",
          "reopen", "bad"]


@st.composite
def _command(draw: st.DrawFn, zero: bool = True, size: int = SIZE,
             cluster: int = 65536, compress: bool = False,
             opener: str = "") -> list[str]:
    kinds = ["write", "write", "read", "readv", "writev", "discard", "aio_write",
             "aio_read", "flush", "dump", "alloc"] + (["zero"] if zero else [])
    kinds += ["compress", "compress", "aio_zero"] if compress else []
    kinds += _OTHER if opener else []
    kind = draw(st.sampled_from(kinds))
    off, n = draw(_range(size=size, cluster=cluster,
                         maxlen=max(16384, 3 * cluster if compress else 16384)))
    p = draw(_pat)
    if kind == "write":
        return ["write -P %d %d %d" % (p, off, n)]
    if kind == "compress":
        return ["write -c -P %d %d %d" % (p, off, n)]
    if kind == "aio_zero":
        return ["aio_write -z%s %d %d" % (draw(st.sampled_from(["", " -u"])), off, n),
                "aio_flush"]
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
    if kind in _OTHER:
        return draw(_other(kind, off, n, p, size, cluster, opener))
    return ["flush"]


@pytest.mark.parametrize("fmt, zero", [
    ("raw", True), ("qcow2", False), ("qcow2", True)])
@_settings(8)
@given(data=st.data())
def test_random_session(fmt: str, zero: bool, qemu_io: str, qemu_img: str,
                        tmp_path_factory: pytest.TempPathFactory,
                        data: st.DataObject) -> None:
    assert _registered(fmt), "the %s driver is not registered in gqemu.block" % fmt
    cmds = data.draw(st.lists(_command(zero, opener="%s test.img" % fmt),
                              min_size=5, max_size=30))
    script = runner.Script(Path("random.qio"), size=str(SIZE),
                           commands=[c for group in cmds for c in group] + ["map"])
    work = tmp_path_factory.mktemp("rand")
    q, g = runner.run_both(script, fmt, qemu_io, qemu_img, work)
    problems = runner.compare(script, fmt, q, g, qemu_img, work)
    assert not problems, "\n".join(problems + script.commands)


# blkdebug events that the commands reach, with the errno injected
_BLKDEBUG_EVENTS = ["write_aio", "read_aio", "l2_alloc_write", "l2_update",
                    "cluster_alloc", "refblock_update_part", "write_compressed",
                    "cluster_zero", "pwritev", "preadv", "flush_to_os"]


@st.composite
def _image(draw: st.DrawFn) -> tuple[runner.Script, int]:
    """A qcow2 image to run a session on: (script without commands, cluster size)."""
    compat = draw(st.sampled_from(["1.1", "1.1", "0.10"]))
    cluster = draw(st.sampled_from([512, 4096, 16384, 65536] if compat == "0.10"
                                   else [512, 4096, 16384, 16384, 65536, 65536, 131072]))
    ext = compat == "1.1" and cluster >= 16384 and draw(st.booleans())
    size = draw(st.sampled_from([SIZE, 4 * cluster, 1 << 20, 3 * cluster + 1536]))
    opts = "compat=%s,cluster_size=%d%s" % (compat, cluster,
                                            ",extended_l2=on" if ext else "")
    if compat == "1.1":                 # other refcount widths, lazy refcounts
        opts += draw(st.sampled_from([""] * 6 + [",refcount_bits=1", ",refcount_bits=2",
                                                 ",refcount_bits=64", ",lazy_refcounts=on"]))
    prep: list[tuple[str, list[str]]] = []
    backing = draw(st.sampled_from([None, None, "qcow2", "raw"]))
    if backing:
        bsize = draw(st.sampled_from([size, size // 2 + 512, size // 3, size * 2]))
        prep.append(("qemu-img", ["create", "-q", "-f", backing, "base.img", str(bsize)]))
        for _ in range(draw(st.integers(0, 4))):
            off, n = draw(_range(size=bsize, cluster=cluster, maxlen=2 * cluster))
            if off + n <= bsize:
                prep.append(("qemu-io", ["-f", backing, "-c", "write -P %d %d %d"
                                         % (draw(_pat), off, n), "base.img"]))
        opts += ",backing_file=base.img,backing_fmt=" + backing
    prep.append(("qemu-img", ["create", "-q", "-f", "qcow2", "-o", opts, "test.img",
                              str(size)]))
    for _ in range(draw(st.integers(0, 3))):           # a prefilled overlay
        off, n = draw(_range(size=size, cluster=cluster, maxlen=2 * cluster))
        kind = draw(st.sampled_from(["-P 9", "-z", "-c -P 5"]))
        if kind.startswith("-c"):                      # whole clusters only
            off, n = off // cluster * cluster, max(1, n // cluster) * cluster
        if off + n <= size:
            prep.append(("qemu-io", ["-f", "qcow2", "-c", "write %s %d %d" % (kind, off, n),
                                     "test.img"]))
    script = runner.Script(Path("random.qio"), size=str(size), prep=prep,
                           prep_check=False)     # e.g. a compressed overwrite fails
    mode = draw(st.sampled_from(["rw"] * 6 + ["ro", "blkdebug", "cor"]))
    if mode == "ro":
        script.args = ["-r"]
    elif mode == "cor":                                # copy-on-read
        script.args = ["-C"]
    elif mode == "blkdebug":
        event = draw(st.sampled_from(_BLKDEBUG_EVENTS))
        script.aux["bd.conf"] = ('[inject-error]\nevent = "%s"\nerrno = "%d"\n'
                                 'once = "%s"\n' % (event, draw(st.sampled_from([5, 28])),
                                                    draw(st.sampled_from(["on", "off"]))))
        script.file = "blkdebug:bd.conf:test.img"
    return script, cluster


@_settings(8)
@given(data=st.data())
def test_random_qcow2_image(qemu_io: str, qemu_img: str,
                            tmp_path_factory: pytest.TempPathFactory,
                            data: st.DataObject) -> None:
    """Random qcow2 images (cluster sizes, extended L2, v2, backing files,
    read-only, blkdebug errors) under random sessions with compressed writes."""
    script, cluster = data.draw(_image())
    size = int(script.size)
    cmds = data.draw(st.lists(_command(True, size, cluster, compress=True,
                                       opener="qcow2 " + script.file),
                              min_size=3, max_size=20))
    script.commands = [c for group in cmds for c in group] + ["map"]
    work = tmp_path_factory.mktemp("randimg")
    q, g = runner.run_both(script, "qcow2", qemu_io, qemu_img, work)
    problems = runner.compare(script, "qcow2", q, g, qemu_img, work)
    assert not problems, "\n".join(
        problems + ["%s %s" % (t, " ".join(a)) for t, a in script.prep]
        + ["file: " + script.file] + ["args: %s" % script.args]
        + ["aux: %r" % script.aux] + script.commands)


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
                     "2G", "8E", "none", "raw", "test.img", "driver=raw", "off",
                     "bogus=1", "file.aio=threads", "nofoo", "a=1,,b", "help",
                     "file.filename=test.img", "offset=512", "read-only=on"]))


@st.composite
def _garbage(draw: st.DrawFn) -> str:
    return " ".join([draw(st.sampled_from(_NAMES))] + draw(st.lists(_TOKENS, max_size=6)))


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@_settings(5)
@given(cmds=st.lists(_garbage(), min_size=5, max_size=25))
def test_random_command_lines(fmt: str, qemu_io: str, qemu_img: str, tmp_path_factory:
                              pytest.TempPathFactory, cmds: list[str]) -> None:
    """Any mix of command names, flags and numbers (bad ones included):
    the same messages, exit status and image as qemu-io, never a traceback."""
    # an aio request that parses completes before the next command: when
    # it lands against a truncate is up to QEMU's worker threads
    cmds = [c for cmd in cmds for c in ([cmd, "aio_flush"] if cmd.startswith("aio_")
                                        and not cmd.startswith("aio_flush") else [cmd])]
    script = runner.Script(Path("garbage.qio"), size="1M", commands=cmds)
    work = tmp_path_factory.mktemp("garbage")
    q, g = runner.run_both(script, fmt, qemu_io, qemu_img, work)
    problems = runner.compare(script, fmt, q, g, qemu_img, work)
    assert not problems, "\n".join(problems + cmds)
