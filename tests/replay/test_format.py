"""The trace format: round trips, and every malformed input of reliability
§7 / T50 refused with its record index (never a traceback, never a silently
dropped tail)."""
from __future__ import annotations

import io
import struct

import msgpack
import pytest

from gqemu.replay.format import (MAGIC, REC_END, REC_HLT, REC_INTERNAL_ERROR, REC_IO,
                                 REC_IOS, REC_IRQ, REC_MEMR, REC_MEMW, REC_MMIO,
                                 REC_SHUTDOWN, VERSION, TraceError, TraceReader,
                                 TraceTruncated, TraceWriter, check_record)

META = {"machine": "pc", "drives": [], "irq": True}

GOOD = [
    [REC_IO, 0, 1, 1, 0x1F7, 0x20],
    [REC_IO, 0, 0, 1, 0x1F7, 0x58],
    [REC_IO, 1, 0, 2, 0x1F0, 0xFFFF],
    [REC_IO, 0, 0, 4, 0x1F0, 0xFFFFFFFF],
    [REC_IOS, 0, 0, 2, 0x1F0, 3, b"abcdef"],
    [REC_MMIO, 0, 1, 0xFEE00000, 8, (1 << 64) - 1],
    [REC_HLT, 0],
    [REC_IRQ, 14, 1],
    [REC_MEMW, 0, 0x1000, b"\x00" * 8],
    [REC_MEMR, 0, 0x10000, b"x" * 512],
    [REC_INTERNAL_ERROR, 0, "AtaError: boom"],
    [REC_SHUTDOWN, 0],
]


def write(records, meta=META, end=True, flush_every=1024):
    f = io.BytesIO()
    w = TraceWriter(f, dict(meta), flush_every=flush_every)
    for r in records:
        w.write(r)
    w.close(end=end)
    return f.getvalue()


def read_all(data: bytes):
    r = TraceReader(io.BytesIO(data), size=len(data))
    return r, list(r)


def raw(header=None, records=(), end=True, extra=b""):
    p = msgpack.Packer(use_bin_type=True)
    out = p.pack(header if header is not None else [MAGIC, VERSION, META])
    for rec in records:
        out += rec if isinstance(rec, bytes) else p.pack(rec)
    if end:
        out += p.pack([REC_END, len(records)])
    return out + extra


def test_round_trip_every_kind():
    r, recs = read_all(write(GOOD))
    assert recs == GOOD
    assert r.meta == META and r.ended and r.count == len(GOOD)


def test_writer_streams_and_flushes_as_it_goes():
    f = io.BytesIO()
    w = TraceWriter(f, META, flush_every=4)
    for i in range(10):
        w.write([REC_IO, 0, 0, 1, 0x1F7, i])
    # two full batches of 4 are already in the file, without an end record
    prefix = f.getvalue()
    r = TraceReader(io.BytesIO(prefix), size=len(prefix))
    got = []
    with pytest.raises(TraceTruncated, match="without an end record after 8"):
        for rec in r:
            got.append(rec)
    assert [g[5] for g in got] == list(range(8))


def _record_ends(data: bytes) -> list[int]:
    """Where each msgpack object of the stream ends (found independently
    of TraceReader)."""
    u = msgpack.Unpacker(io.BytesIO(data), raw=False)
    ends = []
    for _obj in u:
        ends.append(u.tell())
    return ends


@pytest.mark.parametrize("which", [-3, -4])          # the last two data records
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_truncated_inside_a_record(which, where):
    """A cut strictly inside a data record is a truncated record at its start."""
    data = write(GOOD)
    ends = _record_ends(data)
    start, end = ends[which], ends[which + 1]
    cut = {"first": start + 1, "middle": (start + end + 1) // 2, "last": end - 1}[where]
    assert start < cut < end
    with pytest.raises(TraceTruncated, match="truncated record at byte %d" % start):
        list(TraceReader(io.BytesIO(data[:cut]), size=cut))


def test_cut_between_records_lacks_the_end_record():
    """A cut exactly after a whole record reads every record, then reports
    the missing end record."""
    data = write(GOOD)
    cut = _record_ends(data)[-2]                 # just before the end record
    with pytest.raises(TraceTruncated, match="without an end record"):
        list(TraceReader(io.BytesIO(data[:cut]), size=cut))


def test_unknown_version_refused_before_records():
    data = raw(header=[MAGIC, VERSION + 1, META])
    with pytest.raises(TraceError, match="unsupported trace version 2"):
        TraceReader(io.BytesIO(data))


@pytest.mark.parametrize("header, msg", [
    (["not-a-trace", 1, META], "not a gqemu trace"),
    ([MAGIC, 1], "not a gqemu trace"),
    ([MAGIC, True, META], "unsupported trace version"),
    ([MAGIC, 1, {"machine": "pc", "colour": "red"}], "unknown header key"),
    ([MAGIC, 1, {"drives": [{"index": 9}]}], "drive index out of range"),
    ([MAGIC, 1, {"ram_size": 1.5}], "wrong type"),
])
def test_bad_headers(header, msg):
    with pytest.raises(TraceError, match=msg):
        TraceReader(io.BytesIO(raw(header=header)))


def test_empty_file():
    with pytest.raises(TraceError, match="empty file"):
        TraceReader(io.BytesIO(b""))


BAD_RECORDS = [
    ([REC_IO, 0, 1, 1, 0x10000, 0], "bad port 65536"),
    ([REC_IO, 0, 1, 3, 0x1F7, 0], "bad size 3"),
    ([REC_IO, 0, 1, 8, 0x1F7, 0], "bad size 8"),          # port I/O has no 8-byte form
    ([REC_IOS, 0, 0, 8, 0x1F0, 1, bytes(8)], "bad size 8"),
    ([REC_IO, 0, 1, 1, -1, 0], "bad port -1"),
    ([REC_IO, 0, 0, 1, 0x1F7, 0x100], "bad value 256"),
    ([REC_IO, 0, 2, 1, 0x1F7, 0], "bad direction 2"),
    ([REC_IO, 0, 1, 1, 0x1F7, True], "value is not an integer"),
    ([REC_IO, 0, 1, 1, 0x1F7, float("nan")], "value is not an integer"),
    ([REC_IO, 0, 1, 1, 0x1F7, -1], "bad value -1"),
    ([REC_IO, 0, 1, 1, 0x1F7], "io record has 5 fields"),
    ([42, 0], "unknown record kind 42"),
    ([True, 0, 1, 1, 0x1F7, 0], "record kind is not an integer"),
    ([REC_IOS, 0, 0, 2, 0x1F0, 3, b"abc"], "data is not 6 bytes"),
    ([REC_IOS, 0, 0, 2, 0x1F0, 0, b""], "bad count 0"),
    ([REC_IRQ, 99, 1], "bad irq line 99"),
    ([REC_MEMW, 0, 0x1000, "text"], "bad data"),
    ([REC_INTERNAL_ERROR, 0, b"bytes"], "bad message"),
    ({"kind": 1}, "not a record array"),
    ([], "not a record array"),
    ([REC_IO, 0, 1, 1, [0x1F7], 0], "port is not an integer"),
    ([REC_END, 5], "end record counts 5 records"),
]


@pytest.mark.parametrize("bad, msg", BAD_RECORDS)
def test_malformed_record_refused_with_index(bad, msg):
    data = raw(records=[GOOD[0], GOOD[1], bad, GOOD[2]], end=False)
    r = TraceReader(io.BytesIO(data), size=len(data))
    seen = []
    with pytest.raises(TraceError) as ei:
        for rec in r:
            seen.append(rec)
    assert ei.value.index == 2, ei.value
    assert str(ei.value).startswith("record 2: ")
    assert msg in str(ei.value)
    assert seen == [GOOD[0], GOOD[1]]


@pytest.mark.parametrize("blob, msg", [
    (b"\xc1", "(not msgpack data)"),                              # reserved byte
    (b"\x91" * 2000 + b"\x00", "(nested too deeply)"),             # nesting 2000 deep
    (b"\x93\x01\xa2\xff\xfe\x00", "(a string is not valid UTF-8)"),  # invalid UTF-8 str
    (b"\xc6\xff\xff\xff\xff" + b"x" * 16, "truncated record"),     # bin32 claiming 4 GiB
    (b"\xc6\xff\xff\xff\xff" + b"x" * (2 << 20),                  # ... with 2 MiB behind it
     "(an array, map or string longer than the 1 MiB limit)"),
    (b"\xd4\x05\x00", "(msgpack extension types are not allowed)"),  # ext type
    (b"\x81\x01\x02", "(a map key is not a string)"),                # int map key
])
def test_undecodable_bytes(blob, msg):
    data = raw(records=[GOOD[0], blob], end=False)
    r = TraceReader(io.BytesIO(data), size=len(data))
    with pytest.raises(TraceError) as ei:
        list(r)
    assert ei.value.index == 1
    assert msg in str(ei.value)
    assert "\n" not in str(ei.value)
    assert "Error" not in str(ei.value) and "BufferFull" not in str(ei.value)  # no class names


def test_timestamp_ext_is_not_an_int():
    ts = b"\xd6\xff" + struct.pack(">I", 1)         # msgpack timestamp 32
    data = raw(records=[[REC_IO, 0, 1, 1, 0x1F7, 0]], end=False).replace(
        b"\x00", b"\x00", 0) + msgpack.packb([REC_IO, 0, 1, 1, 0x1F7, 0])[:-1] + ts
    r = TraceReader(io.BytesIO(data), size=len(data))
    with pytest.raises(TraceError) as ei:
        list(r)
    assert ei.value.index == 1


def test_trailing_data_after_end():
    data = raw(records=[GOOD[0]], extra=msgpack.packb([REC_IO, 0, 1, 1, 0x1F7, 0]))
    with pytest.raises(TraceError, match="trailing data after the end record"):
        read_all(data)
    data = raw(records=[GOOD[0]], extra=b"\xc1")
    with pytest.raises(TraceError, match="trailing"):
        read_all(data)


def test_check_record_is_flat_and_total():
    for rec in GOOD:
        assert check_record(rec, 0) is rec
