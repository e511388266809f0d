"""Random qemu-img sessions through the real qemu-img and gqemu-img.

Each example builds one starting state with the real tools (a raw or
qcow2 image with random create options -- cluster size, compat, lazy
refcounts, extended L2, refcount width, preallocation, a backing file --
and data written by the real qemu-io), copies it into two directories and
runs the same 2-6 qemu-img commands in each: info, check, map, compare,
convert, measure, amend, resize, rebase, commit, snapshot, bitmap, dd and
create, with valid and invalid argument forms.  Exit status, stdout and
stderr must match (after the program name, timestamps and the work
directory are filtered) and so must the files afterwards: byte for byte,
or where QEMU writes a time (snapshots) or allocates in a varying order
(commit's parallel copies, convert -W) the same ``qemu-img check`` report (without the
fragmentation figure) and ``qemu-img compare`` verdict from the real
qemu-img.

GQEMU_FUZZ_EXAMPLES=N runs N sessions instead of the few CI runs, from a
random seed (hypothesis prints the failing session).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

_ROOT = Path(__file__).resolve().parents[2]
_LONG = int(os.environ.get("GQEMU_FUZZ_EXAMPLES", "0"))
_GQEMU_IMG = ("import sys; sys.argv[0] = 'qemu-img'; sys.path.insert(0, %r); "
              "from gqemu.cli.qemu_img import main; sys.exit(main())" % str(_ROOT))
MB = 1 << 20


def _settings(examples: int) -> settings:
    return settings(max_examples=_LONG or examples, deadline=None,
                    derandomize=not _LONG, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


_SIZES = st.sampled_from(["1M", "2M", "1048576", "3145728", "1536K", "1.5M", "4M",
                          "+1M", "-512K", "+64k", "0", "1x", "-1", "abc", "1T",
                          "2097664", "8E", "1048577", "+0"])
_PAT = st.sampled_from([0x11, 0x22, 0xcd, 0])


@st.composite
def _state(draw: st.DrawFn) -> tuple[str, list[list[str]]]:
    """(format, [argv of the real tools]) building test.img (+ base.img)."""
    fmt = draw(st.sampled_from(["qcow2", "qcow2", "qcow2", "raw"]))
    steps: list[list[str]] = []
    size = draw(st.sampled_from([MB, 2 * MB, MB + 512 * 1024]))
    backing = fmt == "qcow2" and draw(st.booleans())
    if backing:
        bfmt = draw(st.sampled_from(["raw", "qcow2"]))
        bsize = draw(st.sampled_from([size, size // 2, 2 * size]))
        steps.append(["qemu-img", "create", "-q", "-f", bfmt, "base.img", str(bsize)])
        for _ in range(draw(st.integers(0, 3))):
            off = draw(st.integers(0, bsize // 65536 - 1)) * 65536
            steps.append(["qemu-io", "-f", bfmt, "-c", "write -P %d %d 65536"
                          % (draw(_PAT), off), "base.img"])
    opts: list[str] = []
    if fmt == "qcow2":
        compat = draw(st.sampled_from(["1.1", "1.1", "0.10"]))
        cluster = draw(st.sampled_from([512, 4096, 65536, 65536, 131072]))
        opts += ["compat=" + compat, "cluster_size=%d" % cluster]
        if compat == "1.1":
            if cluster >= 16384 and draw(st.booleans()):
                opts.append("extended_l2=on")
            opts += draw(st.sampled_from([[], [], ["lazy_refcounts=on"],
                                          ["refcount_bits=1"], ["refcount_bits=64"],
                                          ["refcount_bits=8"]]))
        if not backing:
            opts += draw(st.sampled_from([[], [], [], ["preallocation=metadata"],
                                          ["preallocation=falloc"]]))
        else:
            opts += ["backing_file=base.img", "backing_fmt=" + bfmt]
    else:
        opts += draw(st.sampled_from([[], [], ["preallocation=full"]]))
    steps.append(["qemu-img", "create", "-q", "-f", fmt]
                 + (["-o", ",".join(opts)] if opts else []) + ["test.img", str(size)])
    for _ in range(draw(st.integers(0, 4))):
        off = draw(st.integers(0, size // 4096 - 1)) * 4096
        n = draw(st.sampled_from([512, 4096, 65536, 3000]))
        n = min(n, size - off)
        kind = draw(st.sampled_from(["-P %d" % draw(_PAT), "-z"]))
        steps.append(["qemu-io", "-f", fmt, "-c", "write %s %d %d" % (kind, off, n),
                      "test.img"])
    return fmt, steps


_NAMES = ["test.img", "test.img", "base.img", "out.img", "missing.img"]


@st.composite
def _command(draw: st.DrawFn, fmt: str) -> list[str]:
    """One qemu-img argv (without the program name)."""
    img = draw(st.sampled_from(_NAMES))
    f = draw(st.sampled_from([[], [], ["-f", fmt], ["-f", "raw"], ["-f", "qcow2"]]))
    kind = draw(st.sampled_from(
        ["info", "check", "map", "compare", "convert", "convert", "measure", "amend",
         "resize", "rebase", "commit", "snapshot", "bitmap", "dd", "create", "bad"]))
    if kind == "info":
        return ["info"] + f + draw(st.sampled_from(
            [[], ["--output=json"], ["--backing-chain"], ["--output=json",
                                                         "--backing-chain"],
             ["--output=human"], ["--output=xml"]])) + [img]
    if kind == "check":
        return ["check"] + f + draw(st.sampled_from(
            [[], ["-r", "leaks"], ["-r", "all"], ["-r", "bogus"], ["--output=json"],
             ["-q"]])) + [img]
    if kind == "map":
        return ["map"] + f + draw(st.sampled_from(
            [[], ["--output=json"], ["--output=json", "--start-offset=64k"],
             ["--max-length=512k"], ["--start-offset=x"]])) + [img]
    if kind == "compare":
        other = draw(st.sampled_from(["out.img", "base.img", "test.img"]))
        return ["compare"] + draw(st.sampled_from(
            [[], ["-s"], ["-f", fmt, "-F", "raw"], ["-q"], ["-f", fmt]])) + [img, other]
    if kind == "convert":
        ofmt = draw(st.sampled_from(["raw", "qcow2", "qcow2"]))
        args = ["convert"] + f + ["-O", ofmt]
        if ofmt == "qcow2":
            args += draw(st.sampled_from(
                [[], ["-c"], ["-o", "cluster_size=4096"], ["-o", "compat=0.10"],
                 ["-o", "preallocation=metadata"], ["-o", "lazy_refcounts=on"],
                 ["-B", "base.img", "-F", "raw"], ["-o", "cluster_size=3000"]]))
        args += draw(st.sampled_from(
            [[], [], ["-S", "0"], ["-S", "4k"], ["-S", "1x"], ["-n"],
             ["--target-is-zero", "-n"], ["-W", "-m", "2"], ["-m", "0"], ["-q"]]))
        return args + [img, "out.img"]
    if kind == "measure":
        return ["measure"] + draw(st.sampled_from(
            [["-O", "qcow2"], ["-O", "raw"], ["--output=json", "-O", "qcow2"],
             ["--size", "1G", "-O", "qcow2"], ["-O", "qcow2", "-o", "cluster_size=4k"],
             []])) + ([] if draw(st.booleans()) else f + [img])
    if kind == "amend":
        return ["amend"] + f + ["-o", draw(st.sampled_from(
            ["compat=0.10", "compat=1.1", "lazy_refcounts=on", "lazy_refcounts=off",
             "refcount_bits=16", "refcount_bits=4", "cluster_size=4k", "size=4M",
             "bogus=1", "help"]))] + [img]
    if kind == "resize":
        size = draw(_SIZES)
        args = ["resize"] + f + draw(st.sampled_from(
            [[], [], ["--shrink"], ["--preallocation=full"], ["--preallocation=falloc"],
             ["-q"]]))
        return args + ([img, size] if not size.startswith("-") else
                       [img, "--", size] if draw(st.booleans()) else [img, size])
    if kind == "rebase":
        return ["rebase"] + f + draw(st.sampled_from(
            [["-u", "-b", "base.img", "-F", "raw"], ["-u", "-b", ""], ["-b", ""],
             ["-b", "base.img", "-F", "qcow2"], ["-b", "out.img"], ["-u"]])) + [img]
    if kind == "commit":
        return ["commit"] + f + draw(st.sampled_from(
            [[], ["-d"], ["-b", "base.img"], ["-q"], ["-b", "x.img"]])) + [img]
    if kind == "snapshot":
        op = draw(st.sampled_from(["-c", "-l", "-a", "-d"]))
        return ["snapshot"] + f + ([op] if op == "-l" else [op, draw(st.sampled_from(
            ["s1", "s2", "1"]))]) + [img]
    if kind == "bitmap":
        op = draw(st.sampled_from(["--add", "--remove", "--clear", "--enable",
                                   "--disable", "--add -g 4k", "--add --disabled"]))
        return ["bitmap"] + op.split() + f + [img, draw(st.sampled_from(["b0", "b1"]))]
    if kind == "dd":
        return ["dd"] + f + ["-O", draw(st.sampled_from(["raw", "qcow2"]))] + draw(
            st.sampled_from([[], ["bs=4k"], ["bs=64k", "count=3"], ["skip=2", "bs=512"],
                             ["bs=0"], ["count=x"]])) + ["if=" + img, "of=out.img"]
    if kind == "create":
        cfmt = draw(st.sampled_from(["raw", "qcow2"]))
        return ["create", "-f", cfmt] + draw(st.sampled_from(
            [[], ["-q"], ["-o", "cluster_size=4k"], ["-b", "base.img", "-F", "raw"],
             ["-o", "preallocation=metadata"]])) + [draw(st.sampled_from(
                 ["out.img", "test.img"])), draw(_SIZES)]
    return draw(st.sampled_from(
        [["bogus"], [], ["info"], ["info", "--nope", img], ["check", "-r"],
         ["resize", img], ["convert", img], ["map", "-x", img], ["compare", img],
         ["snapshot", img], ["bitmap", img], ["create", "-f", "qcow2"],
         ["info", "-f", "vmdkx", img], ["measure", "-O", "bogus", img]]))


_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_CLOCK = re.compile(r"\d\d\d?:\d\d:\d\d\.\d{3}")
# the help text (gqemu's lists its own commands and formats)
_HELP = re.compile(r"^qemu-img version .*", re.S)
_FRAG = re.compile(r',?\s*"fragmented-clusters": \d+')
_NODE = re.compile(r"#block[0-9]+")
_JSON_TIME = re.compile(r'"(date-sec|date-nsec|vm-clock-sec|vm-clock-nsec)": \d+')


def _norm(text: str, work: Path) -> str:
    text = _HELP.sub("HELP TEXT\n", text)
    text = _NODE.sub("#blockN", text.replace(str(work), "DIR"))   # generated names
    text = _JSON_TIME.sub(r'"\1": N', _CLOCK.sub("CLOCK", _TIME.sub("DATE", text)))
    return text


def _run(argv: list[str], cwd: Path, ours: bool) -> tuple[int, str, str]:
    cmd = ([sys.executable, "-c", _GQEMU_IMG] + argv[1:]) if ours else argv
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return -999, "", "TIMEOUT"
    return p.returncode, _norm(p.stdout, cwd), _norm(p.stderr, cwd)


def _real(qemu_img: str, args: list[str], cwd: Path) -> str:
    p = subprocess.run([qemu_img] + args, cwd=cwd, capture_output=True, text=True)
    return "%d %s %s" % (p.returncode, _norm(p.stdout, cwd), _norm(p.stderr, cwd))


def _extents(path: Path) -> list[tuple[int, int]]:
    """The data extents of a (maybe sparse: resize to 1T) file."""
    out, size = [], path.stat().st_size
    with open(path, "rb") as f:
        off = 0
        while off < size:
            try:
                start = os.lseek(f.fileno(), off, os.SEEK_DATA)
            except OSError:
                break
            off = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            out.append((start, off))
    return out


def _same_bytes(a: Path, b: Path) -> bool:
    """Byte for byte equal, reading only where either file has data."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in sorted(_extents(a) + _extents(b)):
            for off in range(start, end, 1 << 20):
                n = min(1 << 20, end - off)
                if os.pread(fa.fileno(), n, off) != os.pread(fb.fileno(), n, off):
                    return False
    return True


def session(qemu_img: str, qemu_io: str, work: Path, steps: list[list[str]],
            cmds: list[list[str]]) -> list[str]:
    """Differences between the real qemu-img and gqemu-img running ``cmds``."""
    start = work / "start"
    start.mkdir()
    tools = {"qemu-img": qemu_img, "qemu-io": qemu_io}
    for step in steps:
        # a tool named with a trailing '!' may fail (qemu-io's abort)
        subprocess.run([tools[step[0].rstrip("!")]] + step[1:], cwd=start,
                       check=not step[0].endswith("!"),
                       capture_output=True)
    dirs = {}
    for name in ("real", "ours"):
        dirs[name] = work / name
        shutil.copytree(start, dirs[name])
    problems = []
    for cmd in cmds:
        q = _run([qemu_img] + cmd, dirs["real"], False)
        g = _run(["qemu-img"] + cmd, dirs["ours"], True)
        if q != g:
            problems.append("qemu-img %s\n  real: %r\n  ours: %r" % (" ".join(cmd), q, g))
            return problems         # later commands would diverge anyway
    # convert -W: clusters allocated in the order the writes complete (with
    # -c a different file from run to run of QEMU itself)
    timed = any(c[:1] == ["snapshot"] or c[:1] == ["commit"]
                or (c[:1] == ["convert"] and "-W" in c) for c in cmds)
    names = sorted({p.name for d in dirs.values() for p in d.iterdir()})
    for name in names:
        a, b = dirs["real"] / name, dirs["ours"] / name
        if not (a.exists() and b.exists()):
            problems.append("%s exists only in one directory" % name)
            continue
        if _same_bytes(a, b):
            continue
        fmt = _real(qemu_img, ["info", "--output=json", name], dirs["real"])
        if '"format": "raw"' in fmt or not timed:
            problems.append("%s differs byte for byte" % name)
            continue
        # snapshot writes the time; commit's mirror job allocates the base's
        # clusters in the order its parallel copies finish, which varies from
        # run to run of QEMU itself: the same check verdict and contents
        ra, rb = (_FRAG.sub("", _real(qemu_img, ["check", "--output=json", name], d))
                  for d in dirs.values())
        if ra != rb:
            problems.append("check %s:\n  real: %s\n  ours: %s" % (name, ra, rb))
        rc = _real(qemu_img, ["compare", "-U", str(a), str(b)], work)
        if not rc.startswith("0 "):
            problems.append("compare %s: %s" % (name, rc))
    return problems


@_settings(6)
@given(data=st.data())
def test_random_qemu_img_session(qemu_img: str, qemu_io: str,
                                 tmp_path_factory: pytest.TempPathFactory,
                                 data: st.DataObject) -> None:
    fmt, steps = data.draw(_state())
    cmds = data.draw(st.lists(_command(fmt), min_size=2, max_size=6))
    work = tmp_path_factory.mktemp("imgfuzz")
    problems = session(qemu_img, qemu_io, work, steps, cmds)
    assert not problems, "\n".join(problems + ["setup:"] + [" ".join(s) for s in steps]
                                   + ["commands:"] + [" ".join(c) for c in cmds])


# Sessions the fuzzer found differing (each failed before its fix).
_FOUND = {
    # check -r with a bad value is a command-line error: error_exit's --help hint
    "check_bad_repair": ([["qemu-img", "create", "-q", "-f", "qcow2", "test.img", "1M"]],
                         [["check", "-r", "bogus", "test.img"]]),
    # dd onto its own input: the create's lock error under dd's prefix, with hint
    "dd_onto_input": ([["qemu-img", "create", "-q", "-f", "qcow2", "test.img", "1M"]],
                      [["dd", "-O", "raw", "if=test.img", "of=test.img"]]),
    # getopt errors name argv[optind - 1] after glibc's permutation: the word
    # before "-512K" (optind stays on a word until its last letter), the whole
    # "--nope=1", the whole "-Ux", the command name for a leading "-x5"
    "getopt_error_words": ([["qemu-img", "create", "-q", "-f", "qcow2", "test.img", "1M"]],
                           [["create", "-f", "qcow2", "-o", "cluster_size=4k", "test.img",
                             "-512K"], ["info", "--nope=1", "test.img"],
                            ["info", "-Ux", "test.img"], ["create", "-x5", "out.img"],
                            ["info", "a", "b", "-Ux", "c"], ["check", "test.img", "-r"]]),
    # measure's optstring has no leading ':': glibc complains under the
    # command's name and measure shows the help, exit 0
    "measure_glibc_errors": ([["qemu-img", "create", "-q", "-f", "qcow2", "test.img", "1M"]],
                             [["measure", "-x", "test.img"], ["measure", "--bogus=1"],
                              ["measure", "-O"], ["measure", "--si"]]),
    # commit: a granule whose status run is shorter than a granule is
    # copied (mirror_iteration), so zeroes written as data stay data
    "commit_partial_zero_granule": (
        [["qemu-img", "create", "-q", "-f", "qcow2", "base.img", "786432"],
         ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,backing_file="
          "base.img,backing_fmt=qcow2", "test.img", "1572864"],
         ["qemu-io", "-f", "qcow2", "-c", "write -z 753664 3000", "test.img"],
         ["qemu-io", "-f", "qcow2", "-c", "write -z 872448 4096", "test.img"]],
        [["commit", "-f", "qcow2", "test.img"], ["check", "--output=json", "base.img"]]),
    # snapshot without an action opens the image read-write (the raw probing
    # warning) and does nothing: no snapshot list
    "snapshot_no_action": ([["qemu-img", "create", "-q", "-f", "raw", "test.img", "1M"],
                            ["qemu-img", "create", "-q", "-f", "qcow2", "out.img", "1M"],
                            ["qemu-img", "snapshot", "-c", "s1", "out.img"]],
                           [["snapshot", "test.img"], ["snapshot", "out.img"]]),
    # rebase -u without -b on a raw image: out_baseimg is NULL, printed "(null)"
    "rebase_u_no_b_raw": ([["qemu-img", "create", "-q", "-f", "raw", "test.img", "1M"]],
                          [["rebase", "-f", "raw", "-u", "test.img"],
                           ["rebase", "-f", "raw", "-u", "-b", "", "test.img"]]),
}


@pytest.mark.parametrize("name", sorted(_FOUND))
def test_found_session(name: str, qemu_img: str, qemu_io: str, tmp_path: Path) -> None:
    steps, cmds = _FOUND[name]
    problems = session(qemu_img, qemu_io, tmp_path, steps, cmds)
    assert not problems, "\n".join(problems)
