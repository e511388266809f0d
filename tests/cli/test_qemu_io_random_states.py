"""Random qemu-io sessions, third generator: image states and ways of
naming an image the other two do not draw, through qemu-io and gqemu-io
(same output, exit status and image; runner.compare).

States:
- backing chains two or three deep (qcow2, qcow, raw layers of differing
  sizes, each partly written with data, zero and compressed clusters or
  discarded);
- qcow2 with cluster sizes 512 to 2M, refcount_bits 1 to 64, lazy
  refcounts, extended L2, zstd compression, preallocation, an external data
  file (``data_file_raw`` too) and internal snapshots made by qemu-img
  (created, applied, deleted);
- qcow (version 1) images;
- raw images whose size is not a multiple of 512;
- null-co (``read-zeroes`` on and off), ``json:`` file names (raw with
  offset/size, qcow2 over blkdebug), filters over qcow2 (copy-on-read,
  compress) with ``--image-opts``, and a format that does not match the
  image (``-f raw`` on qcow2, ``-f qcow2`` on raw).
Commands: data/zero/compressed writes, reads with ``-v`` hex dumps and
patterns, readv, alloc and map everywhere, offsets near the end of the image
and near 2^63, misaligned lengths, several ``aio_write -q`` in flight before
one ``aio_flush`` (raw only: on qcow2 their completion order decides the
host offsets), truncate.

GQEMU_FUZZ_EXAMPLES=N runs N sessions per test, e.g.
``GQEMU_FUZZ_EXAMPLES=200 python -m pytest -p no:timeout
tests/cli/test_qemu_io_random_states.py --hypothesis-seed=1``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import qemu_io_corpus_runner as runner  # tests/qemu-io/runner.py, via conftest

_LONG = int(os.environ.get("GQEMU_FUZZ_EXAMPLES", "0"))
_SETTINGS = settings(max_examples=_LONG or 3, deadline=None, derandomize=not _LONG,
                     database=None, phases=(Phase.explicit, Phase.generate),
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
_PAT = st.sampled_from([0, 0x11, 0x5a, 0xcd, 0xff, 3])
_HUGE = (1 << 63) - 512


@st.composite
def _range(draw: st.DrawFn, size: int, cluster: int = 65536) -> tuple[int, int]:
    n = draw(st.one_of(st.integers(1, 700), st.integers(0, 3 * cluster),
                       st.sampled_from([512, 4096, cluster, 2 * cluster, 1, 0]),
                       st.integers(1, 3).map(lambda k: k * cluster)))
    off = draw(st.one_of(st.integers(0, max(size - 1, 0)),
                         st.integers(0, size // 512).map(lambda s: s * 512),
                         st.integers(0, size // cluster).map(lambda c: c * cluster),
                         st.integers(max(size - 1024, 0), size + 600),
                         st.sampled_from([_HUGE, (1 << 63) - 1, _HUGE - 65536,
                                          (1 << 62), 1 << 40])))
    return off, n


def _prefill(draw: st.DrawFn, fmt: str, name: str, size: int, cluster: int,
             compress: bool) -> list[tuple[str, list[str]]]:
    """Some qemu-io writes on a layer: data, zeroes, compressed, discards."""
    kinds = ["-P %d" % draw(_PAT), "-P 9", "-z", "-z -u", "discard"]
    kinds += ["-c -P 5"] * 2 if compress else []
    cmds = []
    for _ in range(draw(st.integers(0, 4))):
        off, n = draw(_range(size, cluster))
        if off + n > size:
            continue
        kind = draw(st.sampled_from(kinds))
        if kind.startswith("-c"):              # whole clusters only
            off, n = off // cluster * cluster, max(1, n // cluster) * cluster
            if off + n > size:
                continue
        cmds.append("discard %d %d" % (off, n) if kind == "discard"
                    else "write %s %d %d" % (kind, off, n))
    if not cmds:
        return []
    return [("qemu-io", ["-f", fmt] + [a for c in cmds for a in ("-c", c)] + [name])]


_SIZES = [1 << 20, 256 * 1024, 3 * 65536 + 1536, 4 << 20, 65536, 1 << 19]


@st.composite
def _chain(draw: st.DrawFn) -> tuple[runner.Script, str, int, int]:
    depth = draw(st.integers(2, 3))
    top = draw(st.sampled_from(["qcow2", "qcow2", "qcow2", "qcow"]))
    cluster = draw(st.sampled_from([512, 4096, 65536, 65536])) if top == "qcow2" else 4096
    prep: list[tuple[str, list[str]]] = []
    below: tuple[str, str] | None = None
    size = 0
    for i in range(depth):
        last = i == depth - 1
        name = "test.img" if last else "l%d.img" % i
        fmt = top if last else draw(st.sampled_from(["qcow2", "qcow2", "raw", "qcow"]))
        args = ["create", "-q", "-f", fmt]
        if fmt == "qcow2":
            args += ["-o", "cluster_size=%d" % (cluster if last else draw(
                st.sampled_from([512, 65536, 2 << 20])))]
        if below:
            args += ["-b", below[0], "-F", below[1]]
        args.append(name)
        if not below or not draw(st.booleans()):   # else the backing file's size
            size = draw(st.sampled_from(_SIZES))
            args.append(str(size))
        prep.append(("qemu-img", args))
        prep += _prefill(draw, fmt, name, size, cluster, fmt == "qcow2")
        below = (name, fmt)
    s = runner.Script(Path("random_states.qio"), size=str(size), prep=prep,
                      prep_check=False)
    if top == "qcow" or cluster < 4096:
        # (a known difference: after reopen -c none QEMU puts each new
        # cluster smaller than 4k on its own 4k; see the report)
        s.skip = ("reopen -c none",)  # type: ignore[attr-defined]
    if draw(st.integers(0, 4)) == 0 and size % cluster == 0:   # (as in _qcow2_opts)
        s.args = ["-C"]
    elif draw(st.integers(0, 4)) == 0:
        s.args = ["-r"]
    return s, top, size, cluster


@st.composite
def _qcow2_opts(draw: st.DrawFn) -> tuple[runner.Script, str, int, int]:
    cluster = draw(st.sampled_from([512, 1024, 2048, 4096, 8192, 32768, 65536,
                                    262144, 1 << 20, 2 << 20]))
    size = draw(st.sampled_from(_SIZES + [3 * cluster + 1024]))
    opts = ["cluster_size=%d" % cluster]
    opts += [draw(st.sampled_from(["", "refcount_bits=1", "refcount_bits=2",
                                   "refcount_bits=4", "refcount_bits=8",
                                   "refcount_bits=32", "refcount_bits=64"]))]
    opts += [draw(st.sampled_from(["", "", "lazy_refcounts=on", "compression_type=zstd"]))]
    if cluster >= 16384 and draw(st.booleans()):
        opts.append("extended_l2=on")
    data_file = draw(st.integers(0, 3)) == 0
    if data_file:
        opts += ["data_file=data.raw"] + (["data_file_raw=on"] if draw(st.booleans())
                                          else [])
    else:
        opts.append(draw(st.sampled_from(["", "", "", "preallocation=metadata",
                                          "preallocation=falloc"])))
    prep = [("qemu-img", ["create", "-q", "-f", "qcow2", "-o",
                          ",".join(o for o in opts if o), "test.img", str(size)])]
    bitmaps = draw(st.lists(st.sampled_from(["b0", "b1"]), unique=True, max_size=2))
    for name in bitmaps:
        prep.append(("qemu-img", ["bitmap", "--add"] + draw(st.sampled_from(
            [[], ["-g", "131072"], ["--disable"]])) + ["test.img", name]))  # persistent
    prep += _prefill(draw, "qcow2", "test.img", size, cluster, not data_file)
    if not data_file and draw(st.booleans()):                  # internal snapshots
        prep.append(("qemu-img", ["snapshot", "-c", "s1", "test.img"]))
        prep += _prefill(draw, "qcow2", "test.img", size, cluster, True)
        action = draw(st.sampled_from(["", "-c s2", "-a s1", "-d s1"]))
        if action:
            prep.append(("qemu-img", ["snapshot"] + action.split() + ["test.img"]))
    after = draw(st.sampled_from(["", "", "", "resize", "shrink", "amend"]))
    if after == "resize":               # grown by qemu-img: a tail the L1 table
        size += draw(st.sampled_from([512, cluster, 1 << 20, 3 << 20]))  # did not cover
        prep.append(("qemu-img", ["resize", "-q", "test.img", str(size)]))
    elif after == "shrink":
        size = max(512, size // 2 // 512 * 512)
        prep.append(("qemu-img", ["resize", "-q", "--shrink", "test.img", str(size)]))
    elif after == "amend" and 65536 <= cluster <= 262144 and not data_file:
        # (QEMU 7.2's qemu-img amend of refcount_bits may never finish, e.g.
        # with 256k or 2M clusters: not drawn)
        prep.append(("qemu-img", ["amend", "-o", draw(st.sampled_from(
            ["compat=0.10", "lazy_refcounts=on", "compat=1.1,lazy_refcounts=off"])),
            "test.img"]))
    s = runner.Script(Path("random_states.qio"), size=str(size), prep=prep,
                      prep_check=False)
    # (no reopen or truncate with persistent bitmaps: gqemu's reopen closes and
    # opens again, storing the bitmaps; QEMU rewrites their directory in place
    # -- a known difference of the host layout, see the report)
    s.skip = ("reopen", "truncate") if bitmaps else \
        ("reopen -c none",) if cluster < 4096 else ()  # type: ignore[attr-defined]
    # (not -C when the last cluster reaches past the end of the image: QEMU
    # 7.2 aborts there, bdrv_co_do_copy_on_readv's skip_bytes < pnum)
    s.args = draw(st.sampled_from([[]] * 6 + [["-r"], ["-t", "none"], ["-d", "unmap"]]
                                  + ([["-C"]] if size % cluster == 0 else [])))
    return s, "qcow2", size, cluster


@st.composite
def _named(draw: st.DrawFn) -> tuple[runner.Script, str, int, int]:
    """Images named in other ways: odd-sized raw, null-co, json:, filters,
    a format that does not match the file."""
    kind = draw(st.sampled_from(["rawodd", "rawodd", "null", "json_raw", "json_qcow2",
                                 "filter", "mismatch", "qcow", "limits", "keys",
                                 "json_odd"]))
    s = runner.Script(Path("random_states.qio"), prep_check=False)
    fmt, size, cluster = "raw", 1 << 20, 65536
    if kind == "rawodd":
        size = draw(st.sampled_from([1, 10, 511, 513, 1000, 4097, 65535, 70000]))
        s.aux["test.img"] = "".join(chr(97 + i % 26) for i in range(size))
        s.args = draw(st.sampled_from([[], [], ["-n"], ["-t", "none"], ["-f", "qcow2"],
                                       ["-f", "qcow"]]))
    elif kind == "null":
        size = draw(st.sampled_from([0, 1000, 1 << 20, 1 << 40, 7 << 60, 1 << 63,
                                     (1 << 63) - (1 << 30)]))
        zeroes = draw(st.sampled_from(["", ",read-zeroes=on", ",read-zeroes=off"]))
        s.nofile = True
        if draw(st.booleans()):
            s.args = ["--image-opts", "driver=null-co,size=%d%s" % (size, zeroes)]
        else:
            s.args = ["json:{\"driver\": \"null-co\", \"size\": %d%s}" % (
                size, zeroes.replace(",read-zeroes=", ", \"read-zeroes\": \"")
                + ("\"" if zeroes else ""))]
    elif kind == "json_raw":
        off = draw(st.sampled_from([0, 512, 1000, 65536]))
        sz = draw(st.sampled_from([None, 4096, 1000, 200000]))
        s.nofile = True
        s.args = ["json:{\"driver\": \"raw\", \"offset\": %d%s, \"file\": {\"driver\": "
                  "\"file\", \"filename\": \"test.img\"}}" % (
                      off, ", \"size\": %d" % sz if sz else "")]
        s.prep = _prefill(draw, "raw", "test.img", size, cluster, False)
        size = sz or size - off
        s.prep.insert(0, ("qemu-img", ["create", "-q", "-f", "raw", "test.img", "1M"]))
    elif kind == "json_odd":           # json: names QEMU's parser may refuse
        good = '"driver": "raw", "file": {"driver": "file", "filename": "test.img"}'
        s.nofile = True
        s.args = ["json:" + draw(st.sampled_from([
            "{%s}" % good, " {%s} " % good, "{%s} x" % good, "{%s}}" % good,
            "{%s,}" % good, "{%s, 'offset': 512}" % good, "{%s, \"size\": 01}" % good,
            "{%s, \"size\": 1.}" % good, "{%s, \"size\": -}" % good,
            "{%s, \"a\": \"\\x\"}" % good, "{%s, \"a\": \"\\u12\"}" % good,
            "{%s, \"driver\": \"raw\"}" % good, "{%s \"a\": 1}" % good,
            "{driver: raw}", "{\"driver\": raw}", "[1]", "1", "", "{}",
            "{\"driver\": null}", "{%s, \"read-only\": true}" % good,
            "{%s, \"backing\": null}" % good, "{%s" % good, "{%s, \"a\": NaN}" % good]))]
        s.prep = [("qemu-img", ["create", "-q", "-f", "raw", "test.img", "1M"])]
    elif kind == "limits":             # blkdebug's request limits under a format
        fmt = draw(st.sampled_from(["raw", "qcow2"]))
        s.prep = [("qemu-img", ["create", "-q", "-f", fmt, "test.img", "1M"])]
        s.prep += _prefill(draw, fmt, "test.img", size, cluster, fmt == "qcow2")
        keys = draw(st.lists(st.sampled_from(
            ["align=4096", "align=1024", "max-transfer=65536", "max-transfer=8192",
             "opt-write-zero=8192", "max-write-zero=65536", "opt-discard=65536",
             "max-discard=131072", "align=3", "max-transfer=1000"]), min_size=1,
            max_size=3, unique_by=lambda k: k.split("=")[0]))
        if any(k.startswith("align=") for k in keys) and \
                not any(k.startswith("opt-discard=") for k in keys):
            # (QEMU 7.2 divides by a zero opt-discard: SIGFPE on a discard
            # shorter than the alignment, blkdebug_co_pdiscard)
            keys.append("opt-discard=65536")
        s.args = ["--image-opts"]
        s.file = "driver=%s,file.driver=blkdebug,file.image.filename=test.img,%s" % (
            fmt, ",".join("file." + k for k in keys))
    elif kind == "keys":               # qcow2's runtime options
        fmt = "qcow2"
        s.prep = [("qemu-img", ["create", "-q", "-f", "qcow2", "test.img", "1M"])]
        s.prep += _prefill(draw, fmt, "test.img", size, cluster, True)
        keys = draw(st.lists(st.sampled_from(
            ["l2-cache-size=65536", "l2-cache-size=1M", "refcount-cache-size=131072",
             "cache-size=262144", "l2-cache-entry-size=4096", "pass-discard-request=off",
             "pass-discard-other=on", "pass-discard-snapshot=off", "overlap-check=none",
             "overlap-check=all", "lazy-refcounts=on", "cache-clean-interval=0",
             "discard=unmap", "detect-zeroes=unmap", "detect-zeroes=on"]),
            min_size=1, max_size=3, unique_by=lambda k: k.split("=")[0]))
        s.args = ["--image-opts"]
        s.file = "driver=qcow2,file.filename=test.img," + ",".join(keys)
    elif kind in ("json_qcow2", "filter", "mismatch", "qcow"):
        fmt = "qcow" if kind == "qcow" else "qcow2"
        cluster = 4096 if fmt == "qcow" else 65536
        s.prep = [("qemu-img", ["create", "-q", "-f", fmt, "test.img", "1M"])]
        s.prep += _prefill(draw, fmt, "test.img", size, cluster, True)
        if kind == "json_qcow2":
            s.nofile = True
            inner = draw(st.sampled_from([
                "{\"driver\": \"file\", \"filename\": \"test.img\"}",
                "{\"driver\": \"blkdebug\", \"image\": {\"driver\": \"file\", "
                "\"filename\": \"test.img\"}}"]))
            s.args = ["json:{\"driver\": \"qcow2\", \"file\": %s}" % inner]
        elif kind == "filter":
            drv = draw(st.sampled_from(["copy-on-read", "compress"]))
            s.args = ["--image-opts"]
            s.file = "driver=%s,file.driver=qcow2,file.file.filename=test.img" % drv
        elif kind == "mismatch":
            fmt = "raw"                 # compared byte for byte
            s.args = ["-f", "raw"] + (["-r"] if draw(st.booleans()) else [])
            size = int(draw(st.sampled_from([512, 65536, 196608])))
    return s, fmt, size, cluster


@st.composite
def _command(draw: st.DrawFn, fmt: str, size: int, cluster: int) -> list[str]:
    kind = draw(st.sampled_from(["write", "write", "read", "dump", "readv", "zero",
                                 "compress", "discard", "alloc", "map", "aio",
                                 "flush", "length", "truncate", "info", "writev",
                                 "aio_zero", "aio_dump", "reopen"]))
    off, n = draw(_range(size, cluster))
    p = draw(_PAT)
    if kind == "write":
        flags = draw(st.sampled_from(["", "", " -f", " -n", " -b", " -q"]))
        return ["write%s -P %d %d %d" % (flags, p, off, n)]
    if kind == "read":
        return ["read%s -P %d %d %d" % (draw(st.sampled_from(["", " -q", " -b"])),
                                        p, off, n)]
    if kind == "dump":
        return ["read -v%s %d %d" % (draw(st.sampled_from(["", " -P %d" % p])),
                                     off, min(n, 100))]
    if kind == "readv":
        parts = draw(st.lists(st.integers(1, 200), min_size=1, max_size=3))
        return ["readv -v %d %s" % (off, " ".join(map(str, parts)))]
    if kind == "zero":
        return ["write -z%s %d %d" % (draw(st.sampled_from(["", " -u", " -f"])), off, n)]
    if kind == "compress":
        off = off // cluster * cluster if draw(st.booleans()) else off
        return ["write -c -P %d %d %d" % (p, off, draw(st.sampled_from(
            [n, cluster, 2 * cluster])))]
    if kind == "discard":
        return ["discard %d %d" % (off, n)]
    if kind == "alloc":
        return ["alloc %d %d" % (off, n)] if n else ["alloc %d" % off]
    if kind == "aio":
        if fmt != "raw":
            return ["aio_write -P %d %d %d" % (p, off, n), "aio_flush"]
        k = draw(st.integers(1, 4))
        step = max(n, 1)
        return ["aio_write -q -P %d %d %d" % ((p + i) & 0xff, off + i * step, n)
                for i in range(k)] + ["aio_flush", "read -q -P %d %d %d" % (p, off, n)]
    if kind == "writev":
        parts = draw(st.lists(st.sampled_from([1, 100, 512, 4096, cluster]), min_size=1,
                              max_size=4))
        return ["writev -P %d %d %s" % (p, off, " ".join(map(str, parts)))]
    if kind == "aio_zero":
        return ["aio_write -z%s %d %d" % (draw(st.sampled_from(["", " -u", " -f"])),
                                          off, n), "aio_flush"]
    if kind == "aio_dump":
        return ["aio_read -v -P %d %d %d" % (p, off, min(n, 64)), "aio_flush"]
    if kind == "reopen":
        return ["reopen %s" % draw(st.sampled_from(["-r", "-w", "-c none", "-c writeback",
                                                    "-o discard=unmap", ""]))]
    if kind == "truncate":
        return ["truncate %d" % draw(st.sampled_from([size, size + 1, size + 511,
                                                      size // 2 + 3, off, 0])), "length"]
    return [kind]


_STATES = {"chain": _chain, "qcow2": _qcow2_opts, "named": _named}


@pytest.mark.parametrize("state", sorted(_STATES))
@_SETTINGS
@given(data=st.data())
def test_random_state_session(state: str, qemu_io: str, qemu_img: str,
                              tmp_path_factory: pytest.TempPathFactory,
                              data: st.DataObject) -> None:
    script, fmt, size, cluster = data.draw(_STATES[state]())
    cmds = data.draw(st.lists(_command(fmt, size, cluster), min_size=3, max_size=14))
    skip = getattr(script, "skip", ())
    script.commands = [c for group in cmds for c in group
                       if not skip or not c.startswith(skip)] + ["map"]
    work = tmp_path_factory.mktemp("rstate")
    q, g = runner.run_both(script, fmt, qemu_io, qemu_img, work)
    problems = runner.compare(script, fmt, q, g, qemu_img, work)
    if any("data_file=" in a for _, args in script.prep for a in args):
        # qemu-img compare, run elsewhere, cannot find the data file (a name
        # relative to the working directory); the data files themselves must
        # be equal, and map and check (run beside the image) agree
        problems = [p for p in problems if not p.startswith("qemu-img compare:")]
        if (work / "qemu" / "data.raw").read_bytes() != \
                (work / "gqemu" / "data.raw").read_bytes():
            problems.append("data files differ")
    assert not problems, "\n".join(
        problems + ["%s %s" % (t, " ".join(a)) for t, a in script.prep]
        + ["args: %s  file: %s nofile: %s" % (script.args, script.file, script.nofile)]
        + ["aux: %r" % {k: len(v) for k, v in script.aux.items()}] + script.commands)
