"""Fixtures for the block tests: scratch images and a loop-driving helper."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """make_image(size, pattern=None, name='img.raw') -> path of a raw file
    whose byte i is (i * 7 + i // 4096) & 0xff unless ``fill`` is given."""
    def make(size: int, fill: int | None = None, name: str = "img.raw") -> Path:
        p = tmp_path / name
        if fill is None:
            block = bytes((i * 7) & 0xff for i in range(4096))
            data = bytearray()
            for k in range(-(-size // 4096)):
                data += block.translate(bytes((i + k) & 0xff for i in range(256)))
            p.write_bytes(bytes(data[:size]))
        else:
            p.write_bytes(bytes([fill]) * size)
        return p
    return make
