"""A slice of QEMU 7.2's own qemu-iotests (tests/iotests-slice.txt) run
against gqemu-io and gqemu-img through the shared runner
(../shared/tools/iotests.sh, QEMU's ./check with our tools as qemu-io and
qemu-img).

It runs only when CI=true or GQEMU_IOTESTS=1 (it takes minutes), and then
it needs the runner next to the project and, the first time on a machine,
network access to Debian's source mirror: the runner fetches QEMU 7.2's
test sources with ``apt-get source`` into ${TMPDIR:-/tmp}/qemu-7.2-iotests.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT.parent / "shared" / "tools" / "iotests.sh"
SLICE = ROOT / "tests" / "iotests-slice.txt"

WRAPPER = """#!%(python)s
import sys
sys.path.insert(0, %(root)r)
from gqemu.cli.%(module)s import main
sys.exit(main())
"""


def load_slice(path: Path = SLICE) -> dict[str, list[str]]:
    """{format: [test, ...]} from ``FORMAT TEST`` lines (``#`` comments)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fmt, test = line.split()
        out.setdefault(fmt, []).append(test)
    return out


def test_slice_names_tests_of_the_full_lists() -> None:
    """Every slice entry is in the runner's list for its format."""
    tests = load_slice()
    assert set(tests) == {"raw", "qcow2"}
    assert sum(len(v) for v in tests.values()) >= 20
    lists = RUNNER.parent
    if not lists.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("%s is missing" % lists)
        pytest.skip("../shared/tools is missing")
    for fmt, names in tests.items():
        full = (lists / ("iotests-%s.txt" % fmt)).read_text().split()
        assert not set(names) - set(full), fmt


def _wanted() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("GQEMU_IOTESTS") == "1"


@pytest.mark.timeout(900)
@pytest.mark.skipif(not _wanted(), reason="QEMU's qemu-iotests slice runs only with CI=true "
                    "or GQEMU_IOTESTS=1 (minutes; first run fetches the test sources "
                    "with apt-get source)")
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_iotests_slice(fmt: str, tmp_path: Path) -> None:
    if not RUNNER.is_file():
        pytest.fail("the iotests runner is missing: %s" % RUNNER)
    tests = load_slice()[fmt]
    progs = {}
    for name, module in (("gqemu-io", "qemu_io"), ("gqemu-img", "qemu_img")):
        p = tmp_path / name
        p.write_text(WRAPPER % {"python": sys.executable, "root": str(ROOT),
                                "module": module})
        p.chmod(0o755)
        progs[name] = str(p)
    env = dict(os.environ, IOTESTS_JOBS=os.environ.get("IOTESTS_JOBS", "1"))
    p = subprocess.run(["bash", str(RUNNER), fmt, progs["gqemu-io"], progs["gqemu-img"],
                        *tests], capture_output=True, text=True, env=env, timeout=840)
    out = p.stdout + p.stderr
    last = out.strip().splitlines()[-1] if out.strip() else ""
    assert p.returncode == 0 and last == "iotests %s: %d/%d passed" % (
        fmt, len(tests), len(tests)), out[-6000:]
