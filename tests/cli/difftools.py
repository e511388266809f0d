"""Run one shell script twice, once with the real ``qemu-img``/``qemu-io``
first on PATH and once with gqemu's, each in a fresh directory, and return
both outputs with the directory and qemu-io's timing figures filtered out
(as qemu-iotests' common.filter does), so a test compares them whole.

gqemu's tools are put on PATH as wrapper scripts named ``qemu-img`` and
``qemu-io`` that import this worktree's package: they name themselves after
argv[0], as QEMU's do, so their messages read ``qemu-img: ...``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]

_WRAPPER = """#!%s
import sys
sys.path.insert(0, %r)
from gqemu.cli.%s import main
sys.exit(main())
"""

_TIMING = re.compile(r"[0-9]+ ops; [0-9/:. sec]+ \([0-9/.inf]+ [EPTGMKiBbytes]+/sec "
                     r"and [0-9/.inf]+ ops/sec\)")


def gqemu_bin(where: Path) -> Path:
    """A directory holding the ``qemu-img`` and ``qemu-io`` wrappers."""
    d = where / "gqemu-bin"
    if not d.exists():
        d.mkdir(parents=True)
        for name, mod in (("qemu-img", "qemu_img"), ("qemu-io", "qemu_io")):
            p = d / name
            p.write_text(_WRAPPER % (sys.executable, str(_ROOT), mod))
            p.chmod(0o755)
    return d


def run_script(script: str, tools_dir: str, work: Path, timeout: int = 120) -> str:
    """stdout+stderr of ``script`` (bash) run in ``work`` with ``tools_dir``
    first on PATH; ``$D`` is the work directory."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=tools_dir + os.pathsep + os.environ["PATH"], D=str(work))
    p = subprocess.run(["bash", "-c", script], cwd=work, env=env, timeout=timeout,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.replace(str(work), "DIR")
    return _TIMING.sub("X ops; TIMING", out)


def both(script: str, tmp_path: Path, qemu_img: str, qemu_io: str,
         timeout: int = 120) -> tuple[str, str]:
    """(real QEMU's output, gqemu's output) of the same script."""
    real_dir = os.path.dirname(qemu_img)
    assert os.path.dirname(qemu_io) == real_dir, "qemu-img and qemu-io in one directory"
    real = run_script(script, real_dir, tmp_path / "real", timeout)
    ours = run_script(script, str(gqemu_bin(tmp_path)), tmp_path / "gqemu", timeout)
    return real, ours
