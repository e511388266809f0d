"""Start-up: a one-shot command imports only what it runs, and ``gqemu
bench startup`` measures processes that really do the work (timings live in
the bench, never here)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gqemu.bench import startup
from gqemu.cli.bench import SUITES

# Modules a raw one-shot read never runs (ctypes: only O_DIRECT alignment;
# other drivers).
NOT_ON_READ_PATH = ("ctypes", "gqemu.block.qcow2", "gqemu.block.blkdebug")

# What the seed example (IDE PIO on a raw scratch disk under --accel sim) never
# runs: other drivers, virtio, the /dev/kvm backend (ctypes).
NOT_ON_SEED_PATH = ("gqemu.block.qcow2", "gqemu.block.blkdebug", "gqemu.block.null",
                    "gqemu.block.copy_on_read", "gqemu.hw.virtio.virtio_pci",
                    "gqemu.kvm.kvm_dev", "ctypes")

LOADED = ("import sys, atexit\n"
          "def report():\n"
          "    mods = [m for m in %r if m in sys.modules]\n"
          "    dc = sorted(n for n, m in list(sys.modules.items()) if n.startswith('gqemu')\n"
          "                and any(hasattr(v, '__dataclass_fields__') and v.__module__ == n\n"
          "                        for v in vars(m).values() if isinstance(v, type)))\n"
          "    sys.stderr.write('LOADED %%r DATACLASSES %%r\\n' %% (mods, dc))\n"
          "atexit.register(report)\n"
          "sys.argv[0] = %r\n"
          "from %s import main\n"
          "sys.exit(main())\n")


def test_one_shot_raw_read_does_not_import_what_it_does_not_run(tmp_path):
    img = tmp_path / "a.raw"
    img.write_bytes(bytes(range(256)) * 8)
    code = LOADED % (NOT_ON_READ_PATH, "gqemu-io", "gqemu.cli.qemu_io")
    p = subprocess.run([sys.executable, "-c", code, "-f", "raw", "-c", "read -v 0 16",
                        str(img)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "00000000:  00 01 02 03" in p.stdout          # the read really ran
    assert "LOADED [] DATACLASSES []" in p.stderr, p.stderr


def test_gqemu_run_without_record_does_not_import_hashlib():
    """hashlib (OpenSSL) only hashes disks for a recording's header."""
    code = ("import sys, atexit\n"
            "atexit.register(lambda: sys.stderr.write('HASHLIB %r\\n' % ('hashlib' in sys.modules)))\n"
            "sys.argv[0] = 'gqemu'\n"
            "from gqemu.cli.main import main\n"
            "sys.exit(main())\n")
    p = subprocess.run([sys.executable, "-c", code, "run", startup.SEED_EXAMPLE],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "LBA 0:" in p.stdout
    assert "HASHLIB False" in p.stderr, p.stderr


def test_gqemu_run_imports_only_what_the_seed_example_runs():
    """Drivers are imported by name on first use, virtio and the /dev/kvm
    backend only for machines that have them, and no module on the path
    builds dataclasses (they compile their methods at import time)."""
    code = LOADED % (NOT_ON_SEED_PATH, "gqemu", "gqemu.cli.main")
    p = subprocess.run([sys.executable, "-c", code, "run", startup.SEED_EXAMPLE],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "LBA 0: '<LBA 0x00000000>'" in p.stdout          # the read really ran
    assert "LOADED [] DATACLASSES []" in p.stderr, p.stderr


def test_one_shot_qcow2_info_builds_no_dataclasses_and_no_json(tmp_path, qemu_img):
    img = tmp_path / "a.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(img), "1M"], check=True)
    code = LOADED % (("gqemu.block.blkdebug", "json"), "gqemu-img", "gqemu.cli.qemu_img")
    p = subprocess.run([sys.executable, "-c", code, "info", str(img)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "file format: qcow2" in p.stdout
    assert "LOADED [] DATACLASSES []" in p.stderr, p.stderr


def test_bench_startup_rows_are_working_commands(tmp_path, qemu_io):
    """Every process the suite times exits 0 and does its job once (the
    anchor first), so a broken command cannot pass for a fast one."""
    assert SUITES["startup"] == "gqemu.bench.startup"
    startup._make_images(str(tmp_path))
    rows = startup.commands(str(tmp_path))
    names = [r[0] for r in rows]
    assert names[1] == "bare imports (anchor)"
    assert any(n.startswith("gqemu-io") for n in names)
    assert any(n.startswith("gqemu-img info") for n in names)
    assert any(n.startswith("gqemu run") for n in names)
    assert "python -S -c pass" in names
    assert "qemu-io -c 'read 0 512' (QEMU)" in names
    for name, argv, _target in rows:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert p.returncode == 0, (name, p.stderr[-500:])
        if "qemu-io" in name:
            assert "read 512/512 bytes at offset 0" in p.stdout
        if name.startswith("gqemu-img info"):
            assert "file format: qcow2" in p.stdout
        if name.startswith("gqemu run"):
            assert "LBA 0:" in p.stdout


# What the process's teardown sees: the collector's frozen count (atexit runs
# before the teardown, after main has returned).
FROZEN = ("import sys, gc, atexit\n"
          "atexit.register(lambda: sys.stderr.write('FROZEN %%d\\n' %% gc.get_freeze_count()))\n"
          "sys.argv[0] = %r\n"
          "from %s import main\n"
          "%s\n")


@pytest.mark.parametrize("prog, module, args", [
    ("gqemu-io", "gqemu.cli.qemu_io", ["-f", "raw", "-c", "read 0 512", "IMG"]),
    ("gqemu-img", "gqemu.cli.qemu_img", ["info", "IMG"]),
    ("gqemu", "gqemu.cli.main", ["run", startup.SEED_EXAMPLE]),
])
def test_process_entry_leaves_its_objects_to_the_kernel(tmp_path, prog, module, args):
    """Run as the process (``sys.exit(main())``), a tool freezes the
    collector's objects when main returns, so Python's teardown does not
    free every module's objects one by one; called with an argv (in
    process, as the tests and the bench do) it leaves the collector alone."""
    img = tmp_path / "a.raw"
    img.write_bytes(bytes(4096))
    args = [str(img) if a == "IMG" else a for a in args]
    entry = FROZEN % (prog, module, "sys.exit(main())")
    p = subprocess.run([sys.executable, "-c", entry] + args, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    frozen = int(p.stderr.split("FROZEN ")[1])
    assert frozen > 1000, p.stderr
    in_process = FROZEN % (prog, module, "sys.exit(main(%r))" % (
        ([prog] if prog == "gqemu-io" else []) + args,))
    p = subprocess.run([sys.executable, "-c", in_process], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "FROZEN 0\n" in p.stderr, p.stderr


def test_process_entry_flushes_a_file_held_in_a_cycle(tmp_path):
    """A frozen object is never finalized: a file a guest script left open
    for writing, held in a reference cycle, still gets its buffered data
    (Python's teardown would have flushed it when collecting the cycle)."""
    out = tmp_path / "left-open.txt"
    script = tmp_path / "guest.py"
    script.write_text(
        "class Holder:\n"
        "    pass\n"
        "def guest(cpu):\n"
        "    h = Holder()\n"
        "    h.me = h\n"
        "    h.f = open(%r, 'w')\n"
        "    h.f.write('written, never closed\\n')\n"
        "    KEEP.append(h)\n"
        "KEEP = []\n" % str(out))
    code = FROZEN % ("gqemu", "gqemu.cli.main", "sys.exit(main())")
    p = subprocess.run([sys.executable, "-c", code, "run", str(script)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert int(p.stderr.split("FROZEN ")[1]) > 1000, p.stderr
    assert out.read_text() == "written, never closed\n"


# Collections the collector runs from the tool's import on, and whether a
# reference cycle made afterwards is still collected while the process runs.
COLLECTIONS = ("import sys, gc, atexit\n"
               "runs = []\n"
               "gc.callbacks.append(lambda phase, info: runs.append(1) if phase == 'stop' else None)\n"
               "atexit.register(lambda: sys.stderr.write('COLLECTIONS %%d\\n' %% len(runs)))\n"
               "sys.argv[0] = %r\n"
               "from %s import main\n"
               "%s\n")


@pytest.mark.parametrize("prog, module, args", [
    ("gqemu-io", "gqemu.cli.qemu_io", ["-f", "raw", "-c", "read 0 512", "IMG"]),
    ("gqemu-img", "gqemu.cli.qemu_img", ["info", "IMG"]),
])
def test_process_entry_does_not_rescan_its_imports(tmp_path, prog, module, args):
    """Run as the process, a tool raises the collector's youngest threshold:
    the ~20,000 objects its imports leave alive are not scanned again and
    again (25 collections for a one-shot read at Python's default, 700).
    Called with an argv it leaves the collector's thresholds alone."""
    img = tmp_path / "a.raw"
    img.write_bytes(bytes(4096))
    args = [str(img) if a == "IMG" else a for a in args]
    p = subprocess.run([sys.executable, "-c", COLLECTIONS % (prog, module, "sys.exit(main())")]
                       + args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert int(p.stderr.split("COLLECTIONS ")[1]) <= 5, p.stderr
    in_process = COLLECTIONS % (prog, module, "main(%r); print(__import__('gc').get_threshold())"
                                % (([prog] if prog == "gqemu-io" else []) + args,))
    p = subprocess.run([sys.executable, "-c", in_process], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("(700, 10, 10)"), p.stdout


def test_process_entry_still_collects_cycles():
    """Cycles made while a tool runs as its process are collected as it
    goes: a session that makes 100,000 self-referencing objects has not
    kept them all."""
    code = ("import gc, sys, weakref\n"
            "from gqemu.cli import tool_run\n"
            "tool_run.tool_run_entering()\n"
            "class C: pass\n"
            "refs = []\n"
            "for i in range(100000):\n"
            "    c = C(); c.me = c\n"
            "    refs.append(weakref.ref(c))\n"
            "    del c\n"
            "alive = sum(r() is not None for r in refs)\n"
            "print(gc.get_threshold()[0], alive)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    threshold, alive = map(int, p.stdout.split())
    assert threshold > 700
    assert alive <= threshold, p.stdout
