"""Helpers for the stress tests: run ``gqemu stress`` in a child process
started with GQEMU_STRESS=1 (every coroutine_fn call a scheduling point)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def gqemu_stress(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``gqemu stress ARGS`` in a scratch directory (reproducer files
    land there unless ``--out`` says otherwise)."""
    env = dict(os.environ, GQEMU_STRESS="1", PYTHONPATH=str(ROOT))
    main = "import sys; from gqemu.cli.main import main; sys.exit(main())"
    with tempfile.TemporaryDirectory(prefix="gqemu-stress-test-") as cwd:
        return subprocess.run([sys.executable, "-c", main, "stress", *args],
                              capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=cwd)


@pytest.fixture
def stress_cli():
    return gqemu_stress


def summary_json(p: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, "no JSON summary in output:\n" + p.stdout + p.stderr
    return json.loads(lines[-1])
