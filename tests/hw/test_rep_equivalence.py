"""``address_space_rw_string`` (the bulk ``rep ins/outs`` path) gives exactly
what ``count`` single ``address_space_rw`` accesses give, whatever state the
device is in: two identical machines run the same random program, one with
string exits, one access by access."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gqemu.hw.memory import address_space_rw, address_space_rw_string
from tests.hw.rig import Rig, make_disk

NSECT = 64

step = st.one_of(
    st.tuples(st.just("cmd"), st.sampled_from([0x20, 0x30, 0xC4, 0xC5, 0xEC, 0xC6, 0x24]),
              st.one_of(st.integers(0, 63), st.integers(60, 70)), st.integers(0, 6)),
    st.tuples(st.just("rep"), st.sampled_from([(0x1F0, 2), (0x1F0, 2), (0x1F0, 4), (0x1F0, 1),
                                               (0x1F2, 2), (0x1F7, 1)]),
              st.booleans(),
              st.one_of(st.sampled_from([1, 127, 128, 129, 255, 256, 257, 512, 1024]),
                        st.integers(1, 1100))),
    st.tuples(st.just("settle"), st.just(0), st.just(0), st.just(0)),
)


def run(rig, program, bulk):
    seen = []
    for kind, a, b, c in program:
        if kind == "cmd":
            for port, val in ((0x1F2, c), (0x1F3, b), (0x1F4, 0), (0x1F5, 0), (0x1F6, 0xE0)):
                address_space_rw(rig.as_io, port, None, bytearray((val,)), 1, True)
            address_space_rw(rig.as_io, 0x1F7, None, bytearray((a,)), 1, True)
            rig.settle()
        elif kind == "rep":
            (port, size), is_write, count = a, b, c
            buf = bytearray(bytes((i * 7 + 3) & 0xFF for i in range(size * count)))
            if bulk:
                address_space_rw_string(rig.as_io, port, None, buf, size, count, is_write)
            else:
                mv = memoryview(buf)
                for i in range(count):
                    address_space_rw(rig.as_io, port, None, mv[i * size:(i + 1) * size],
                                     size, is_write)
            seen.append(bytes(buf))
        else:
            rig.settle()
        s = rig.bus0.ifs[0]
        seen.append((s.status, s.error, s.nsector, s.sector, s.data_ptr, s.data_end))
    rig.settle()
    return seen


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(program=st.lists(step, max_size=25))
def test_bulk_equals_single(tmp_path_factory, program):
    d = tmp_path_factory.mktemp("rep")
    a, b = make_disk(d / "a.img", NSECT), make_disk(d / "b.img", NSECT)
    ra, rb = Rig([a]), Rig([b])
    try:
        assert run(ra, program, True) == run(rb, program, False)
    finally:
        ra.close()
        rb.close()
    assert a.read_bytes() == b.read_bytes()
