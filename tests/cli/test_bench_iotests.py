"""``gqemu bench iotests``: the wiring, with a fake runner and fake QEMU
programs (the real suite takes minutes; its figures are never asserted)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from gqemu.bench import iotests
from gqemu.cli.bench import SUITES, default_suites
from gqemu.cli.main import main

# Logs each call, shows which programs it was given really run, and reports
# every test passed -- or, with FAKE_FAIL set, one failed for gqemu's programs.
FAKE_RUNNER = r"""#!/usr/bin/env bash
fmt=$1 io=$2 img=$3
shift 3
echo "CALL $fmt $io $img jobs=$IOTESTS_JOBS tests=$*" >> "$FAKE_LOG"
echo "VERSION $("$img" --version | head -n 1)" >> "$FAKE_LOG"
kind=file
[ -p /dev/stdout ] && kind=pipe
echo "STDOUT $kind" >> "$FAKE_LOG"
n=$#
p=$n
case "$io" in *gqemu-io) [ -n "$FAKE_FAIL" ] && p=$((n - 1)) ;; esac
# with FAKE_BURN set, a process under the runner spends that much CPU time
# for gqemu's programs
case "$io" in *gqemu-io) [ -n "$FAKE_BURN" ] && "$FAKE_PYTHON" -c "
import time
while time.process_time() < $FAKE_BURN:
    pass" ;; esac
echo "iotests $fmt: $p/$n passed"
[ "$p" -eq "$n" ]
"""

FAKE_QEMU = """#!/usr/bin/env bash
echo "%s version 7.2.0 (fake)"
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    runner = tmp_path / "iotests.sh"
    runner.write_text(FAKE_RUNNER)
    runner.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("qemu-io", "qemu-img"):
        p = bindir / name
        p.write_text(FAKE_QEMU % name)
        p.chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_BURN", raising=False)
    monkeypatch.setenv("FAKE_PYTHON", sys.executable)
    monkeypatch.delenv("IOTESTS_JOBS", raising=False)
    return runner, bindir, log


def test_runs_the_slice_on_qemu_then_on_gqemu_and_prints_the_ratio(fake, capsys):
    runner, bindir, log = fake
    assert main(["bench", "iotests", "--iotests-runner", str(runner)]) == 0
    out = capsys.readouterr().out
    lines = log.read_text().splitlines()
    calls = [ln.split() for ln in lines if ln.startswith("CALL")]
    versions = [ln for ln in lines if ln.startswith("VERSION")]
    warm, calls, versions = calls[0], calls[1:], versions[1:]     # untimed, real QEMU
    assert warm[2:] == [str(bindir / "qemu-io"), str(bindir / "qemu-img"), "jobs=1",
                        "tests=" + iotests.SLICE["raw"][0]]
    assert [c[1] for c in calls] == ["raw", "raw", "qcow2", "qcow2"]
    for i, (fmt, tests) in enumerate(iotests.SLICE.items()):
        real, ours = calls[2 * i], calls[2 * i + 1]
        assert real[2:4] == [str(bindir / "qemu-io"), str(bindir / "qemu-img")]
        assert Path(ours[2]).name == "gqemu-io" and Path(ours[3]).name == "gqemu-img"
        assert not Path(ours[2]).parent.exists()           # wrappers removed afterwards
        assert real[4] == ours[4] == "jobs=1"
        assert real[5:] == ours[5:] == ["tests=" + tests[0], *tests[1:]]
        assert "qemu-img version 7.2.0 (fake)" in versions[2 * i]
        assert "gqemu-img version" in versions[2 * i + 1]     # the wrapper runs gqemu
    # a pipe would end only when the real runner's left-over `sleep 5`
    # (its watchdog's) exits: every time rounded up to 5 s
    assert {ln for ln in lines if ln.startswith("STDOUT")} == {"STDOUT file"}
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("raw", "qcow2", "all"))}
    assert set(rows) == {"raw", "qcow2", "all"}
    for fmt in ("raw", "qcow2"):
        assert "5/5" in rows[fmt] and "x " in rows[fmt] and "(target <= 3.00x)" in rows[fmt]
    assert "(target <= 3.00x)" in rows["all"]


def test_cpu_time_of_everything_under_the_runner_is_reported(fake, capsys, monkeypatch):
    """The CPU column counts the processes the runner starts (a loaded host
    stretches wall time, not CPU time): 0.4 s spent by a grandchild of the
    runner for gqemu's programs shows in gqemu's figure of each format."""
    runner, _bindir, _log = fake
    monkeypatch.setenv("FAKE_BURN", "0.4")
    monkeypatch.setattr(iotests, "_warm_up", lambda *a: None)
    assert main(["bench", "iotests", "--iotests-runner", str(runner)]) == 0
    out = capsys.readouterr().out
    assert "CPU ratio" in out
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("raw", "qcow2", "all"))}
    for fmt, n in (("raw", 1), ("qcow2", 1), ("all", 2)):
        m = re.search(r"x \((\d+\.\d) / (\d+\.\d) s\)", rows[fmt])
        assert m, rows[fmt]
        assert float(m.group(1)) >= 0.4 * n - 0.05, rows[fmt]
        assert float(m.group(2)) < float(m.group(1)), rows[fmt]


def test_a_run_that_does_not_pass_everything_is_not_comparable(fake, capsys, monkeypatch):
    runner, _bindir, _log = fake
    monkeypatch.setenv("FAKE_FAIL", "1")
    monkeypatch.setattr(iotests, "_warm_up", lambda *a: None)
    assert main(["bench", "iotests", "--iotests-runner", str(runner)]) == 1
    cap = capsys.readouterr()
    assert "not comparable" in cap.out and "4/5" in cap.out
    assert "iotests: raw on gqemu: 4/5 passed" in cap.err


def test_no_runner(fake, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(iotests, "DEFAULT_RUNNER", str(tmp_path / "nowhere" / "iotests.sh"))
    assert main(["bench", "iotests"]) == 0
    assert "iotests: skipped: no runner" in capsys.readouterr().out
    assert main(["bench", "iotests", "--iotests-runner", str(tmp_path / "nope.sh")]) == 2
    err = capsys.readouterr().err
    assert err == "gqemu bench: --iotests-runner: %s: no such file\n" % (tmp_path / "nope.sh")


def test_opt_in_only():
    assert SUITES["iotests"] == "gqemu.bench.iotests"
    assert "iotests" not in default_suites()
    assert set(default_suites()) == set(SUITES) - {"iotests"}


def test_slice_is_part_of_the_ci_slice():
    """The bench's tests are ones CI runs (and so passes) through
    tests/cli/test_iotests_slice.py."""
    ci: set[tuple[str, str]] = set()
    text = (Path(__file__).resolve().parents[1] / "iotests-slice.txt").read_text()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            fmt, test = line.split()
            ci.add((fmt, test))
    bench = {(fmt, t) for fmt, tests in iotests.SLICE.items() for t in tests}
    assert len(bench) >= 10 and bench <= ci
