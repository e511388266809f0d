"""``--trace``/``-T`` with a name that is no event: QEMU's warning, checked
against real qemu-io and qemu-system-x86_64's wording; globs that match
nothing are accepted silently, as QEMU accepts them."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path


from gqemu import trace

ROOT = Path(__file__).resolve().parents[2]
READ_LBA0 = ROOT / "scripts" / "examples" / "read_lba0.py"


def gqemu_run(*trace_args):
    p = subprocess.run([sys.executable, "-c", "import sys; from gqemu.cli.main import main; "
                        "sys.exit(main())", "run", str(READ_LBA0), *trace_args,
                        "--trace-file", "/dev/null"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "LBA 0: '<LBA 0x00000000>'\n"        # the run went on
    return p.stderr


def gqemu_io(*argv, cwd):
    p = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'gqemu-io'; "
                        "from gqemu.cli.qemu_io import main; sys.exit(main())", *argv],
                       capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr


def test_run_warns_like_qemu_system():
    err = gqemu_run("--trace", "nosuchevent", "--trace", "nosuch*,-bogus,ide_reset,kvm_run_exit")
    assert err.splitlines() == [
        "gqemu run: --trace nosuchevent: warning: trace event 'nosuchevent' does not exist",
        "gqemu run: --trace nosuch*,-bogus,ide_reset,kvm_run_exit: warning: "
        "trace event 'bogus' does not exist",
    ]


def test_real_qemu_system_wording(qemu_system):
    """The wording gqemu run copies (scripts/test installs qemu-system-x86)."""
    qemu = qemu_system
    # -machine none with a bad -accel exits at once, after the -trace warnings
    p = subprocess.run([qemu, "-trace", "nosuchevent", "-trace", "nosuch*", "-trace", "-bogus",
                        "-machine", "none", "-display", "none", "-accel", "nosuchaccel"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = [ln for ln in p.stderr.splitlines() if "trace" in ln]
    assert lines == [
        "qemu-system-x86_64: -trace nosuchevent: warning: trace event 'nosuchevent' "
        "does not exist",
        "qemu-system-x86_64: -trace -bogus: warning: trace event 'bogus' does not exist",
    ]


def test_gqemu_io_matches_qemu_io(qemu_io, tmp_path):
    img = tmp_path / "d.raw"
    img.write_bytes(b"\0" * 65536)
    args = ["-T", "nosuch", "-T", "bdrv_*", "-T", "nosuch*", "-T", "enable=-gone",
            "-f", "raw", "-c", "read 0 512", str(img)]
    q = subprocess.run([qemu_io, *args], capture_output=True, text=True, cwd=tmp_path)
    rc, err = gqemu_io(*args, cwd=tmp_path)
    assert rc == q.returncode == 0
    warn = lambda s, prog: [ln.replace(prog + ": ", "", 1) for ln in s.splitlines()  # noqa
                            if "warning: trace event" in ln]
    assert warn(err, "gqemu-io") == warn(q.stderr, "qemu-io") == [
        "warning: trace event 'nosuch' does not exist",
        "warning: trace event 'gone' does not exist"]


def test_source_scan_finds_exactly_the_declared_events():
    """The check knows events whose modules are not imported yet by reading
    the declarations; after importing every declaring module the two agree."""
    pkg = Path(trace.__file__).resolve().parent
    for path in sorted(pkg.rglob("*.py")):     # every module that declares events
        if "trace_event(" in path.read_text(encoding="utf-8") and path.name != "trace.py":
            rel = path.relative_to(pkg.parent).with_suffix("")
            importlib.import_module(".".join(rel.parts))
    trace._declared = None
    assert trace._all_declared() == set(trace.trace_events())
    assert {"ide_reset", "blk_co_preadv", "kvm_run_exit", "thread_pool_submit",
            "qemu_coroutine_enter"} <= trace._all_declared()
