"""Drivers by name, imported on first lookup (gqemu/block/module_block.py):
the table matches what each module registers, and a lookup imports only
the driver it names while listing, probing and protocol prefixes still see
every driver."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

from gqemu.block.module_block import block_driver_modules

BLOCK = Path(__file__).resolve().parents[2] / "gqemu" / "block"


def _registered_classes() -> list[tuple[str, str]]:
    """(module, class) of every ``@bdrv_register`` class in gqemu/block."""
    found = []
    for path in sorted(BLOCK.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(d, ast.Name) and d.id == "bdrv_register"
                    for d in node.decorator_list):
                found.append(("gqemu.block." + path.stem, node.name))
    return found


def test_table_names_every_registered_driver_as_it_registers():
    rows = set()
    for module, name in _registered_classes():
        cls = getattr(importlib.import_module(module), name)
        rows.add((module, cls.format_name, cls.protocol_name, cls.bdrv_probe is not None,
                  getattr(cls, "bdrv_probe_device", None) is not None))
    assert len(rows) >= 8
    assert rows == {tuple(m) for m in block_driver_modules}
    names = [m.format_name for m in block_driver_modules]
    assert len(set(names)) == len(names)
    # ties in probing go to the first registered: raw (score 1) before qcow2
    assert names.index("raw") < names.index("qcow2")


LAZY = r"""
import sys
DRIVERS = sorted({m.library_name for m in __import__(
    "gqemu.block.module_block", fromlist=["x"]).block_driver_modules})
def loaded():
    return [m.rpartition(".")[2] for m in DRIVERS if m in sys.modules]
import gqemu.block as b
import gqemu.block.driver as d
print("package", loaded())
print("names", list(b.bdrv_drivers), "qcow2" in b.bdrv_drivers, "vmdk" in b.bdrv_drivers)
print("listed", loaded())
print("raw", b.bdrv_find_format("raw").format_name, loaded())
print("nosuch", b.bdrv_find_format("nosuch"), loaded())
print("null", d.bdrv_find_protocol("null-co://").format_name, loaded())
print("unknown", d.bdrv_find_protocol("nosuch:x"), loaded())
bs = b.bdrv_open(sys.argv[1])
print("probed", bs.drv.format_name, loaded())
b.bdrv_unref(bs)
print("dev", d.bdrv_find_protocol("/dev/null").format_name)
"""


def test_a_lookup_imports_only_the_driver_it_names(tmp_path, qemu_img):
    img = tmp_path / "a.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(img), "1M"], check=True)
    p = subprocess.run([sys.executable, "-c", LAZY, str(img)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    assert out["package"] == "[]"
    assert out["names"] == ("['file', 'host_device', 'host_cdrom', 'copy-on-read', "
                            "'compress', 'quorum', 'null-co', 'blkdebug', 'raw', 'qcow2', "
                            "'bochs', 'qcow'] True False")
    assert out["listed"] == "[]"
    assert out["raw"] == "raw ['raw_format']"
    assert out["nosuch"] == "None ['raw_format']"
    assert out["null"] == "null-co ['null', 'raw_format']"
    assert out["unknown"] == "None ['null', 'raw_format']"
    # probing imports the drivers that probe, and only those; a plain file
    # name is offered to host_device's probe_device first (as QEMU does)
    assert out["probed"] == ("qcow2 ['bochs', 'file_posix', 'host_device', 'null', "
                             "'qcow', 'qcow2', 'raw_format']")
    assert out["dev"] == "host_device"
