"""The README's usage examples, parsed from README.md and run as written (in
a scratch directory), so the README and gqemu cannot drift apart: each exits
as documented, the planted stress bug is found with the seed shown, and
every file they leave behind is in .gitignore.

The first block (pip install + the seed scenario, then scripts/test) is what
``.ci/run`` runs.  The scratch directory has ``shared`` beside it, as the
project has, so the lines that read ``../shared/refdata`` run too.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Run elsewhere: comparing the README's 1 GiB image takes gqemu-img ~8 s
# (tests/cli/test_qemu_img.py compares images against qemu-img's answers).
SLOW = {("gqemu-img", "compare")}
TOOLS = {"gqemu": "gqemu.cli.main", "gqemu-img": "gqemu.cli.qemu_img",
         "gqemu-io": "gqemu.cli.qemu_io"}


def readme_commands() -> list[list[str]]:
    """Every command of the README's sh blocks after the first, one argv
    each (comments dropped, ``a && b`` split), in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    cmds = []
    for block in blocks[1:]:
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cmd = words[:words.index("&&")] if "&&" in words else words
                words = words[len(cmd) + 1:]
                if cmd and tuple(cmd[:2]) not in SLOW:
                    cmds.append(cmd)
    return cmds


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    if cmd[0] not in TOOLS:                         # xz -dc ... > file
        return subprocess.run(shlex.join(cmd).replace("'>'", ">"), shell=True, cwd=cwd,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
    prog = "import sys; sys.argv[0] = %r; from %s import main; sys.exit(main())" \
        % (cmd[0], TOOLS[cmd[0]])
    return subprocess.run([sys.executable, "-c", prog, *cmd[1:]], cwd=cwd,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def ignored(name: str) -> bool:
    for pat in (ROOT / ".gitignore").read_text().splitlines():
        pat = pat.strip()
        if pat and not pat.startswith("#") and fnmatch.fnmatch(name, pat.strip("/")):
            return True
    return False


def test_readme_examples_run_as_documented(tmp_path, qemu_img, refdata):
    (tmp_path / "shared").symlink_to(refdata.parent)
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    cmds = readme_commands()
    joined = [" ".join(c) for c in cmds]
    # the examples this test is about are still there
    assert "gqemu mkdisk disk.img --size 16M" in joined
    assert any(j.startswith("gqemu run scripts/examples/dma.py --drive file=disk.img,")
               for j in joined)
    plant = [c for c in cmds if "--plant" in c]
    repro = [c for c in cmds if "--repro" in c]
    assert len(plant) == len(repro) == 1 and "--seed" in plant[0]
    assert any(c[0] == "gqemu" and c[1] == "replay" and "ref.gqt" in c for c in cmds)
    outputs = {}
    kvm = os.path.exists("/dev/kvm")
    for cmd in cmds:
        if "--accel" in cmd and not kvm:
            continue                                    # /dev/kvm absent here
        p = run(cmd, tmp_path)
        want = 1 if cmd in (plant[0], repro[0]) else 0        # a failure found / reproduced
        if "--accel" in cmd:
            want = 33                                   # isa-debug-exit 0x10, as QEMU
        assert p.returncode == want, "%s: exit %d\n%s%s" % (" ".join(cmd), p.returncode,
                                                           p.stdout, p.stderr)
        assert "Traceback" not in p.stderr
        outputs[" ".join(cmd)] = p.stdout
    dma = next(v for k, v in outputs.items() if "dma.py" in k)
    assert dma.startswith("READ DMA lba 16 x8: sectors say [16, 17, 18, 19, 20, 21, 22, 23]\n")
    found = outputs[" ".join(plant[0])]
    assert "invariant comutex_fifo violated" in found
    name = repro[0][-1]
    assert "reproducer: ./%s (replays exactly)" % name in found
    assert "reproduced exactly" in outputs[" ".join(repro[0])]
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("scripts", "tests"))
    assert name in left and "disk.img" in left
    assert [n for n in left if not ignored(n)] == []
