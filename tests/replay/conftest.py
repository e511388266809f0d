"""Fixtures of the replay tests."""
from __future__ import annotations

import pytest

from gqemu.machine import make_scratch_disk


@pytest.fixture
def scratch(tmp_path):
    """A function making a fresh self-describing 16 MiB disk in tmp_path."""
    def make(name: str = "disk.img"):
        p = tmp_path / name
        make_scratch_disk(str(p))
        return p
    return make
