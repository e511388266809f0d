"""Shared fixtures.

Interop tests need QEMU's own tools, and some tests the shared reference
data.  Locally a missing ``qemu-img``/``qemu-io``/``shared/`` piece skips
them; under ``CI=true`` it fails them, so a CI machine that lost its
``qemu-utils`` cannot go green by skipping.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFDATA = SHARED / "refdata"
SEED_DIR = SHARED / "seed"


def _missing(msg: str) -> None:
    """Skip locally, fail under CI: CI must never go green by skipping."""
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (the README's test command provides it under CI)")
    pytest.skip(msg)


def _need_tool(name: str, package: str = "Debian package qemu-utils") -> str:
    path = shutil.which(name)
    if not path:
        _missing("%s is not installed (%s)" % (name, package))
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def qemu_img() -> str:
    """Path of the real ``qemu-img``."""
    return _need_tool("qemu-img")


@pytest.fixture(scope="session")
def qemu_io() -> str:
    """Path of the real ``qemu-io``."""
    return _need_tool("qemu-io")


@pytest.fixture(scope="session")
def gqemu_io_exe() -> str:
    """Path of the installed ``gqemu-io`` console script."""
    return _need_tool("gqemu-io", "pip install -e .")


@pytest.fixture(scope="session")
def refdata() -> Path:
    """``../shared/refdata`` next to the project root."""
    if not REFDATA.is_dir():
        _missing("shared/refdata is missing next to the project")
    return REFDATA


@pytest.fixture(scope="session")
def seed_text() -> str:
    """The seed's GDB backtraces (``../shared/seed``)."""
    files = sorted(SEED_DIR.glob("*.txt")) if SEED_DIR.is_dir() else []
    if not files:
        _missing("shared/seed is missing next to the project")
    return files[0].read_text(encoding="utf-8")
