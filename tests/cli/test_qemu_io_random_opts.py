"""Random qemu-io sessions, second generator: the tool's own options and
the argument forms a user types, through qemu-io and gqemu-io on identical
raw and qcow2 images (same output, exit status and image; runner.compare).

What it draws that test_qemu_io_random does not:
- tool options: ``-t`` cache modes, ``-n``, ``-k``, ``-i threads|native|io_uring``,
  ``-d`` discard modes, ``-r``, ``-U``, ``-C``, ``-s``, ``-m``, ``--image-opts``
  with node options, a ``blkdebug::`` file (break/wait_break/resume/remove_break);
- the session on stdin (interactive mode) instead of ``-c``;
- numbers as k/K/M/G/T/P/E suffixes, hex, octal-looking, fractions, ``+N``,
  ``Nb``, zero lengths and overflowing values;
- every command's flags, valid and invalid together: ``read -p -s -l -b``,
  ``write -s FILE -n -u -f -c -z -b``, ``aio_read/aio_write -i -q -C -v -z -u -f``,
  ``discard -C -q``, ``truncate -m``, ``sleep``, ``help CMD``, ``open`` with its
  options, ``reopen -r -w -c -o``, ``close`` and commands after it, unknown
  commands, extra spaces.
Each aio request is completed (aio_flush) before the next command, so the
output does not depend on timing.

GQEMU_FUZZ_EXAMPLES=N runs N sessions per case, e.g.
``GQEMU_FUZZ_EXAMPLES=200 python -m pytest -p no:timeout
tests/cli/test_qemu_io_random_opts.py --hypothesis-seed=400``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import qemu_io_corpus_runner as runner  # tests/qemu-io/runner.py, via conftest

SIZE = 1 << 20
_LONG = int(os.environ.get("GQEMU_FUZZ_EXAMPLES", "0"))
_SETTINGS = settings(max_examples=_LONG or 6, deadline=None, derandomize=not _LONG,
                     database=None, phases=(Phase.explicit, Phase.generate),
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
_SUFFIX = [(1 << 60, "E"), (1 << 50, "P"), (1 << 40, "T"), (1 << 30, "G"),
           (1 << 20, "M"), (1 << 10, "k"), (1 << 10, "K")]


@st.composite
def _num(draw: st.DrawFn, value: int) -> str:
    """``value`` written as a user might: plain, hex, with a suffix, or an
    odd form qemu-io takes or refuses."""
    forms = [str(value), str(value), hex(value), "%db" % value, "+%d" % value]
    forms += ["%d%s" % (value // m, s) for m, s in _SUFFIX if value and value % m == 0]
    forms += ["%g%s" % (value / m, s) for m, s in _SUFFIX[:-1]
              if value and value % (m // 2) == 0 and value % m]
    forms += ["0%d" % value, "%dB" % value]
    return draw(st.sampled_from(forms))


_ODD = st.sampled_from(["-1", "0x", "1x", "k", "1.5", "0.3k", "1e3", "9E", "8E", "16E",
                        "0x8000000000000000", "18446744073709551616", "2147483648",
                        "2G", "4G", "1T", " ", "-0", "0b", "1kk", "0x10k"])


@st.composite
def _range(draw: st.DrawFn) -> tuple[str, str]:
    off = draw(st.one_of(st.integers(0, SIZE // 512).map(lambda s: s * 512),
                         st.integers(0, SIZE), st.sampled_from([0, SIZE - 512, SIZE])))
    n = draw(st.one_of(st.sampled_from([0, 512, 1024, 4096, 65536, 131072]),
                       st.integers(0, 70000)))
    if draw(st.integers(0, 9)) == 0:
        return (draw(_ODD), str(n)) if draw(st.booleans()) else (str(off), draw(_ODD))
    return draw(_num(off)), draw(_num(n))


_PAT = st.sampled_from(["0", "0x5a", "255", "7", "0xcd", "077", "256", "-1", "x"])


@st.composite
def _rw(draw: st.DrawFn) -> list[str]:
    cmd = draw(st.sampled_from(["read", "write", "aio_read", "aio_write", "readv",
                                "writev", "discard", "alloc", "r", "w", "d", "a"]))
    off, n = draw(_range())
    name = {"r": "read", "w": "write", "d": "discard", "a": "alloc"}.get(cmd, cmd)
    flags = {"read": "abCqvpl", "write": "bcCfnpquz", "aio_read": "Ciqv",
             "aio_write": "Cfiquz", "readv": "Cqv", "writev": "Cfq",
             "discard": "Cq", "alloc": ""}[name]
    picked = draw(st.lists(st.sampled_from(list(flags + "x")), max_size=3, unique=True)) \
        if flags else []
    parts = [cmd] + ["-" + f for f in picked if f not in "lx"]
    if "x" in picked:                                  # one no command knows
        parts.append(draw(st.sampled_from(["-x", "-Z", "--", "-"])))
    if "v" in picked and n.isdigit() and int(n) > 256:
        n = "256"
    if "z" not in picked and name in ("read", "write", "aio_read", "aio_write",
                                      "readv", "writev") and draw(st.booleans()):
        parts += ["-P", draw(_PAT)]
        if name == "read" and draw(st.integers(0, 3)) == 0:
            parts += [draw(st.sampled_from(["-s", "-l"])), draw(_num(draw(
                st.sampled_from([0, 1, 256, 511, 512, 4096]))))]
    elif name == "write" and draw(st.integers(0, 4)) == 0:
        parts += ["-s", draw(st.sampled_from(["src.bin", "missing.bin"]))]
    parts += [off, n]
    if name in ("readv", "writev", "aio_read", "aio_write") and draw(st.booleans()):
        parts += [draw(_num(v)) for v in draw(st.lists(st.sampled_from(
            [512, 1024, 4096, 0, 100]), min_size=1, max_size=5))]
    if name == "alloc" and draw(st.booleans()):
        parts = parts[:-1]                             # alloc's count is optional
    line = " ".join(parts)
    if draw(st.integers(0, 9)) == 0:
        line = "  " + line.replace(" ", "   ") + " "
    return [line, "aio_flush"] if name.startswith("aio") else [line]


_OPEN_FLAGS = st.lists(st.sampled_from(
    ["-r", "-s", "-C", "-n", "-k", "-U", "-t none", "-t writeback", "-t unsafe",
     "-t directsync", "-t bogus", "-d ignore", "-d unmap", "-d off", "-d on",
     "-d bogus", "-i threads", "-i native", "-i io_uring", "-i bogus", "-x"]),
    max_size=3, unique=True)
_NODE_OPTS = st.sampled_from(["", ",discard=ignore", ",cache.direct=on",
                              ",cache.no-flush=on", ",detect-zeroes=on",
                              ",detect-zeroes=unmap", ",read-only=on", ",bogus=1",
                              ",cache=none", ",file.locking=off", ",file.aio=io_uring",
                              ",auto-read-only=on", ",node-name=top"])


@st.composite
def _misc(draw: st.DrawFn, fmt: str) -> list[str]:
    kind = draw(st.sampled_from(["open", "reopen", "close", "truncate", "sleep", "help",
                                 "query", "unknown", "flush"]))
    if kind == "open":
        return ["close", "open %s -o driver=%s%s test.img" % (
            " ".join(draw(_OPEN_FLAGS)), fmt, draw(_NODE_OPTS))]
    if kind == "reopen":
        flags = draw(st.lists(st.sampled_from(
            ["-r", "-w", "-c none", "-c writeback", "-c unsafe", "-c bogus",
             "-o discard=ignore", "-o cache.direct=on", "-o bogus=1",
             "-o detect-zeroes=on", "-o read-only=on", "-x"]), max_size=2, unique=True))
        return ["reopen " + " ".join(flags)]
    if kind == "close":
        return ["close"]
    if kind == "truncate":
        mode = draw(st.sampled_from(["", "-m off ", "-m full ", "-m falloc ",
                                     "-m metadata ", "-m bogus "]))
        return ["truncate %s%s" % (mode, draw(_num(draw(st.sampled_from(
            [SIZE, SIZE // 2, SIZE + 512, SIZE + 65536, 0, 3 * SIZE])))))]
    if kind == "sleep":
        return ["sleep " + draw(st.sampled_from(["0", "1", "5", "x", "-1", "1k"]))]
    if kind == "help":
        return ["help " + draw(st.sampled_from(
            ["read", "write", "aio_read", "open", "reopen", "map", "sleep", "break",
             "truncate", "bogus", "?", "help", "q"]))]
    if kind == "query":
        return [draw(st.sampled_from(["map", "length", "info", "alloc 0", "l", "i"]))]
    if kind == "unknown":
        return [draw(st.sampled_from(["bogus", "READ 0 512", "read0 512", "x",
                                      "aio_flush x"]))]
    return [draw(st.sampled_from(["flush", "f", "aio_flush"]))]


@st.composite
def _breaks(draw: st.DrawFn, fmt: str) -> list[str]:
    """A request stopped at a blkdebug breakpoint and resumed.  Only events
    the request surely reaches (QEMU's wait_break waits forever, and an
    aio_flush behind a request nobody resumes too): the session's first
    commands, on a writable image; reads only on raw."""
    events = ["write_aio", "pwritev"] + (["read_aio"] if fmt == "raw" else [])
    event = draw(st.sampled_from(events))
    req = "aio_write -P 3 0 512" if "write" in event else "aio_read 0 512"
    out = ["break %s A" % event, req, "wait_break A"]
    out += draw(st.sampled_from([["resume A"], ["resume B", "resume A"],
                                 ["remove_break A", "resume A"]]))
    return out + ["aio_flush", "remove_break A"]


@st.composite
def _session(draw: st.DrawFn, fmt: str) -> runner.Script:
    s = runner.Script(Path("random_opts.qio"), size=str(SIZE))
    args = draw(st.lists(st.sampled_from(
        ["-r", "-C", "-s", "-m", "-d ignore", "-d unmap", "-r -U"]), max_size=2, unique=True))
    cache = draw(st.sampled_from(["", "", "-n", "-t none", "-t writeback", "-t unsafe",
                                  "-t directsync", "-t writethrough"]))
    aio = draw(st.sampled_from(["", "", "-i threads", "-i io_uring"] + (
        ["-k", "-i native"] if "none" in cache or "-n" in cache or "directsync" in cache
        or draw(st.integers(0, 9)) == 0 else [])))
    s.args = [a for arg in args + [cache, aio] for a in arg.split()]
    blkdebug = draw(st.integers(0, 5)) == 0
    if blkdebug:
        s.file = "blkdebug::test.img"
    elif draw(st.integers(0, 5)) == 0:
        s.args = [a for a in s.args if a not in ("-f",)]
        s.args += ["--image-opts"]
        s.file = "driver=%s,file.filename=test.img%s" % (fmt, draw(_NODE_OPTS))
    if fmt == "qcow2" and draw(st.booleans()):
        s.setup.append("write -P 0x22 0 128k")
    cmds = draw(st.lists(st.one_of([_rw()] * 4 + [_misc(fmt)]), min_size=3, max_size=15))
    s.stdin = draw(st.integers(0, 3)) == 0
    if blkdebug and not {"-r", "-s", "-U", "-k", "native", "io_uring"} & set(s.args) \
            and not s.stdin:
        # (not on stdin: there qemu-io's main loop waits for input and for the
        # resumed request at once, and which comes first is up to the threads;
        # not with Linux AIO or io_uring, which QEMU may complete inside the
        # resume -- gqemu runs them on the thread pool)
        cmds.insert(0, draw(_breaks(fmt)))
    s.commands = [c for group in cmds for c in group]
    return s


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@_SETTINGS
@given(data=st.data())
def test_random_options_session(fmt: str, qemu_io: str, qemu_img: str,
                                tmp_path_factory: pytest.TempPathFactory,
                                data: st.DataObject) -> None:
    script = data.draw(_session(fmt))
    script.aux["src.bin"] = "".join(chr(65 + i % 26) for i in range(
        data.draw(st.sampled_from([100, 512, 4096]), label="src.bin size")))
    work = tmp_path_factory.mktemp("ropts")
    q, g = runner.run_both(script, fmt, qemu_io, qemu_img, work)
    problems = runner.compare(script, fmt, q, g, qemu_img, work)
    assert not problems, "\n".join(
        problems + ["args: %s %s" % (" ".join(script.args), script.file),
                    "stdin: %s" % script.stdin] + script.commands)
