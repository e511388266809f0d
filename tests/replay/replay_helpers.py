"""Helpers for the replay tests: in-process CLI runs, scratch disks, refdata.

Imported as ``replay_helpers`` (a unique name: test directories are not
packages)."""
from __future__ import annotations

import lzma
import shutil
from pathlib import Path

from gqemu.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "examples"


def gqemu(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``gqemu ARGV`` in this process; returns (status, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def unxz(src: Path, dst: Path) -> Path:
    with lzma.open(src, "rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return dst
