"""The Perfetto output (``--trace-format json``): slices for requests,
coroutine runs, worker calls and vCPU exits on their tracks, properly
nested, and a flow per request from its submission through the worker and
the completion bottom half to the coroutine's wake-up."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gqemu.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "examples"

pytestmark = pytest.mark.timeout(120)


def _ns(us: float) -> int:
    """A JSON time in ns as Perfetto reads it; older versions truncate
    ts * 1000, newer ones round: the file must mean the same to both."""
    trunc, rounded = int(us * 1000.0), round(us * 1000.0)
    assert trunc == rounded, "time %r reads differently when truncated" % us
    return trunc


def _load(path: Path) -> tuple[list[dict], dict[int, str]]:
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    for e in events:
        if "ts" in e:
            e["ns"] = _ns(e["ts"])
            e["end"] = e["ns"] + (_ns(e["dur"]) if "dur" in e else 0)
    return events, tracks


def _slices(events: list[dict]) -> list[dict]:
    return [e for e in events if e["ph"] == "X"]


def _check_nesting(events: list[dict]) -> None:
    """Every slice has dur >= 0 and the slices of one track nest (what
    Perfetto's importer needs); there are no B/E pairs to leave unbalanced."""
    assert not [e for e in events if e["ph"] in "BE"]
    by_tid: dict[int, list[dict]] = {}
    for s in _slices(events):
        assert s["dur"] >= 0, s
        by_tid.setdefault(s["tid"], []).append(s)
    for tid, ss in by_tid.items():
        ss.sort(key=lambda s: (s["ns"], -s["end"]))
        stack: list[int] = []
        for s in ss:
            while stack and stack[-1] <= s["ns"]:
                stack.pop()
            assert not stack or s["end"] <= stack[-1], "slices overlap on track %d: %s" % (tid, s)
            stack.append(s["end"])


def _bindings(events: list[dict]) -> dict[int, dict]:
    """Which slice each flow point binds to, as Perfetto's JSON importer
    binds it: events in time order; a complete event or a thread instant
    (a slice of no duration there) first pops the slices of its track that
    ended at or before it, then is pushed; a flow point takes the top of its
    track's stack as it is, without popping anything."""
    def bind(order: list[dict]) -> dict[int, dict]:
        stacks: dict[int, list[dict]] = {}
        bound: dict[int, dict] = {}
        for e in order:
            st = stacks.setdefault(e["tid"], [])
            if e["ph"] in "Xi":
                while st and st[-1]["end"] <= e["ns"]:
                    st.pop()
                st.append(e)
            else:
                assert st, "flow point with no slice on its track: %s" % e
                bound[id(e)] = st[-1]
        return bound
    timed = [e for e in events if e["ph"] in "Xistf"]
    bound = bind(sorted(timed, key=lambda e: e["ns"]))
    # Events at the same time may be read in any order: the bindings must
    # not depend on it.
    again = bind(sorted(reversed(timed), key=lambda e: e["ns"]))
    assert all(again[k] is v for k, v in bound.items()), "a flow binding depends on ties"
    return bound


def _check_first_request(events: list[dict], tracks: dict[int, str], name: str) -> None:
    reqs = sorted((s for s in _slices(events) if s["name"] == name
                   and tracks[s["tid"]].startswith("block requests")), key=lambda s: s["ns"])
    assert reqs, "no %s request slice" % name
    req = reqs[0]
    within = [s for s in _slices(events) if req["ns"] <= s["ns"] and s["end"] <= req["end"]]
    assert any(s["name"] == "aio_worker" and tracks[s["tid"]].startswith("worker")
               for s in within), "no worker slice inside the request"
    assert any(tracks[s["tid"]].startswith("coroutine") for s in within), \
        "no coroutine slice inside the request"
    fid = req["args"]["request"]
    flow = sorted((e for e in events if e["ph"] in "stf" and e.get("id") == fid),
                  key=lambda e: e["ns"])
    assert flow and flow[0]["ph"] == "s" and flow[-1]["ph"] == "f"
    assert all(e["ph"] == "t" for e in flow[1:-1])
    assert all(e.get("bp") == "e" and e.get("cat") == "request" for e in flow)
    bound = _bindings(events)
    assert bound[id(flow[0])] is req and bound[id(flow[-1])] is req
    hops = [bound[id(e)] for e in flow[1:-1]]
    kinds = []
    for s in hops:
        t = tracks[s["tid"]]
        kinds.append("worker" if t.startswith("worker") and s["name"] == "aio_worker" else
                     "bh" if s["name"] == "thread_pool_completion_bh" else
                     "co" if t.startswith("coroutine") and s["ph"] == "X" else
                     "%s on %s" % (s["name"], t))
    # submit -> coroutine -> worker -> completion BH -> coroutine wake-up
    assert kinds == ["co", "worker", "bh", "co"], kinds
    assert hops[0]["tid"] == hops[3]["tid"] and hops[0] is not hops[3]
    assert [s["ns"] for s in hops] == sorted(s["ns"] for s in hops)


def test_read_lba0_request_worker_coroutine_and_flow(tmp_path, capsys):
    out = tmp_path / "t.json"
    rc = main(["run", str(EXAMPLES / "read_lba0.py"), "--trace", "*",
               "--trace-format", "json", "--trace-file", str(out)])
    capsys.readouterr()
    assert rc == 0
    events, tracks = _load(out)
    _check_nesting(events)
    _check_first_request(events, tracks, "blk_aio_preadv")
    # each KVM exit is a slice on the vCPU track that holds its kvm_run_exit
    vcpu = [t for t, n in tracks.items() if n == "vCPU 0"]
    assert len(vcpu) == 1
    exits = [s for s in _slices(events) if s["name"].startswith("KVM_EXIT_")]
    assert exits and all(s["tid"] == vcpu[0] for s in exits)
    marks = [e for e in events if e["ph"] == "i" and e["name"] == "kvm_run_exit"]
    assert len(marks) == len(exits)
    for m in marks:
        assert any(s["ns"] < m["ns"] < s["end"] and s["tid"] == m["tid"] for s in exits), m
    assert any(s["name"] == "KVM_EXIT_IO" for s in exits)


def test_bench_trace_one_shows_the_hop(tmp_path, capsys):
    out = tmp_path / "one.json"
    rc = main(["bench", "--trace-one", str(out)])
    capsys.readouterr()
    assert rc == 0
    events, tracks = _load(out)
    _check_nesting(events)
    _check_first_request(events, tracks, "blk_aio_preadv")
    reqs = [s for s in _slices(events) if s["name"] == "blk_aio_preadv"]
    assert len(reqs) == 1 and reqs[0]["args"]["bytes"] == 4096


def test_bench_trace_one_bad_path_is_one_line(tmp_path, capsys):
    rc = main(["bench", "--trace-one", str(tmp_path / "no" / "t.json")])
    _out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "--trace-one" in err


@pytest.mark.parametrize("pattern", [
    "blk_aio_prwv,qemu_coroutine_enter,thread_pool_work,thread_pool_complete,kvm_run_exit",
    "*,-thread_pool_complete_done,-kvm_vcpu_ioctl,-qemu_coroutine_terminate",
])
def test_slices_whose_closing_event_is_off_are_not_drawn(tmp_path, capsys, pattern):
    # A slice that could not be closed would overlap the next on its track.
    out = tmp_path / "t.json"
    rc = main(["run", str(EXAMPLES / "dma.py"), "--trace", pattern,
               "--trace-format", "json", "--trace-file", str(out)])
    capsys.readouterr()
    assert rc == 0
    events, tracks = _load(out)
    _check_nesting(events)
    names = {s["name"] for s in _slices(events)}
    assert "thread_pool_completion_bh" not in names
    assert not any(n.startswith("KVM_EXIT_") for n in names)
    assert not any(tracks[s["tid"]].startswith("coroutine") for s in _slices(events))
    if pattern.startswith("*"):
        assert "blk_aio_preadv" in names and "aio_worker" in names
