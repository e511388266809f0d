"""Block status asks the protocol node about data clusters (QEMU's
bdrv_co_block_status): a metadata-preallocated qcow2 maps as data that reads
as zero, exactly as ``qemu-img map`` says."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _map(tool: list[str], path: str) -> str:
    return subprocess.run(tool + ["map", "--output=json", path], check=True,
                          capture_output=True, text=True).stdout


GQEMU_IMG = [sys.executable, "-c", "import sys; from gqemu.cli.qemu_img import main; "
             "sys.argv[0] = 'gqemu-img'; sys.exit(main())"]


@pytest.mark.parametrize("prealloc, write", [
    ("metadata", None), ("metadata", "write -P 0x5a 64k 4k"), ("off", "write -z 0 64k"),
    ("falloc", None)])
def test_map_matches_qemu_img(prealloc, write, qemu_img, qemu_io, tmp_path):
    path = str(tmp_path / "p.qcow2")
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o",
                    "preallocation=%s" % prealloc, path, "4M"], check=True)
    if write:
        subprocess.run([qemu_io, "-f", "qcow2", "-c", write, path], check=True,
                       capture_output=True)
    assert _map(GQEMU_IMG, path) == _map([qemu_img], path)
