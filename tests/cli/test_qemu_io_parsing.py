"""gqemu-io parses numbers, patterns and options exactly as qemu-io: random
arguments through both tools on a 7 EiB null-co image, outputs compared
line by line (timing figures filtered)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

import difftools
import qemu_io_corpus_runner as runner  # tests/qemu-io/runner.py, via conftest


IMAGE = "driver=null-co,size=7E,read-zeroes=on"

_digits = st.text("0123456789", min_size=1, max_size=20)
_suffix = st.sampled_from(["", "", "b", "B", "k", "K", "m", "M", "g", "G", "t",
                           "T", "p", "P", "e", "E", "x", "kb", "i", ".", ".."])
_number = st.one_of(
    st.builds(lambda d, s: d + s, _digits, _suffix),
    st.builds(lambda a, b, s: "%s.%s%s" % (a, b, s), _digits, _digits, _suffix),
    st.builds(lambda h, s: "0x" + h + s, st.text("0123456789abcdefABCDEF",
                                                  min_size=0, max_size=17), _suffix),
    st.builds(lambda p, d: p + d, st.sampled_from(["+", "-", "0", "00", ".", "0X"]),
              _digits),
    st.text("0123456789.xXkKmMgGtTpPeEbB+-", min_size=1, max_size=8),
)
_pattern = st.one_of(st.integers(-300, 300).map(str),
                     st.integers(0, 0x1ff).map(hex),
                     st.integers(0, 0o777).map(lambda v: "0%o" % v),
                     st.text("0123456789abxX-+", min_size=1, max_size=5))


def run_tool(cmd: list[str], args: list[str]) -> tuple[int, str, str]:
    env = dict(os.environ, LC_ALL="C")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(),
                                              "gqemu-io-pycache")
    exe = cmd[0]
    argv = (["qemu-io"] if exe != sys.executable else cmd) + args
    p = subprocess.run(argv, executable=exe, capture_output=True, text=True,
                       timeout=60, env=env)
    return p.returncode, runner.filter_qemu_io(p.stdout), p.stderr


def both(qemu_io: str, commands: list[str]) -> None:
    args = ["--image-opts", IMAGE]
    for c in commands:
        args += ["-c", c]
    q = run_tool([qemu_io], args)
    g = run_tool([sys.executable, "-c", runner.GQEMU_IO], args)
    assert "Traceback" not in g[2]
    assert g[1].splitlines() == q[1].splitlines(), commands
    assert g[2].splitlines() == q[2].splitlines(), commands
    assert g[0] == q[0]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_number, min_size=20, max_size=40))
def test_offsets_parse_alike(qemu_io: str, numbers: list[str]) -> None:
    cmds = []
    for n in numbers:
        cmds += ["read %s 0" % n, "read -- %s 0" % n, "alloc %s 0" % n]
    both(qemu_io, cmds)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_pattern, min_size=20, max_size=40))
def test_patterns_parse_alike(qemu_io: str, patterns: list[str]) -> None:
    cmds = []
    for p in patterns:
        cmds += ["read -P %s 0 0" % p, "read -P %s 0 16" % p,
                 "aio_read -q -P %s 0 16" % p, "aio_flush"]
    both(qemu_io, cmds)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(
    ["-v", "-q", "-C", "-P", "5", "-s", "-l", "1", "0", "16", "--", "-x",
     "-qv", "-P5", "-s1", "-l2", "-p", "-b", "1k", "-"]), min_size=0, max_size=7),
    min_size=10, max_size=25))
def test_read_options_parse_alike(qemu_io: str, argvs: list[list[str]]) -> None:
    """Option clusters, attached arguments, '--' and permuted arguments."""
    both(qemu_io, ["read " + " ".join(a) for a in argvs]
         + ["readv " + " ".join(a) for a in argvs])


def test_every_number_argument_parses_alike(qemu_io: str) -> None:
    """Each command's offset/count/length arguments (the sites that share
    parse_offset_count / cvtnum_arg), in every position, with bad values."""
    cmds = []
    for x in ("abc", "1_0", "16E", "-1", "1.5", "99999999999999999999", "0x1k"):
        for c in ("read %s 1", "read 0 %s", "write %s 1", "write 0 %s", "write -z %s 1",
                  "write -z 0 %s", "discard %s 1", "discard 0 %s", "alloc %s", "alloc 0 %s",
                  "readv %s 1", "readv 0 %s", "writev %s 1", "writev 0 1 %s",
                  "aio_read %s 1", "aio_read 0 %s", "aio_write %s 1", "aio_write 0 %s",
                  "aio_write -z %s 1", "aio_write -z 0 %s", "read -P 1 -l %s 0 1",
                  "read -P 1 -s %s 0 1", "truncate %s", "sigraise %s", "aio_flush"):
            cmds.append(c % x if "%s" in c else c)
    both(qemu_io, cmds)


def test_reopen_keeps_the_temporary_snapshot(tmp_path, qemu_img, qemu_io):
    """qemu-io -s: a reopen that changes read-only would open the temporary
    overlay again by its name, which is gone -- QEMU fails and keeps the
    overlay (and its writes); a reopen that changes nothing keeps it too.
    gqemu used to reopen the image itself and lose the overlay's writes."""
    script = r"""
qemu-img create -q -f qcow2 t.qcow2 1M
qemu-io -s -c 'write -P 5 0 4k' -c 'reopen -r' -c 'read -P 5 0 4k' -c 'reopen' \
    -c 'read -P 5 0 4k' t.qcow2 2>&1 | sed 's|/vl\.[A-Za-z0-9_]*|/vl.XXXXXX|'
echo "rc=$?"
qemu-io -c 'read -P 0 0 4k' t.qcow2
"""
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert "No such file or directory" in real and ours == real


def test_help_is_qemu_ios(tmp_path, qemu_img, qemu_io):
    # -h lists every option gqemu-io takes (--object, -s included) in
    # qemu-io's words; only the program name differs, and the wrappers are
    # named qemu-io.
    out = difftools.both("qemu-io -h; echo rc=$?", tmp_path, qemu_img, qemu_io)
    assert out[0] == out[1]
    assert "--object OBJECTDEF" in out[0] and "-s, --snapshot" in out[0]
