"""Start-up: a one-shot command imports only what it runs, and ``gqemu
bench startup`` measures processes that really do the work (timings live in
the bench, never here)."""
from __future__ import annotations

import subprocess
import sys

from gqemu.bench import startup
from gqemu.cli.bench import SUITES

# Modules a raw one-shot read never runs (ctypes: only O_DIRECT alignment).
NOT_ON_READ_PATH = ("ctypes",)


def test_one_shot_raw_read_does_not_import_what_it_does_not_run(tmp_path):
    img = tmp_path / "a.raw"
    img.write_bytes(bytes(range(256)) * 8)
    code = ("import sys, atexit\n"
            "atexit.register(lambda: sys.stderr.write('LOADED %r\\n' % sorted(\n"
            "    m for m in " + repr(NOT_ON_READ_PATH) + " if m in sys.modules)))\n"
            "sys.argv[0] = 'gqemu-io'\n"
            "from gqemu.cli.qemu_io import main\n"
            "sys.exit(main())\n")
    p = subprocess.run([sys.executable, "-c", code, "-f", "raw", "-c", "read -v 0 16",
                        str(img)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "00000000:  00 01 02 03" in p.stdout          # the read really ran
    assert "LOADED []" in p.stderr, p.stderr


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


def test_bench_startup_rows_are_working_commands(tmp_path):
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
    for name, argv, _target in rows:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert p.returncode == 0, (name, p.stderr[-500:])
        if name.startswith("gqemu-io"):
            assert "read 512/512 bytes at offset 0" in p.stdout
        if name.startswith("gqemu-img info"):
            assert "file format: qcow2" in p.stdout
        if name.startswith("gqemu run"):
            assert "LBA 0:" in p.stdout
