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


def _load(path: Path) -> tuple[list[dict], dict[int, str]]:
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    return events, tracks


def _slices(events: list[dict]) -> list[dict]:
    return [e for e in events if e["ph"] == "X"]


def _inside(s: dict, ts: float) -> bool:
    return s["ts"] < ts < s["ts"] + s["dur"]


def _check_nesting(events: list[dict]) -> None:
    """Every slice has dur >= 0 and the slices of one track nest (what
    Perfetto's importer needs); no B/E pairs are left unbalanced."""
    assert not [e for e in events if e["ph"] in "BE"]
    by_tid: dict[int, list[dict]] = {}
    for s in _slices(events):
        assert s["dur"] >= 0, s
        by_tid.setdefault(s["tid"], []).append(s)
    for tid, ss in by_tid.items():
        ss.sort(key=lambda s: (s["ts"], -s["dur"]))
        stack: list[float] = []
        for s in ss:
            while stack and stack[-1] <= s["ts"]:
                stack.pop()
            end = s["ts"] + s["dur"]
            assert not stack or end <= stack[-1], "slices overlap on track %d: %s" % (tid, s)
            stack.append(end)


def _bound(events: list[dict], tracks: dict[int, str], flow: dict) -> dict:
    """The slice a flow point binds to: the innermost slice on its track
    that encloses it."""
    cands = [s for s in _slices(events) if s["tid"] == flow["tid"] and _inside(s, flow["ts"])]
    assert cands, "flow point binds to no slice on %s: %s" % (tracks[flow["tid"]], flow)
    return min(cands, key=lambda s: s["dur"])


def _check_first_request(events: list[dict], tracks: dict[int, str], name: str) -> None:
    reqs = sorted((s for s in _slices(events) if s["name"] == name
                   and tracks[s["tid"]].startswith("block requests")), key=lambda s: s["ts"])
    assert reqs, "no %s request slice" % name
    req = reqs[0]
    end = req["ts"] + req["dur"]
    within = [s for s in _slices(events) if req["ts"] <= s["ts"] and s["ts"] + s["dur"] <= end]
    assert any(s["name"] == "aio_worker" and tracks[s["tid"]].startswith("worker")
               for s in within), "no worker slice inside the request"
    assert any(tracks[s["tid"]].startswith("coroutine") for s in within), \
        "no coroutine slice inside the request"
    fid = req["args"]["request"]
    flow = sorted((e for e in events if e["ph"] in "stf" and e.get("id") == fid),
                  key=lambda e: e["ts"])
    assert [e["ph"] for e in flow][0] == "s" and flow[-1]["ph"] == "f"
    assert all(e["ph"] == "t" for e in flow[1:-1])
    assert all(e.get("bp") == "e" for e in flow)
    assert _bound(events, tracks, flow[0]) is req
    assert _bound(events, tracks, flow[-1]) is req
    hops = [_bound(events, tracks, e) for e in flow[1:-1]]
    kinds = []
    for s in hops:
        t = tracks[s["tid"]]
        kind = ("worker" if t.startswith("worker") and s["name"] == "aio_worker" else
                "bh" if s["name"] == "thread_pool_completion_bh" else
                "co" if t.startswith("coroutine") else "?")
        kinds.append(kind)
    # submit -> coroutine -> worker -> completion BH -> coroutine wake-up
    assert kinds == ["co", "worker", "bh", "co"], kinds
    assert hops[0]["tid"] == hops[3]["tid"] and hops[0] is not hops[3]


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
        assert any(s["ts"] == m["ts"] and s["tid"] == m["tid"] for s in exits), m
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
