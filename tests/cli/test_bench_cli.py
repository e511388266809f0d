"""``gqemu bench``: optional anchors are extras, never installed at run time;
bad suite names are one-line usage errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gqemu.bench import qcow2 as bench_qcow2
from gqemu.cli.main import main


def test_bench_qcow2_skips_missing_dissect_and_never_installs(qemu_img, monkeypatch, capsys):
    """With dissect.hypervisor not importable the qcow2 suite says so, skips
    that anchor, and starts no installer (it used to run pip install)."""
    monkeypatch.setitem(sys.modules, "dissect", None)          # import -> ImportError
    monkeypatch.setitem(sys.modules, "dissect.hypervisor", None)
    monkeypatch.setattr(bench_qcow2, "MiB", 1 << 14)           # a 2 MiB image, not 128
    spawned: list[list[str]] = []
    real_run = subprocess.run

    def spy(cmd, *a, **kw):
        spawned.append([str(c) for c in cmd])
        assert "pip" not in spawned[-1], "the bench started an installer: %s" % cmd
        return real_run(cmd, *a, **kw)
    monkeypatch.setattr(bench_qcow2.subprocess, "run", spy)
    assert main(["bench", "qcow2", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert "dissect.hypervisor is not installed; skipping its anchor" in err
    assert "pip install -e '.[bench]'" in err
    rows = [ln for ln in out.splitlines() if "dissect.hypervisor" in ln]
    assert rows and all("skipped (not installed)" in ln for ln in rows)
    assert any(c[0] == "qemu-img" for c in spawned)            # the other anchors ran


@pytest.mark.parametrize("argv, msg", [
    (["bench", "nosuch"], "gqemu bench: unknown suite 'nosuch' (known: coroutine,"),
    (["bench", "coroutine", "-x"], "unrecognized arguments: -x"),
])
def test_bench_bad_suite_is_one_line(argv, msg):
    p = subprocess.run([sys.executable, "-c", "import sys; from gqemu.cli.main import main; "
                        "sys.exit(main())", *argv], capture_output=True, text=True)
    assert p.returncode == 2
    assert msg in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(("gqemu bench: ", "gqemu: error:",
                                                         "gqemu bench: error:"))
