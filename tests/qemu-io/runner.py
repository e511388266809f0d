"""Differential runner: one qemu-io command script through the real
``qemu-io`` and through ``gqemu-io`` on identical images.

A script (``tests/qemu-io/*.qio``) is a list of qemu-io commands, one per
line, each passed as a ``-c`` argument (or, with ``#% stdin``, fed on stdin
as an interactive session).  ``#`` starts a comment; ``#%`` lines are
directives:

    #% size: 1M                  image size (default 1M)
    #% formats: raw qcow2        formats the script is meant for (default both)
    #% args: -r -t none          extra tool arguments before the commands
    #% setup: write -P 0x11 0 1M a command run by the real qemu-io on the
                                 fresh image before both tools see it
    #% stdin                     send the commands on stdin instead of -c
    #% nofile                    do not name the image on the command line
    #% file: NAME                name given on the command line (default
                                 test.img; the image itself is always test.img)
    #% aux: NAME: TEXT           create file NAME holding TEXT (``\\n`` = newline)
    #% qemu-img: ARGS            run the real qemu-img with ARGS in the image
                                 directory first (e.g. to build a backing
                                 chain; if it creates test.img, that is the
                                 image)
    #% qemu-io: ARGS             likewise with the real qemu-io
    #% stdout: ignore            compare exit status and stderr only

``{img}`` in a command or argument becomes the image's file name, ``{fmt}``
the format under test.  Both
tools run in their own directory with the image under the same name and
both are called ``qemu-io`` (argv[0]), so messages match word for word.
Outputs are compared after replacing the timing figures, as qemu-iotests'
``_filter_qemu_io`` does; the exit status must match; raw images must end
byte-identical, qcow2 images must read the same (``qemu-img compare``) and
gqemu's must pass ``qemu-img check`` when qemu-io's does, with the same
``qemu-img check`` report (leaks,
image end offset, allocation figures) and the same ``qemu-img map
--output=json`` (which clusters are data, zero or unallocated, at which host
offsets).

Run directly to see differences:
``python tests/qemu-io/runner.py [-f raw|qcow2] [script.qio ...]``.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

CORPUS = Path(__file__).resolve().parent
FORMATS = ("raw", "qcow2")
GQEMU_IO = ("import sys; sys.argv[0] = 'qemu-io'; "
            "from gqemu.cli.qemu_io import main; sys.exit(main())")

_TIMING = re.compile(
    r"(\d+ ops); [0-9/:. sec]+ \([0-9/.infa-]+ [EPTGMKiBbytes]+/sec "
    r"and [0-9/.infa-]+ ops/sec\)")
_NODE_ID = re.compile(r"#block[0-9]{3,}")
_TMP_OVERLAY = re.compile(r"/vl\.[A-Za-z0-9]{6}\b")
_CFLAG = re.compile(r"^((?:\S+> )*-?\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[0-9.infa-]+,"
                    r"[0-9.infa-]+$", re.M)       # (after stdin prompts too)


def filter_qemu_io(text: str) -> str:
    """Replace the timing figures and generated node names.  QEMU:
    tests/qemu-iotests common.filter _filter_qemu_io,
    _filter_generated_node_ids."""
    text = _TIMING.sub(r"\1; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)", text)
    # generated node names end in two random digits (_filter_generated_node_ids)
    text = _NODE_ID.sub("NODE_NAME", text)
    text = _TMP_OVERLAY.sub("/vl.XXXXXX", text)       # -s: mkstemp's overlay name
    return _CFLAG.sub(r"\1,\2,TIME", text)


@dataclass
class Script:
    path: Path
    commands: list[str] = field(default_factory=list)
    size: str = "1M"
    formats: tuple[str, ...] = FORMATS
    args: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    stdin: bool = False
    nofile: bool = False
    file: str = "test.img"
    check_stdout: bool = True
    aux: dict[str, str] = field(default_factory=dict)
    prep: list[tuple[str, list[str]]] = field(default_factory=list)
    prep_check: bool = True            # a failing preparation step is an error

    @property
    def name(self) -> str:
        return self.path.stem


def load(path: Path) -> Script:
    s = Script(path)
    for raw in path.read_text().splitlines():
        line = raw.rstrip("\n")
        if line.startswith("#%"):
            key, _, value = line[2:].strip().partition(":")
            key, value = key.strip(), value.strip()
            if key == "size":
                s.size = value
            elif key == "formats":
                s.formats = tuple(value.split())
            elif key == "args":
                s.args += shlex.split(value)
            elif key == "setup":
                s.setup.append(value)
            elif key == "stdin":
                s.stdin = True
            elif key == "nofile":
                s.nofile = True
            elif key == "file":
                s.file = value
            elif key in ("qemu-img", "qemu-io"):
                s.prep.append((key, shlex.split(value)))
            elif key == "aux":
                name, _, text = value.partition(":")
                s.aux[name.strip()] = text.strip().replace("\\n", "\n")
            elif key == "stdout":
                s.check_stdout = value != "ignore"
            else:
                raise ValueError("%s: unknown directive %r" % (path, key))
        elif line.strip().startswith("#") or not line.strip():
            continue
        else:
            s.commands.append(line.strip())
    return s


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.qio"))


@dataclass(frozen=True)
class SparseImage:
    """A large image file's content without reading its holes: the size and
    the non-zero 64 KiB chunks of its data extents (SEEK_DATA/SEEK_HOLE), so
    that a session that truncates a raw image to 1T compares in memory."""
    size: int
    chunks: tuple[tuple[int, bytes], ...]

    def __len__(self) -> int:
        return self.size


_CHUNK = 65536
_WHOLE_LIMIT = 64 << 20                # images up to this size are read whole


def snapshot(image: Path) -> "bytes | SparseImage | None":
    if not image.is_file():
        return None
    size = image.stat().st_size
    if size <= _WHOLE_LIMIT:
        return image.read_bytes()
    chunks = []
    with image.open("rb") as f:
        fd, pos = f.fileno(), 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:                    # ENXIO: only a hole is left
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            for c in range(data // _CHUNK, (hole + _CHUNK - 1) // _CHUNK):
                buf = os.pread(fd, _CHUNK, c * _CHUNK)
                if buf.strip(b"\0") and (not chunks or chunks[-1][0] != c):
                    chunks.append((c, buf))
            pos = hole
    return SparseImage(size, tuple(chunks))


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    image: "bytes | SparseImage | None"


def _argv(s: Script, fmt: str) -> tuple[list[str], Optional[str]]:
    def sub(text: str) -> str:
        return text.replace("{img}", s.file).replace("{fmt}", fmt)
    args = [sub(a) for a in s.args]
    if "--image-opts" not in args and "-f" not in args and not s.nofile:
        args = ["-f", fmt] + args
    stdin = None
    cmds = [sub(c) for c in s.commands]
    if s.stdin:
        stdin = "".join(c + "\n" for c in cmds)
    else:
        for c in cmds:
            args += ["-c", c]
    if not s.nofile:
        args.append(sub(s.file))
    return args, stdin


def _run(cmd: list[str], cwd: Path, stdin: Optional[str], image: Path) -> Result:
    env = dict(os.environ, LC_ALL="C")
    # gqemu-io from this checkout, not whichever gqemu is installed
    env["PYTHONPATH"] = os.pathsep.join([str(CORPUS.parents[1])] + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # compile gqemu once, not on every run, without writing into the tree
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(),
                                              "gqemu-io-pycache")
    exe, cmd = cmd[0], ["qemu-io"] + cmd[1:] if cmd[0] != sys.executable else cmd
    p = subprocess.run(cmd, executable=exe, cwd=cwd, input=stdin if stdin is not None else "",
                       capture_output=True, text=True, timeout=60, env=env)
    return Result(p.returncode, p.stdout, p.stderr, snapshot(image))


def run_both(s: Script, fmt: str, qemu_io: str, qemu_img: str,
             workdir: Path) -> tuple[Result, Result]:
    """Run the script through both tools; returns (qemu, gqemu)."""
    base = workdir / "base"
    base.mkdir()
    img = base / "test.img"
    for name, text in s.aux.items():
        (base / name).write_text(text)
    for tool, args in s.prep:
        exe = qemu_img if tool == "qemu-img" else qemu_io
        subprocess.run([exe] + [a.replace("{fmt}", fmt) for a in args], cwd=base,
                       check=s.prep_check, capture_output=True)
    if not img.exists():
        subprocess.run([qemu_img, "create", "-q", "-f", fmt, str(img), s.size],
                       check=True)
    for cmd in s.setup:
        subprocess.run([qemu_io, "-f", fmt, "-c", cmd, str(img)], check=True,
                       capture_output=True)
    results = []
    for tag, prefix in (("qemu", [qemu_io]),
                        ("gqemu", [sys.executable, "-c", GQEMU_IO])):
        d = workdir / tag
        shutil.copytree(base, d)
        args, stdin = _argv(s, fmt)
        results.append(_run(prefix + args, d, stdin, d / "test.img"))
    return results[0], results[1]


def compare(s: Script, fmt: str, q: Result, g: Result, qemu_img: str,
            workdir: Path) -> list[str]:
    """Differences between the two runs, as readable text (empty: equal)."""
    problems = []
    if q.rc != g.rc:
        problems.append("exit status: qemu-io %d, gqemu-io %d" % (q.rc, g.rc))
    streams = [("stderr", q.stderr, g.stderr)]
    if s.check_stdout:
        streams.insert(0, ("stdout", q.stdout, g.stdout))
    for name, a, b in streams:
        fa, fb = filter_qemu_io(a), filter_qemu_io(b)
        if fa != fb:
            diff = difflib.unified_diff(fa.splitlines(), fb.splitlines(),
                                        "qemu-io " + name, "gqemu-io " + name,
                                        lineterm="")
            problems.append("\n".join(diff))
    if "Traceback" in g.stderr:
        problems.append("gqemu-io printed a traceback")
    if q.image is None or g.image is None:
        if (q.image is None) != (g.image is None):
            problems.append("image exists for one tool only")
        return problems
    if fmt == "raw":
        if isinstance(q.image, SparseImage) or isinstance(g.image, SparseImage):
            if q.image != g.image:
                problems.append("images differ (sizes %d/%d)"
                                % (len(q.image), len(g.image)))
        elif q.image != g.image:
            first = next(i for i in range(min(len(q.image), len(g.image)) + 1)
                         if i >= min(len(q.image), len(g.image))
                         or q.image[i] != g.image[i])
            problems.append("images differ (sizes %d/%d, first at byte %d)"
                            % (len(q.image), len(g.image), first))
    else:
        qi, gi = workdir / "qemu" / "test.img", workdir / "gqemu" / "test.img"
        p = subprocess.run([qemu_img, "compare", "-f", fmt, "-F", fmt,
                            str(qi), str(gi)], capture_output=True, text=True)
        if p.returncode == 4:                      # read error
            # an image that cannot be read (e.g. a compressed cluster whose
            # data write failed): both must fail in the same way
            problems += _unreadable_problems(fmt, qemu_img, workdir)
        elif p.returncode != 0:
            problems.append("qemu-img compare: " + (p.stdout + p.stderr).strip())
        p = subprocess.run([qemu_img, "check", "-f", fmt, str(gi)],
                           capture_output=True, text=True)
        if p.returncode != 0 and subprocess.run(
                [qemu_img, "check", "-f", fmt, str(qi)], capture_output=True).returncode == 0:
            # (when qemu-io's image fails too, e.g. the leaks of an injected
            # error, the two check reports must agree: _layout_problems)
            problems.append("qemu-img check of gqemu's image: "
                            + (p.stdout + p.stderr).strip())
        problems += _layout_problems(fmt, qemu_img, workdir)
    return problems


def _unreadable_problems(fmt: str, qemu_img: str, workdir: Path) -> list[str]:
    out = []
    for t in ("qemu", "gqemu"):
        p = subprocess.run([qemu_img, "convert", "-f", fmt, "-O", "raw", "test.img",
                            "content.raw"], cwd=workdir / t, capture_output=True, text=True)
        data = (workdir / t / "content.raw").read_bytes() if p.returncode == 0 else b""
        out.append((p.returncode, p.stderr, data))
    if out[0] != out[1]:
        return ["qemu-img convert of the images: qemu-io's %r, gqemu-io's %r"
                % (out[0][:2], out[1][:2])]
    return []


def _img_report(qemu_img: str, fmt: str, d: Path, what: list[str]) -> str:
    p = subprocess.run([qemu_img] + what[:1] + ["-f", fmt] + what[1:] + ["test.img"],
                       cwd=d, capture_output=True, text=True)
    return "exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr)


def _layout_problems(fmt: str, qemu_img: str, workdir: Path) -> list[str]:
    """The real qemu-img's map and check of both images, which must agree
    (same host offsets, same allocation, same leaks and end offset)."""
    problems = []
    for what in (["map", "--output=json"], ["check"]):
        a, b = (_img_report(qemu_img, fmt, workdir / t, what) for t in ("qemu", "gqemu"))
        if a != b:
            diff = difflib.unified_diff(a.splitlines(), b.splitlines(),
                                        "qemu-io's image: qemu-img " + " ".join(what),
                                        "gqemu-io's image", lineterm="")
            problems.append("\n".join(diff))
    return problems


def check_script(path: Path, fmt: str, qemu_io: str, qemu_img: str) -> list[str]:
    s = load(path)
    with tempfile.TemporaryDirectory(prefix="qio-") as tmp:
        q, g = run_both(s, fmt, qemu_io, qemu_img, Path(tmp))
        return compare(s, fmt, q, g, qemu_img, Path(tmp))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-f", "--format", action="append", choices=FORMATS)
    ap.add_argument("scripts", nargs="*", type=Path)
    a = ap.parse_args()
    qemu_io, qemu_img = shutil.which("qemu-io"), shutil.which("qemu-img")
    if not qemu_io or not qemu_img:
        print("qemu-io and qemu-img are needed", file=sys.stderr)
        return 2
    failed = 0
    for path in a.scripts or corpus():
        s = load(path)
        for fmt in a.format or s.formats:
            if fmt not in s.formats:
                continue
            problems = check_script(path, fmt, qemu_io, qemu_img)
            print("%-4s %-28s %s" % ("ok" if not problems else "FAIL", s.name, fmt))
            for p in problems:
                print("    " + p.replace("\n", "\n    "))
            failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
