"""Property tests of the trace format: any valid record list round-trips;
any cut is reported as truncation; any corruption is a TraceError (never
another exception, never silently fewer records)."""
from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from gqemu.replay.format import (REC_HLT, REC_IO, REC_IOS, REC_IRQ, REC_MEMW, TraceError,
                                 TraceReader, TraceTruncated, TraceWriter)

sizes = st.sampled_from([1, 2, 4])


@st.composite
def io_rec(draw):
    size = draw(sizes)
    return [REC_IO, draw(st.integers(0, 3)), draw(st.integers(0, 1)), size,
            draw(st.integers(0, 0xFFFF)), draw(st.integers(0, (1 << (8 * size)) - 1))]


@st.composite
def ios_rec(draw):
    size = draw(sizes)
    count = draw(st.integers(1, 64))
    return [REC_IOS, 0, draw(st.integers(0, 1)), size, draw(st.integers(0, 0xFFFF)), count,
            draw(st.binary(min_size=size * count, max_size=size * count))]


records = st.lists(st.one_of(
    io_rec(), ios_rec(),
    st.builds(lambda c: [REC_HLT, c], st.integers(0, 255)),
    st.builds(lambda n, lv: [REC_IRQ, n, lv], st.integers(0, 23), st.integers(0, 1)),
    st.builds(lambda a, d: [REC_MEMW, 0, a, d], st.integers(0, 1 << 20),
              st.binary(min_size=1, max_size=64))), max_size=60)


def encode(recs, flush_every=7):
    f = io.BytesIO()
    w = TraceWriter(f, {"machine": "pc", "drives": []}, flush_every=flush_every)
    for r in recs:
        w.write(r)
    w.close()
    return f.getvalue()


def read(data):
    r = TraceReader(io.BytesIO(data), size=len(data))
    return list(r)


@settings(max_examples=80, deadline=None)
@given(records)
def test_round_trip(recs):
    assert read(encode(recs)) == recs


@settings(max_examples=80, deadline=None)
@given(records, st.data())
def test_every_cut_is_reported(recs, data):
    blob = encode(recs)
    header = len(encode([])) - 2                 # header only, no end record
    cut = data.draw(st.integers(header, len(blob) - 1))
    got = []
    try:
        r = TraceReader(io.BytesIO(blob[:cut]), size=cut)
        for rec in r:
            got.append(rec)
    except TraceTruncated:
        assert got == recs[:len(got)]
        return
    raise AssertionError("a trace cut at %d of %d bytes was accepted" % (cut, len(blob)))


@settings(max_examples=120, deadline=None)
@given(records, st.data())
def test_corruption_is_a_trace_error_or_harmless(recs, data):
    blob = bytearray(encode(recs))
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] = data.draw(st.integers(0, 255))
    try:
        read(bytes(blob))
    except TraceError:
        pass
