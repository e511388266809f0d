"""Random qemu-img sessions, second generator: what test_qemu_img_random
does not draw.

The starting states add qcow (version 1) images, internal snapshots and
persistent bitmaps made by the real qemu-img, and a second backing file of
another size (base2.img).  The commands add qemu-img's own options (-T,
-V, -h anywhere), option words shuffled with operands and a bad option or
``-h`` dropped in anywhere (glibc's permutation decides which word an error
names), long-option prefixes, bad number forms (suffixes, signs,
overflow), and the options of qemu-img 7.2's --help the first generator
leaves out: convert -O qcow, -o backing/compat/refcount options, -B/-F,
-l/-s snapshots, --salvage, --bitmaps, -C, -U, --image-opts and
--target-image-opts; info/map/check -U, --object, --image-opts;
create -b/-F/-u with the size taken from the backing file; measure -o, -l,
--size; rebase onto base2.img (safe mode copies what differs); compare -s
across sizes; amend across compat and refcount widths; bitmap --merge with
-b/-F and -g; snapshot -l/-a/-c/-d on the state's snapshots; dd with
skip/count/bs forms.

Sessions run as in test_qemu_img_random (same session() comparison: exit
status, output, files afterwards).  GQEMU_FUZZ_EXAMPLES=N runs N sessions.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from qemu_img_found2 import FOUND2
from test_qemu_img_random import _PAT, _SIZES, _settings, _state, session

MB = 1 << 20
_NUMS = st.sampled_from(["4k", "64k", "512", "1.5k", "0", "-1", "1x", "0x10", "0x10k",
                         "99999999999999999999", "8E", "1e3", " 4k", "4K", "4 k", "1b",
                         "65536", "512B", "2G", "-0", "1.5"])


@st.composite
def _state2(draw: st.DrawFn) -> tuple[str, list[list[str]]]:
    """_state plus qcow images, snapshots, bitmaps and base2.img."""
    if draw(st.integers(0, 5)) == 0:
        size = draw(st.sampled_from([MB, 2 * MB]))
        steps = [["qemu-img", "create", "-q", "-f", "qcow", "test.img", str(size)]]
        if draw(st.booleans()):
            steps = [["qemu-img", "create", "-q", "-f", "raw", "base.img", str(size)],
                     ["qemu-io", "-f", "raw", "-c", "write -P 17 0 64k", "base.img"],
                     ["qemu-img", "create", "-q", "-f", "qcow", "-b", "base.img", "-F",
                      "raw", "test.img", str(size)]]
        for _ in range(draw(st.integers(0, 3))):
            off = draw(st.integers(0, size // 4096 - 1)) * 4096
            steps.append(["qemu-io", "-f", "qcow", "-c", "write -P %d %d 4096"
                          % (draw(_PAT), off), "test.img"])
        return "qcow", steps
    fmt, steps = draw(_state())
    opts = " ".join(next(s for s in steps if s[:2] == ["qemu-img", "create"]
                         and "test.img" in s)) + " "
    if draw(st.booleans()):
        steps.append(["qemu-img", "create", "-q", "-f", draw(st.sampled_from(
            ["raw", "qcow2"])), "base2.img", draw(st.sampled_from(["512K", "1M", "3M"]))])
        steps.append(["qemu-io", "-c", "write -P 85 0 128k", "base2.img"])
    if fmt == "qcow2" and "compat=0.10" not in opts:
        for name in draw(st.lists(st.sampled_from(["b0", "b1"]), max_size=2, unique=True)):
            steps.append(["qemu-img", "bitmap", "--add", "test.img", name])
    if fmt == "qcow2" and "refcount_bits=1 " not in opts.replace(",", " "):
        for name in draw(st.lists(st.sampled_from(["s1", "s2"]), max_size=2, unique=True)):
            steps.append(["qemu-img", "snapshot", "-c", name, "test.img"])
            steps.append(["qemu-io", "-c", "write -P %d 0 8k" % draw(_PAT), "test.img"])
    if fmt == "qcow2" and draw(st.integers(0, 3)) == 0:
        # damage: metadata overwritten through the raw format (header
        # cluster, reftable, first refblock, L1 table at clusters 0-3 of a
        # fresh image), or writes left unflushed by qemu-io's abort
        cs = int(opts.split("cluster_size=")[1].split(",")[0].split()[0])
        off = draw(st.sampled_from([cs, cs + 8, 2 * cs, 2 * cs + 2, 2 * cs + 6, 3 * cs,
                                    3 * cs + 8, 72, 104]))
        steps.append(draw(st.sampled_from([
            ["qemu-io", "-f", "raw", "-c", "write -P %d %d %d" % (
                draw(st.sampled_from([0, 1, 0xff, 0x80])), off,
                draw(st.sampled_from([1, 2, 8]))), "test.img"],
            ["qemu-io!", "-f", "qcow2", "-c", "write -P 9 %d 4k" % draw(st.sampled_from(
                [0, 65536, 200704])), "-c", "abort", "test.img"]])))
    return fmt, steps


_IMGS = ["test.img", "test.img", "base.img", "base2.img", "out.img", "missing.img"]
_JSON = ['json:{"driver": "qcow2", "file": {"driver": "file", "filename": "test.img"}}',
         'json:{"file.filename": "test.img"}', 'json:{"driver": "raw", "file": '
         '{"driver": "file", "filename": "base2.img"}}', 'json:{"filename": "x"',
         'json:{"driver": "bogus"}']
_BAD = ["-x", "--nope", "-h", "--help", "--he", "--f", "--force", "-", "--", "-Z5",
        "--output", "--output=", "--image-opts=1", "--obj", "-Uq"]


@st.composite
def _shuffled(draw: st.DrawFn, words: list[list[str]], operands: list[str]) -> list[str]:
    """Option groups and operands in a random order, maybe with a bad word."""
    items = [list(w) for w in words] + [[o] for o in operands]
    items = draw(st.permutations(items))
    if draw(st.integers(0, 2)) == 0:
        items.insert(draw(st.integers(0, len(items))), [draw(st.sampled_from(_BAD))])
    return [w for item in items for w in item]


def _convert(draw: st.DrawFn, img: str, f: list[str]) -> list[str]:
    ofmt = draw(st.sampled_from(["raw", "qcow2", "qcow2", "qcow", "vmdkx"]))
    words = [f, ["-O", ofmt]] if f else [["-O", ofmt]]
    words += draw(st.lists(st.sampled_from(
        [["-c"], ["-C"], ["-U"], ["-q"], ["-n"], ["-W"], ["--salvage"], ["--bitmaps"],
         ["--skip-broken-bitmaps"], ["--target-is-zero"], ["-S", draw(_NUMS)],
         ["-m", draw(st.sampled_from(["1", "16", "17", "0", "x"]))],
         ["-l", draw(st.sampled_from(["s1", "snapshot.name=s2", "snapshot.id=1", "nosuch"]))],
         ["-s", "s1"], ["-B", draw(st.sampled_from(["base.img", "base2.img"]))],
         ["-F", draw(st.sampled_from(["raw", "qcow2"]))], ["-t", "writeback"],
         ["-T", draw(st.sampled_from(["none", "unsafe", "bogus"]))],
         ["-o", draw(st.sampled_from(
             ["cluster_size=4k", "compat=0.10", "compat=1.1,lazy_refcounts=on",
              "refcount_bits=1", "preallocation=metadata", "preallocation=full",
              "backing_file=base.img,backing_fmt=raw", "backing_file=base.img",
              "cluster_size=" + draw(_NUMS), "size=2M", "help", "extended_l2=on",
              "cluster_size=64k,extended_l2=on", "bogus=1", "compat=v3"]))],
         ["--image-opts"], ["--target-image-opts"]]), max_size=4))
    srcs = [img] if draw(st.integers(0, 3)) else [img, draw(st.sampled_from(_IMGS))]
    if ["--image-opts"] in words:
        srcs = [draw(st.sampled_from(["driver=qcow2,file.filename=", "file.filename="]))
                + img]
    dst = "out.img"
    if ["--target-image-opts"] in words:
        dst = draw(st.sampled_from(["driver=raw,file.filename=out.img", "out.img"]))
    return ["convert"] + draw(_shuffled(words, srcs + [dst]))


@st.composite
def _command2(draw: st.DrawFn, fmt: str) -> list[str]:
    """One qemu-img argv (without the program name)."""
    img = draw(st.sampled_from(_IMGS))
    f = draw(st.sampled_from([[], [], ["-f", fmt], ["-f", "raw"], ["-f", "qcow2"],
                              ["-f", "qcow"]]))
    kind = draw(st.sampled_from(
        ["global", "info", "map", "check", "convert", "convert", "create", "create",
         "measure", "resize", "rebase", "rebase", "compare", "amend", "bitmap", "snapshot",
         "dd", "commit"]))
    share = draw(st.sampled_from([[], [], ["-U"], ["--force-share"], ["--object",
                                  "secret,id=s0,data=x"], ["--object", "bogus,id=x"]]))
    if kind == "global":
        return draw(st.sampled_from(
            [["-T", "nosuch_event", "info", img], ["-V"], ["--version"], ["-h"],
             ["--he"], ["--", "info", img], ["-x", "info"], ["-T"], ["--trace"],
             ["-q", "info", img], ["info", "-h", img], ["--trace=nosuch", "check", img],
             ["-hV"], ["--help=1"], ["-T", "bdrv_*", "--", "bogus"], ["--vers=x"]]))
    if kind in ("info", "map", "check"):
        if draw(st.integers(0, 4)) == 0:
            img = draw(st.sampled_from(_JSON))
        words = [f] if f else []
        words += draw(st.lists(st.sampled_from(
            [["--output=json"], ["--output", "human"], ["--backing-chain"], ["-q"],
             ["-r", "leaks"], ["--repair=all"], ["--start-offset=" + draw(_NUMS)],
             ["--max-length", draw(_NUMS)], ["-s", "4k"], ["-l", "64k"], ["-T", "none"],
             ["--format=qcow2"], ["--image-opts"], share]), max_size=3))
        words = [w for w in words if w]
        ops = [img] if not any("--image-opts" in w for w in words) else [
            "driver=qcow2,file.filename=" + img]
        return [kind] + draw(_shuffled(words, ops))
    if kind == "convert":
        return _convert(draw, img, f)
    if kind == "create":
        cfmt = draw(st.sampled_from(["raw", "qcow2", "qcow2", "qcow", "vmdkx"]))
        words = [["-f", cfmt]] + draw(st.lists(st.sampled_from(
            [["-q"], ["-u"], ["-b", draw(st.sampled_from(["base.img", "base2.img", "test.img",
                                                          "missing.img", ""]))],
             ["-F", draw(st.sampled_from(["raw", "qcow2", "qcow"]))],
             ["-o", draw(st.sampled_from(["size=" + draw(_NUMS), "cluster_size=4k",
                                          "backing_file=base.img", "backing_fmt=raw",
                                          "compat=0.10,refcount_bits=8", "help", "?",
                                          "encryption=on", "preallocation=bogus",
                                          "cluster_size=" + draw(_NUMS)]))]]), max_size=4))
        ops = ["out.img"] + draw(st.sampled_from([[], [draw(_SIZES)], [draw(_NUMS)],
                                                  ["1M", "x"]]))
        return ["create"] + draw(_shuffled(words, ops))
    if kind == "measure":
        words = draw(st.lists(st.sampled_from(
            [["-O", draw(st.sampled_from(["qcow2", "raw", "qcow", "bogus"]))],
             ["-o", draw(st.sampled_from(["cluster_size=4k", "preallocation=full",
                                          "extended_l2=on", "compat=0.10", "bogus=1",
                                          "cluster_size=" + draw(_NUMS)]))],
             ["--size", draw(_NUMS)], ["--size=1G"], ["-l", "s1"], ["--output=json"],
             ["-f", fmt], ["-U"], ["--image-opts"]]), max_size=4))
        return ["measure"] + draw(_shuffled(words, draw(st.sampled_from([[], [img]]))))
    if kind == "resize":
        words = [w for w in [f] + draw(st.lists(st.sampled_from(
            [["--shrink"], ["-q"], ["--preallocation=" + draw(st.sampled_from(
                ["off", "metadata", "falloc", "full", "bogus"]))], ["--image-opts"]]),
            max_size=2)) if w]
        size = draw(st.sampled_from(["+", "-", ""])) + draw(_NUMS)
        size = draw(st.sampled_from([size, draw(_SIZES)]))
        return ["resize"] + draw(_shuffled(words, [img])) + [size]
    if kind == "rebase":
        words = [w for w in [f] + draw(st.lists(st.sampled_from(
            [["-u"], ["-q"], ["-U"], ["-b", draw(st.sampled_from(
                ["base.img", "base2.img", "", "missing.img", "test.img"]))],
             ["-F", draw(st.sampled_from(["raw", "qcow2", "bogus"]))], ["-t", "none"],
             ["-T", "writeback"], ["-p"]]), min_size=1, max_size=4)) if w]
        return ["rebase"] + draw(_shuffled(words, [img]))
    if kind == "compare":
        words = draw(st.lists(st.sampled_from(
            [["-s"], ["-q"], ["-f", fmt], ["-F", draw(st.sampled_from(["raw", "qcow2"]))],
             ["-U"], ["-M"], ["-p"], ["-T", "none"]]), max_size=3))
        return ["compare"] + draw(_shuffled(words, [img, draw(st.sampled_from(_IMGS))]))
    if kind == "amend":
        o = ",".join(draw(st.lists(st.sampled_from(
            ["compat=0.10", "compat=1.1", "compat=v3", "refcount_bits=1", "refcount_bits=64",
             "refcount_bits=3", "lazy_refcounts=on", "lazy_refcounts=off", "size=" +
             draw(_NUMS), "backing_file=base2.img", "backing_fmt=raw", "cluster_size=64k",
             "extended_l2=on", "data_file=x.img", "encrypt.format=luks", "help"]), min_size=1,
            max_size=3)))
        words = [w for w in [f, ["-o", o]] + draw(st.lists(st.sampled_from(
            [["-q"], ["--force"], ["-t", "none"], ["-o", "compat=1.1"]]), max_size=2)) if w]
        return ["amend"] + draw(_shuffled(words, [img]))
    if kind == "bitmap":
        words = draw(st.lists(st.sampled_from(
            [["--add"], ["--remove"], ["--clear"], ["--enable"], ["--disable"],
             ["--merge", draw(st.sampled_from(["b0", "b1", "nosuch"]))],
             ["-b", draw(st.sampled_from(["test.img", "out.img", "base.img"]))],
             ["-F", "qcow2"], ["-g", draw(_NUMS)], ["--granularity=64k"], ["-f", fmt]]),
            min_size=1, max_size=4))
        return ["bitmap"] + draw(_shuffled(words, [img, draw(st.sampled_from(
            ["b0", "b1", "b2", "", "a" * 1100]))]))
    if kind == "snapshot":
        words = draw(st.lists(st.sampled_from(
            [["-l"], ["-a", "s1"], ["-a", "2"], ["-c", draw(st.sampled_from(["s1", "s3"]))],
             ["-d", draw(st.sampled_from(["s1", "s2", "1", "nosuch"]))], ["-q"], ["-U"]]),
            min_size=1, max_size=2))
        return ["snapshot"] + draw(_shuffled(words, [img]))
    if kind == "dd":
        words = [w for w in [f, draw(st.sampled_from([[], ["-O", "qcow2"], ["-O", "raw"],
                                                       ["-O", "qcow"]]))] if w]
        ops = ["if=" + img, "of=" + draw(st.sampled_from(["out.img", "out.img", "test.img"]))]
        ops += draw(st.lists(st.sampled_from(
            ["bs=" + draw(_NUMS), "count=" + draw(_NUMS), "skip=" + draw(_NUMS), "bs=4k",
             "count=2", "skip=1", "conv=notrunc", "if=base.img", "bogus"]), max_size=3))
        return ["dd"] + draw(_shuffled(words, ops))
    words = [w for w in [f] + draw(st.lists(st.sampled_from(
        [["-d"], ["-q"], ["-b", draw(st.sampled_from(["base.img", "test.img", "x.img"]))],
         # (a small -r throttles QEMU's job to a crawl; gqemu does not throttle)
         ["-r", draw(st.sampled_from(["0", "1G", "x", "-1", "4 k", "8E"]))],
         ["-t", draw(st.sampled_from(["none", "bogus"]))]]),
        max_size=2)) if w]
    # (no -p: QEMU's commit job redraws the progress as often as it is
    # scheduled, a number of lines that varies from run to run)
    return ["commit"] + draw(_shuffled(words, [img]))


@_settings(6)
@given(data=st.data())
def test_random_qemu_img_session2(qemu_img: str, qemu_io: str,
                                  tmp_path_factory: pytest.TempPathFactory,
                                  data: st.DataObject) -> None:
    fmt, steps = data.draw(_state2())
    cmds = data.draw(st.lists(_command2(fmt), min_size=2, max_size=6))
    work = tmp_path_factory.mktemp("imgfuzz2")
    problems = session(qemu_img, qemu_io, work, steps, cmds)
    assert not problems, "\n".join(problems + ["setup:"] + [" ".join(s) for s in steps]
                                   + ["commands:"] + [" ".join(c) for c in cmds])


# Sessions the fuzzer found differing (each failed before its fix).
_FOUND = FOUND2


@pytest.mark.parametrize("name", sorted(_FOUND))
def test_found_session2(name: str, qemu_img: str, qemu_io: str, tmp_path: Path) -> None:
    steps, cmds = _FOUND[name]
    problems = session(qemu_img, qemu_io, tmp_path, steps, cmds)
    assert not problems, "\n".join(problems)
