"""``gqemu stress --scheduler``: campaigns on a real Dask cluster.

A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1
(module fixture); every campaign is compared with the local run of the
same seeds.  The tests skip when ``distributed`` is not installed, except
under CI=true, where they fail.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.stress.conftest import ROOT, gqemu_stress, summary_json

try:
    import distributed
except ImportError:
    distributed = None

needs_dask = pytest.mark.skipif(distributed is None and os.environ.get("CI") != "true",
                                reason="distributed not installed (pip install "
                                       "'gqemu[cluster]')")
TOPIC = "gqemu-stress"
TIMING = ("elapsed", "workers", "retried")


def _wait(cond, what, limit=90.0):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("gave up waiting for " + what)
        time.sleep(0.05)


class Cluster:
    """A ``dask scheduler`` and its workers, as processes on 127.0.0.1."""

    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.env.pop("GQEMU_STRESS", None)
        sfile = tmp / "scheduler.json"
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
             "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
             str(sfile)], env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)]
        _wait(lambda: sfile.exists() and sfile.stat().st_size > 0, "the scheduler")
        self.address = json.loads(sfile.read_text())["address"]
        self.client = distributed.Client(self.address)
        self.workers: dict[str, subprocess.Popen] = {}

    def add_worker(self, name, pythonpath=None) -> str:
        env = dict(self.env, PYTHONPATH=str(pythonpath or ROOT))
        p = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
             "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
             "--no-dashboard", "--name", name], env=env, cwd=str(pythonpath or ROOT),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)

        def address():
            for addr, w in self.client.scheduler_info(n_workers=-1)["workers"].items():
                if w.get("name") == name:
                    return addr
            return None
        _wait(lambda: address() is not None, "worker " + name)
        self.workers[address()] = p
        return address()

    def kill(self, addr) -> None:
        p = self.workers.pop(addr)
        p.kill()
        p.wait()
        _wait(lambda: addr not in self.client.scheduler_info(n_workers=-1)["workers"],
              "the scheduler to drop " + addr)

    def close(self) -> None:
        self.client.close()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if distributed is None:
        pytest.fail("distributed is not installed and CI=true")
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        c.add_worker("w0")
        c.add_worker("w1")
        yield c
    finally:
        c.close()


def _same(a, b):
    """Two JSON summaries equal but for time, workers, retries and where
    the reproducer went (and which worker shrank it)."""
    def strip(j):
        j = {k: v for k, v in j.items() if k not in TIMING}
        j["failures"] = [{k: v for k, v in f.items() if k not in ("repro", "shrunk_on")}
                         for f in j["failures"]]
        return j
    assert strip(a) == strip(b)


RUN = ("--workload", "runtime,block", "--seed", "3", "--iterations", "30", "--json")


@needs_dask
def test_summary_identical_to_local_run(cluster):
    local = summary_json(gqemu_stress(*RUN))
    p = gqemu_stress(*RUN, "--scheduler", cluster.address)
    assert p.returncode == 0, p.stderr
    j = summary_json(p)
    assert j["schedules"] == 30 and j["retried"] == 0 and j["workers"] >= 1
    _same(local, j)
    assert p.stderr == ""                   # no progress when piped
    p = gqemu_stress(*RUN[:-1], "--scheduler", cluster.address)     # the text summary
    rows = dict(ln.strip().split("  ", 1) for ln in p.stdout.splitlines()[1:])
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    for row, key in (("schedules", "schedules"), ("requests", "requests"),
                     ("faults injected", "faults"), ("invariant checks", "checks"),
                     ("scheduling decisions", "steps"), ("perturbations", "perturbations")):
        assert rows[row] == str(local[key]), row
    assert rows["result"] == "passed" and "0 batches retried" in rows["elapsed"]


@needs_dask
def test_first_failure_shrunk_on_a_worker_reproducer_written_here(cluster, tmp_path):
    # seeds 20..59 fail first at seed 32 (iteration 12), then 37, 47, 49:
    # whichever batch finishes first, the campaign reports seed 32 and
    # counts exactly iterations 0..12, as the local run does.
    args = ("--workload", "runtime", "--seed", "20", "--iterations", "40",
            "--plant", "comutex_barging", "--json")
    local = gqemu_stress(*args, "--out", str(tmp_path / "local"))
    p = gqemu_stress(*args, "--out", str(tmp_path / "dask"), "--scheduler", cluster.address)
    assert p.returncode == 1 == local.returncode, p.stdout + p.stderr
    j, lj = summary_json(p), summary_json(local)
    _same(lj, j)
    assert j["schedules"] == 13 and j["failures"][0]["seed"] == 32
    f = j["failures"][0]
    assert f["shrunk_on"] in cluster.workers and f["reproduced"] is True
    repro = tmp_path / "dask" / "gqemu-stress-runtime-32.json"
    assert f["repro"] == str(repro) and repro.is_file()
    r = gqemu_stress("--repro", str(repro))
    assert r.returncode == 1 and "reproduced exactly" in r.stdout, r.stdout + r.stderr


@needs_dask
def test_bench_runs_a_local_cluster_of_two_processes(capsys, monkeypatch):
    """``gqemu bench stress``'s cluster table: the same campaign in one
    process and on ``--scheduler local:2`` (a LocalCluster of two worker
    processes), both rates, and the summaries agree."""
    import argparse
    from gqemu.bench import stress as bench
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    bench._cluster_bench(argparse.Namespace(quick=True), n=16)
    out = capsys.readouterr().out
    assert "summaries identical" in out, out
    rows = {ln.split("  ")[0]: ln.split() for ln in out.splitlines()
            if ln.startswith(("one process", "local:2"))}
    assert set(rows) == {"one process", "local:2 (Dask)"}, out
    assert rows["one process"][2] == "16" and rows["local:2 (Dask)"][2] == "16"


@needs_dask
def test_worker_with_other_gqemu_is_refused(cluster, tmp_path):
    """A worker running a copy of gqemu takes part while the copy is the
    same; once a file of it changes (the worker keeps running), it is
    refused with one line and the campaign runs on the others."""
    other = tmp_path / "other"
    shutil.copytree(ROOT / "gqemu", other / "gqemu",
                    ignore=shutil.ignore_patterns("__pycache__"))
    bad = cluster.add_worker("other", pythonpath=other)
    try:
        args = ("--workload", "runtime", "--seed", "7", "--iterations", "12", "--json")
        local = summary_json(gqemu_stress(*args))
        p = gqemu_stress(*args, "--scheduler", cluster.address)
        assert p.returncode == 0 and p.stderr == "", p.stderr
        _same(local, summary_json(p))
        with open(other / "gqemu" / "stress" / "vclock.py", "a") as f:
            f.write("# not the client's code\n")
        p = gqemu_stress(*args, "--scheduler", cluster.address)
        assert p.returncode == 0, p.stderr
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gqemu stress: refusing worker %s: " % bad)
        assert "install the same gqemu on every worker" in err[0]
        _same(local, summary_json(p))
    finally:
        cluster.kill(bad)


@needs_dask
def test_worker_killed_mid_campaign_loses_no_seed(cluster):
    # --duration: batches grow to about a second whatever the machine's
    # speed, so the victim is caught inside one; the local run then runs
    # as many seeds as the campaign did.
    victim = cluster.add_worker("victim")
    args = ("--workload", "runtime", "--seed", "50", "--json")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    main = "import sys; from gqemu.cli.main import main; sys.exit(main())"
    camp = subprocess.Popen([sys.executable, "-c", main, "stress", *args, "--duration",
                             "2", "--scheduler", cluster.address], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = cluster.workers[victim]

    def busy():
        """Batches the victim started and did not end, as the scheduler saw."""
        started: dict = {}
        for _t, m in cluster.client.get_events(TOPIC):
            if m.get("worker") == victim:
                key = (m["campaign"], m["batch"])
                started[key] = started.get(key, 0) + (1 if m["what"] == "start" else -1)
        return [k for k, v in started.items() if v > 0]
    try:
        while True:                 # freeze it while it runs a batch, then kill it
            _wait(busy, "the victim to start a batch")
            proc.send_signal(signal.SIGSTOP)
            if busy():
                break
            proc.send_signal(signal.SIGCONT)
        cluster.workers.pop(victim)
        proc.kill()
        proc.wait()
        out, err = camp.communicate(timeout=120)
    finally:
        if camp.poll() is None:
            camp.kill()
    assert camp.returncode == 0, err
    j = json.loads(out.strip().splitlines()[-1])
    assert j["retried"] >= 1 and j["failures"] == []
    _same(summary_json(gqemu_stress(*args, "--iterations", str(j["schedules"]))), j)


@needs_dask
def test_progress_on_a_terminal_and_ctrl_c_cancels(cluster):
    """On a terminal the progress line shows schedules/s and the workers in
    use; Ctrl-C ends the campaign (status 130, one line) and its tasks
    leave the cluster."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    main = "import sys; from gqemu.cli.main import main; sys.exit(main())"
    master, slave = pty.openpty()
    camp = subprocess.Popen([sys.executable, "-c", main, "stress", "--workload", "block",
                             "--seed", "1", "--duration", "300", "--scheduler",
                             cluster.address], env=env, stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    tty = bytearray()

    def read_tty():
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:                 # the child closed its end
                return False
            if not chunk:
                return False
            tty.extend(chunk)
        return True
    try:
        _wait(lambda: read_tty() and re.search(rb"/s workers [12]", tty), "progress")
        camp.send_signal(signal.SIGINT)
        out, _ = camp.communicate(timeout=60)
        read_tty()
    finally:
        if camp.poll() is None:
            camp.kill()
        os.close(master)
    text = tty.decode(errors="replace")
    assert camp.returncode == 130, out + text
    assert text.rstrip().endswith("gqemu stress: interrupted") and "Traceback" not in text
    _wait(lambda: not any(k for keys in cluster.client.processing().values()
                          for k in keys if str(k).startswith("gqemu-stress-")),
          "the cluster to drop the campaign's tasks")


@needs_dask
def test_bad_scheduler_addresses():
    for addr in ("nowhere", "tcp://127.0.0.1", "local:0"):
        p = gqemu_stress("--scheduler", addr)
        assert p.returncode == 2, (addr, p.stdout, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = gqemu_stress("--scheduler", "local:2", "--jobs", "2")
    assert p.returncode == 2 and "do not go together" in p.stderr
    env = dict(os.environ, PYTHONPATH=str(ROOT), GQEMU_STRESS="1",
               DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    main = "import sys; from gqemu.cli.main import main; sys.exit(main())"
    p = subprocess.run([sys.executable, "-c", main, "stress", "--iterations", "1",
                        "--scheduler", "tcp://127.0.0.1:9"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot use the Dask scheduler at tcp://127.0.0.1:9" in err[0]


def test_without_distributed_says_how_to_install():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import sys; sys.modules['distributed'] = None; "
            "from gqemu.cli.main import main; sys.exit(main())")
    p = subprocess.run([sys.executable, "-c", code, "stress", "--scheduler", "local:2"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [
        "gqemu stress: --scheduler needs Dask's 'distributed' package: "
        "pip install 'gqemu[cluster]'"]
