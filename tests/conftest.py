"""Shared fixtures.

Interop tests need QEMU's own tools.  Locally a missing ``qemu-img`` or
``qemu-io`` skips them; under ``CI=true`` it fails them, so a CI machine that
lost its ``qemu-utils`` cannot go green by skipping.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFDATA = SHARED / "refdata"


def _need_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    msg = "%s is not installed (Debian package qemu-utils)" % name
    if os.environ.get("CI") == "true":
        pytest.fail(msg + "; the test command installs it under CI")
    pytest.skip(msg)


@pytest.fixture
def qemu_img() -> str:
    """Path of the real ``qemu-img``."""
    return _need_tool("qemu-img")


@pytest.fixture
def qemu_io() -> str:
    """Path of the real ``qemu-io``."""
    return _need_tool("qemu-io")


@pytest.fixture
def refdata() -> Path:
    """``../shared/refdata`` next to the project root."""
    if not REFDATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("shared/refdata is missing next to the project")
        pytest.skip("shared/refdata is missing")
    return REFDATA
