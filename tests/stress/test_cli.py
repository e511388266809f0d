"""``gqemu stress`` end to end, in child processes with GQEMU_STRESS=1."""
from __future__ import annotations

import json

from tests.stress.conftest import gqemu_stress, summary_json


def test_passing_run_summary():
    p = gqemu_stress("--workload", "runtime", "--seed", "5", "--iterations", "40")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for row in ("schedules", "requests", "faults injected", "invariant checks",
                "schedules/s", "passed"):
        assert row in out
    assert p.stderr == ""                 # no progress bar when not a TTY
    j = summary_json(gqemu_stress("--workload", "runtime", "--seed", "5",
                                  "--iterations", "40", "--json"))
    assert j["schedules"] == 40 and j["checks"] > 0 and j["failures"] == []


def test_jobs_split_the_iterations():
    j = summary_json(gqemu_stress("--workload", "runtime,block", "--seed", "1",
                                  "--iterations", "12", "--jobs", "2", "--json"))
    assert j["schedules"] == 12 and j["workloads"] == ["runtime", "block"]
    assert j["requests"] > 12


def test_planted_bug_reported_and_reproduced(tmp_path):
    p = gqemu_stress("--workload", "runtime", "--seed", "0", "--iterations", "100",
                     "--plant", "comutex_barging", "--out", str(tmp_path))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAILED seed" in p.stdout and "comutex_fifo" in p.stdout
    assert "replays exactly" in p.stdout
    repro = next(tmp_path.glob("gqemu-stress-runtime-*.json"))
    doc = json.loads(repro.read_text())
    assert doc["invariant"] == "comutex_fifo" and doc["options"]["plant"] == ["comutex_barging"]
    seed_cmd = next(ln for ln in p.stdout.splitlines() if "rerun the seed:" in ln)
    # the printed command reruns exactly that seed and fails the same way
    args = seed_cmd.split("gqemu stress ", 1)[1].split() + ["--no-shrink", "--out", str(tmp_path)]
    again = gqemu_stress(*args)
    assert again.returncode == 1 and "comutex_fifo" in again.stdout
    r = gqemu_stress("--repro", str(repro))
    assert r.returncode == 1 and "reproduced exactly" in r.stdout, r.stdout


def test_usage_errors_are_one_line():
    for args in (["--policy", "random"], ["--workload", "nope"], ["--jobs", "0"],
                 ["--faults", "2"], ["--plant", "nosuchbug"], ["--format", "vmdk"]):
        p = gqemu_stress(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = gqemu_stress("--iterations", "3", "--duration", "1")    # argparse's own
    assert p.returncode == 2 and "not allowed with" in p.stderr.splitlines()[-1]


def test_bad_reproducer_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    for path in (str(tmp_path / "missing.json"), str(bad), str(other)):
        p = gqemu_stress("--repro", path)
        assert p.returncode == 2, p.stdout + p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_whole_stack_passes_under_full_scheduling_points():
    """Every coroutine_fn call a scheduling point (GQEMU_STRESS=1), both
    policies, all workloads, faults on: the unplanted stack passes."""
    for policy in ("uniform", "pct"):
        j = summary_json(gqemu_stress("--workload", "all", "--seed", "100",
                                      "--iterations", "24", "--faults", "0.2",
                                      "--policy", policy, "--json", timeout=120))
        assert j["failures"] == [], j["failures"]
        assert j["schedules"] == 24 and j["faults"] > 0 and j["perturbations"] > 0


def test_duration_mode():
    j = summary_json(gqemu_stress("--workload", "runtime", "--seed", "9",
                                  "--duration", "0.5", "--json"))
    assert j["schedules"] > 0 and j["failures"] == [] and j["elapsed"] >= 0.5


def test_a_seed_replays_bit_for_bit_in_another_process():
    """Two processes, the same seeds, every workload, faults on: every
    scheduling decision is the same (and --jobs does not change them)."""
    args = ("--workload", "all", "--seed", "42", "--iterations", "6", "--faults", "0.3",
            "--json")
    a = summary_json(gqemu_stress(*args))
    b = summary_json(gqemu_stress(*args))
    c = summary_json(gqemu_stress(*args, "--jobs", "2"))
    assert a["failures"] == [] and a["fingerprint"] != 0
    assert a["fingerprint"] == b["fingerprint"] == c["fingerprint"]
    assert (a["requests"], a["checks"], a["faults"]) == (c["requests"], c["checks"], c["faults"])
    d = summary_json(gqemu_stress("--workload", "all", "--seed", "43", "--iterations", "6",
                                  "--faults", "0.3", "--json"))
    assert d["fingerprint"] != a["fingerprint"]
