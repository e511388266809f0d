"""Differential blkdebug matrix over qcow2 (the shape of qemu-iotests 026):
for each layout x event x errno x once x immediately, the same qemu-io
commands run through the real ``qemu-io`` and through ``gqemu-io`` on
identical images, with a blkdebug config file (``blkdebug:CONF:IMG``), then
real ``qemu-img check`` runs on both images.

Compared: exit status, stdout and stderr of the tools (timing figures
filtered as runner.py does), and the whole ``qemu-img check`` report
(corruptions, leaks, image end offset) of both images.

A layout is the image (cluster size, size, options), its preparation (run by
the real qemu-io without blkdebug, before both tools see the image) and the
commands under test.  ``python tests/qemu-io/blkdebug_matrix.py`` runs the
whole matrix and prints every difference; ``-l LAYOUT`` / ``-e EVENT``
narrow it; ``-k`` keeps going after a failure.
"""
from __future__ import annotations

import argparse
import difflib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import GQEMU_IO, filter_qemu_io  # noqa: E402


@dataclass
class Layout:
    name: str
    create: list[str]                  # qemu-img create options
    size: str
    commands: list[str]                # the qemu-io commands under test
    prep: list[str] = field(default_factory=list)   # real qemu-io, no blkdebug
    backing: Optional[list[str]] = None             # commands run on a backing file
    events: Optional[list[str]] = None              # the events worth testing here
    snapshot: bool = False                          # take an internal snapshot after prep


LAYOUTS = {
    # 026's main loop: a fresh 1G image, one 128k write (two new clusters,
    # a new L2 table, refcount updates), and the same into the VM state
    "fresh": Layout("fresh", [], "1G", ["write 0 128k"]),
    "fresh_vmstate": Layout("fresh_vmstate", [], "1G", ["write -b 0 128k"]),
    # 026's l2_load case: the L2 table and cluster 0 exist already
    "allocated": Layout("allocated", [], "1G", ["write 0 128k"], prep=["write 0 512"]),
    "allocated_vmstate": Layout("allocated_vmstate", [], "1G", ["write -b 0 128k"],
                                prep=["write -b 0 512"]),
    # 026's "avoid cluster leaks after temporary failure": the second write
    # makes the refcount block with the failed first write's clusters go out
    "twice": Layout("twice", [], "64M", ["write 0 1M", "write 0 1M"]),
    # partial-cluster writes: copy-on-write from zeroes / from a backing file
    "partial": Layout("partial", [], "1G", ["write -P 7 4k 4k", "read -P 7 4k 4k"]),
    "backing": Layout("backing", [], "1G", ["write -P 7 4k 4k", "read -P 1 0 4k"],
                      backing=["write -P 1 0 128k"]),
    # extended L2: subcluster copy-on-write
    "extl2": Layout("extl2", ["extended_l2=on"], "64M",
                    ["write -P 1 5k 3k", "write -P 2 100k 1k", "read -P 1 5k 3k"]),
    # clusters shared with an internal snapshot: the L2 table and the data
    # clusters are copied on write, the old ones lose a reference
    "snapshot": Layout("snapshot", [], "1G", ["write -P 2 4k 4k", "read -P 1 0 4k"],
                       prep=["write -P 1 0 128k"], snapshot=True),
    # existing clusters: in-place overwrite of metadata-preallocated clusters
    "prealloc": Layout("prealloc", ["preallocation=metadata"], "1M",
                       ["write -P 5 0 128k", "read -P 5 0 128k"]),
    # 026's refcount table growth tests: 512-byte clusters, 16M of data
    # (slow in gqemu: ~10 s a run, so only the events on that path)
    "refgrow": Layout("refgrow", ["cluster_size=512"], "1G", ["write 0 16M"],
                      events=["refblock_alloc", "refblock_alloc_hookup",
                              "refblock_alloc_write", "refblock_alloc_write_blocks",
                              "refblock_alloc_write_table", "refblock_alloc_switch_table",
                              "reftable_grow", "refblock_load", "refblock_update_part",
                              "cluster_alloc", "cluster_free", "l2_update", "write_aio"]),
    # the same growth, cheaper (64-bit refcounts: a table cluster covers
    # 2 MiB): for the CI slice
    "refgrow_small": Layout("refgrow_small", ["cluster_size=512", "refcount_bits=64"], "64M",
                            ["write 0 3M"], events=["reftable_grow",
                                                    "refblock_alloc_write_blocks",
                                                    "refblock_alloc_write_table",
                                                    "refblock_alloc_switch_table",
                                                    "refblock_alloc_hookup"]),
    # 026's L1 growth tests: VM state past the disk in 1k clusters
    "l1grow": Layout("l1grow", ["cluster_size=1024"], "1G", ["write -b 0 64k"]),
}

# Events the qcow2 driver raises on its own (and the block layer's write
# events on the blkdebug node)
EVENTS = [
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
    "l2_load", "l2_update", "l2_alloc_cow_read", "l2_alloc_write",
    "read_aio", "read_backing_aio", "write_aio", "vmstate_save",
    "cow_read", "cow_write",
    "reftable_load", "reftable_grow", "reftable_update",
    "refblock_load", "refblock_update", "refblock_update_part",
    "refblock_alloc", "refblock_alloc_hookup", "refblock_alloc_write",
    "refblock_alloc_write_blocks", "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "cluster_alloc_space",
    "flush_to_os", "flush_to_disk",
    "pwritev", "pwritev_zero", "pwritev_done",
]


@dataclass(frozen=True)
class Case:
    layout: str
    event: str
    errno: int
    once: bool
    imm: bool

    @property
    def name(self) -> str:
        return "%s-%s-%d-%s-%s" % (self.layout, self.event, self.errno,
                                   "once" if self.once else "always",
                                   "imm" if self.imm else "bh")


def all_cases(layouts=None, events=None) -> list[Case]:
    return [Case(lay, ev, err, once, imm)
            for lay in (layouts or LAYOUTS)
            for ev in (events or LAYOUTS[lay].events or EVENTS)
            for err, once, imm in itertools.product((5, 28), (True, False), (False, True))]


def config_text(c: Case) -> str:
    return ('[inject-error]\nevent = "%s"\nerrno = "%d"\nonce = "%s"\nimmediately = "%s"\n'
            % (c.event, c.errno, "on" if c.once else "off", "on" if c.imm else "off"))


def _env() -> dict:
    env = dict(os.environ, LC_ALL="C")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "gqemu-io-pycache")
    return env


def _tool(argv: list[str], cwd: Path, gqemu: bool) -> subprocess.CompletedProcess:
    if gqemu:
        cmd, exe = [sys.executable, "-c", GQEMU_IO] + argv, sys.executable
    else:
        cmd, exe = ["qemu-io"] + argv, shutil.which("qemu-io")
    return subprocess.run(cmd, executable=exe, cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=_env())


def prepare(lay: Layout, base: Path, qemu_img: str, qemu_io: str) -> None:
    base.mkdir(parents=True)
    opts = ["-o", ",".join(lay.create)] if lay.create else []
    if lay.backing is not None:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "base.img", lay.size],
                       cwd=base, check=True)
        for cmd in lay.backing:
            subprocess.run([qemu_io, "-f", "qcow2", "-c", cmd, "base.img"], cwd=base,
                           check=True, capture_output=True)
        opts += ["-b", "base.img", "-F", "qcow2"]
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2"] + opts + ["test.img", lay.size],
                   cwd=base, check=True)
    for cmd in lay.prep:
        subprocess.run([qemu_io, "-f", "qcow2", "-c", cmd, "test.img"], cwd=base,
                       check=True, capture_output=True)
    if lay.snapshot:
        subprocess.run([qemu_img, "snapshot", "-c", "s1", "test.img"], cwd=base,
                       check=True, capture_output=True)


def _diff(what: str, a: str, b: str) -> str:
    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), "qemu " + what,
                                          "gqemu " + what, lineterm=""))


def run_case(c: Case, work: Path, qemu_img: str, qemu_io: str) -> list[str]:
    """Differences between QEMU and gqemu for one case (empty: equal)."""
    return run_config(LAYOUTS[c.layout], config_text(c), work, qemu_img, qemu_io)


def run_config(lay: Layout, conf: str, work: Path, qemu_img: str, qemu_io: str,
               outputs: Optional[dict] = None) -> list[str]:
    """Differences between QEMU and gqemu running the layout's commands over
    blkdebug with the config text ``conf`` (empty: equal).  ``outputs``, if
    given, receives each tool's (run, check) CompletedProcess pair."""
    base = work / "base"
    prepare(lay, base, qemu_img, qemu_io)
    (base / "blkdebug.conf").write_text(conf)
    argv = ["-f", "qcow2"]
    for cmd in lay.commands:
        argv += ["-c", cmd]
    argv.append("blkdebug:blkdebug.conf:test.img")
    out = outputs if outputs is not None else {}
    for tag in ("qemu", "gqemu"):
        d = work / tag
        shutil.copytree(base, d)
        p = _tool(argv, d, tag == "gqemu")
        chk = subprocess.run([qemu_img, "check", "test.img"], cwd=d, capture_output=True,
                             text=True)
        out[tag] = (p, chk)
    problems = []
    (qp, qc), (gp, gc) = out["qemu"], out["gqemu"]
    if qp.returncode != gp.returncode:
        problems.append("exit status: qemu-io %d, gqemu-io %d" % (qp.returncode, gp.returncode))
    for what, a, b in (("stdout", qp.stdout, gp.stdout), ("stderr", qp.stderr, gp.stderr)):
        fa, fb = filter_qemu_io(a), filter_qemu_io(b)
        if fa != fb:
            problems.append(_diff(what, fa, fb))
    if "Traceback" in gp.stderr:
        problems.append("gqemu-io printed a traceback")
    if gc.returncode not in (0, 3):
        problems.append("qemu-img check of gqemu's image exits %d" % gc.returncode)
    qtext, gtext = qc.stdout + qc.stderr, gc.stdout + gc.stderr
    if qc.returncode != gc.returncode or qtext != gtext:
        problems.append(_diff("check", qtext, gtext))
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-l", "--layout", action="append", choices=sorted(LAYOUTS))
    ap.add_argument("-e", "--event", action="append")
    ap.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    a = ap.parse_args()
    qemu_io, qemu_img = shutil.which("qemu-io"), shutil.which("qemu-img")
    if not qemu_io or not qemu_img:
        print("qemu-io and qemu-img are needed", file=sys.stderr)
        return 2
    cases = all_cases(a.layout, a.event)
    failed = 0
    for c in cases:
        with tempfile.TemporaryDirectory(prefix="bdm-") as tmp:
            problems = run_case(c, Path(tmp), qemu_img, qemu_io)
        failed += bool(problems)
        if problems or not a.quiet:
            print("%-4s %s" % ("FAIL" if problems else "ok", c.name), flush=True)
        for p in problems:
            print("    " + p.replace("\n", "\n    "), flush=True)
    print("%d cases, %d failed" % (len(cases), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
