"""Feed a refdata exit list access by access through ``address_space_io``.

The rule of ARCHITECTURE section 6: a recorded BSY status is answered while
the device is still busy; any other recorded ``in`` first lets the loop
complete the device's work.  Returns the mismatches (index, record, value).
"""
from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Iterator

from gqemu.hw.memory import address_space_read, address_space_write

STATUS_PORTS = (0x1F7, 0x3F6, 0x177, 0x376)


def load_exits(path: Path) -> list[dict]:
    with lzma.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def replay_exits(rig, records: list[dict]) -> Iterator[tuple[int, dict, int]]:
    buf = bytearray(4)
    for i, r in enumerate(records):
        port, size = r["port"], r["size"]
        if r["dir"] == "out":
            buf[0:size] = r["value"].to_bytes(size, "little")
            address_space_write(rig.as_io, port, None, buf, size)
            continue
        if not (port in STATUS_PORTS and r["value"] & 0x80):
            rig.settle()
        address_space_read(rig.as_io, port, None, buf, size)
        got = int.from_bytes(buf[:size], "little")
        if got != r["value"]:
            yield i, r, got
