"""Stress campaigns on a Dask cluster (``gqemu stress --scheduler ...``).

The client cuts the campaign's iterations into batches (``start``,
``count``) sized so that one batch takes about :data:`TASK_SECONDS` (it
starts with single seeds and adapts to the measured time per seed) and
submits them as Dask tasks.  Each result carries one record per seed
(:func:`gqemu.stress.runner.seed_record`, with its decision fingerprint);
the client keeps them by iteration and, at the end, folds iterations
``0 .. last`` with :func:`gqemu.stress.runner.fold`, the same sums a local
run makes, so the summary of a campaign is the same wherever its seeds
ran.  ``last`` is the first failing iteration (later batches are
cancelled, earlier ones awaited) or the last one submitted.  The first
failure is then shrunk by a worker (:func:`failure_task`) and its
reproducer written on the client.

The tasks and what runs them on a worker are in
:mod:`gqemu.stress.cluster_tasks` (a child process per task thread, started
with ``GQEMU_STRESS=1`` before the campaign's clock starts).

Determinism across machines needs the same code everywhere: the client
compares :func:`identity` (gqemu's version and a hash of its source tree)
with every worker's and refuses the ones that differ; every task checks it
again.  A batch whose worker died is rescheduled by Dask; every task logs
its start under the :data:`TOPIC` event topic, and a batch started more
than once counts as retried.

Dask (the ``distributed`` package) is optional: ``pip install
'gqemu[cluster]'``.  Nothing here imports it at module level.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any, Optional

from gqemu.stress.cluster_tasks import (TOPIC, VersionMismatch, batch_task, describe,
                                       failure_task, identity, warm_task,
                                       worker_identity)

__all__ = ["ClusterError", "Campaign", "import_distributed", "INSTALL"]

TASK_SECONDS = 1.0
INSTALL = "pip install 'gqemu[cluster]'"


class ClusterError(Exception):
    """A campaign that cannot go on (one-line message)."""


def import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError("--scheduler needs Dask's 'distributed' package: %s"
                           % INSTALL) from None
    return distributed


# -- client side ------------------------------------------------------------

class Campaign:
    """One campaign on the cluster at ``address`` (``SCHEME://HOST:PORT``
    or ``local:N``); ``err`` gets the refusal notes."""

    def __init__(self, address: str, config: dict[str, Any], err: Any) -> None:
        self.address = address
        self.config = config
        self.err = err
        self.id = uuid.uuid4().hex[:12]
        self.ident = identity()
        self.client: Any = None
        self.cluster: Any = None
        self.good: list[str] = []
        self.refused: set[str] = set()
        self.restrict = False
        self.retried = 0
        self.used: set[str] = set()
        self.batches = 0
        self._asked = self._alone = 0.0
        self._threads = 1

    # setting up
    def connect(self) -> None:
        dd = import_distributed()
        logging.getLogger("distributed").setLevel(logging.ERROR)
        try:
            if self.address.startswith("local:"):
                n = int(self.address[6:])
                self.cluster = dd.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True,
                    host="127.0.0.1", scheduler_port=0, dashboard_address=None,
                    # its HTTP server (no dashboard) on a free port, not 8787
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.ERROR)
                self.client = dd.Client(self.cluster)
                self.client.wait_for_workers(n, timeout=120)
            else:
                self.client = dd.Client(self.address)
                self.client.wait_for_workers(1, timeout=60)
        except (OSError, TimeoutError, ValueError) as e:
            self.close()
            raise ClusterError("cannot use the Dask scheduler at %s: %s"
                               % (self.address, str(e).splitlines()[0] if str(e)
                                  else type(e).__name__)) from None
        self.vet_workers()
        self.warm_up()

    def vet_workers(self) -> None:
        """Refuse the workers whose gqemu differs from ours."""
        found = self.client.run(worker_identity, on_error="return")
        good = []
        for addr, ident in sorted(found.items()):
            if ident == self.ident:
                good.append(addr)
                continue
            if addr not in self.refused:
                why = ("runs " + describe(ident) if isinstance(ident, dict)
                       else "cannot run gqemu (%s: %s)" % (type(ident).__name__, ident))
                self.err.write("gqemu stress: refusing worker %s: it %s, this client "
                               "%s; install the same gqemu on every worker (a seed "
                               "replays only on the same code)\n"
                               % (addr, why, describe(self.ident)))
                self.refused.add(addr)
        if not good:
            raise ClusterError("no worker of %s runs this client's %s"
                               % (self.address, describe(self.ident)))
        self.restrict = bool(self.refused)
        self.good = good

    def warm_up(self) -> None:
        """Start every good worker thread's child process (they import the
        engine in parallel, before the campaign's clock starts)."""
        nthreads = self.client.nthreads()
        futs = [(addr, self.client.submit(
                    warm_task, self.ident, workers=[addr], allow_other_workers=False,
                    pure=False, key="gqemu-stress-warm-%s-%s-%d" % (self.id, addr, k)))
                for addr in self.good for k in range(nthreads.get(addr, 1))]
        for addr, f in futs:
            self._wait(f)
            exc = f.exception() if f.status == "error" else None
            f.release()
            if isinstance(exc, VersionMismatch) and addr in self.good:
                self.err.write("gqemu stress: refusing %s\n" % exc)
                self.refused.add(addr)
                self.good.remove(addr)
                self.restrict = True
            elif exc is not None:
                raise ClusterError("cannot start gqemu on worker %s: %s: %s"
                                   % (addr, type(exc).__name__, exc))
        if not self.good:
            raise ClusterError("no worker of %s runs this client's %s"
                               % (self.address, describe(self.ident)))

    def threads(self) -> int:
        """Task threads of the usable workers (asked at most once a
        second); a cluster without one for a minute ends the campaign."""
        now = time.monotonic()
        if now - self._asked >= 1.0:
            self._asked = now
            n = self.client.nthreads()
            self._threads = sum(v for k, v in n.items()
                                if k in self.good or not self.restrict)
            if self._threads:
                self._alone = now
            elif now - self._alone > 60:
                raise ClusterError("no usable worker left at %s for 60 s" % self.address)
        return max(1, self._threads)

    def submit(self, fn: Any, *args: Any) -> Any:
        self.batches += 1
        kw: dict[str, Any] = {"key": "gqemu-stress-%s-%d" % (self.id, self.batches),
                              "pure": False}
        if self.restrict:
            kw.update(workers=list(self.good), allow_other_workers=False)
        return self.client.submit(fn, self.id, self.ident, self.batches, *args, **kw)

    def result(self, fut: Any) -> Optional[dict[str, Any]]:
        """The future's result; None after a refused worker (resubmit)."""
        if fut.status == "error":
            exc = fut.exception()
            fut.release()
            if isinstance(exc, VersionMismatch):
                self.err.write("gqemu stress: refusing %s\n" % exc)
                self.vet_workers()
                self.restrict = True
                return None
            raise ClusterError("a batch failed on the cluster: %s: %s"
                               % (type(exc).__name__, exc))
        r = fut.result()
        fut.release()
        self.used.add(r["worker"])
        return r  # type: ignore[no-any-return]

    # the campaign
    def run(self, summary: Any, bar: Any) -> int:
        """Run the campaign; its totals and failure go to ``summary``.
        Returns 1 if a seed failed, else 0."""
        from gqemu.stress import runner
        cfg = dict(self.config, job=0, jobs=1)
        iterations, duration = cfg.get("iterations"), cfg.get("duration")
        # Records wait here until every earlier iteration is in, then are
        # folded in iteration order (memory stays bounded by what is out of
        # order); the prefix stops at its first failure, the campaign's.
        records: dict[int, dict[str, Any]] = {}
        totals, upto, failed = runner.new_totals(), 0, False
        pending: dict[Any, tuple[int, int]] = {}
        nxt, first_fail, per_seed = 0, None, None
        t0 = self._alone = time.monotonic()
        last_look = t0 - 1.0
        in_use = 0
        try:
            while True:
                threads = self.threads()
                while (first_fail is None and len(pending) < threads + (threads + 1) // 2
                       and (iterations is None or nxt < iterations)
                       and (duration is None or time.monotonic() - t0 < duration)):
                    count = 1 if per_seed is None else int(TASK_SECONDS / per_seed)
                    if iterations is not None:
                        count = min(count, -(-(iterations - nxt) // threads))
                    count = max(1, min(count, 10000))
                    pending[self.submit(batch_task, cfg, nxt, count)] = (nxt, count)
                    nxt += count
                if not pending:
                    break
                done = [f for f in pending if f.done()]
                if bar.enabled and time.monotonic() - last_look >= 1.0:
                    last_look = time.monotonic()
                    in_use = sum(1 for v in self.client.processing().values() if v)
                bar.update(upto + len(records), "workers %d" % in_use)
                if not done:
                    time.sleep(0.05)
                    continue
                for f in done:
                    if f not in pending:        # cancelled: after a failure
                        continue
                    start, count = pending.pop(f)
                    r = self.result(f)
                    if r is None:               # a refused worker: send it again
                        pending[self.submit(batch_task, cfg, start, count)] = (start, count)
                        continue
                    spent = r["elapsed"] / max(1, len(r["records"]))
                    per_seed = spent if per_seed is None else 0.7 * per_seed + 0.3 * spent
                    bad = [rec["i"] for rec in r["records"] if not rec["ok"]]
                    if bad and (first_fail is None or bad[0] < first_fail):
                        first_fail = bad[0]
                        later = [g for g, (s, _c) in pending.items() if s > first_fail]
                        for g in later:
                            del pending[g]
                        if later:
                            self.client.cancel(later, force=True)
                    for rec in r["records"]:
                        if first_fail is None or rec["i"] <= first_fail:
                            records[rec["i"]] = rec
                    while upto in records and not failed:
                        rec = records.pop(upto)
                        runner.fold(totals, rec)
                        upto += 1
                        failed = not rec["ok"]
            last = first_fail if first_fail is not None else nxt - 1
            assert upto == last + 1, "iterations %d..%d missing" % (upto, last)
            summary.event({"ev": "done", "job": 0, **totals,
                           "elapsed": time.monotonic() - t0})
            if first_fail is not None:
                summary.event(self.shrink(cfg, first_fail))
            self.retried = self.count_retried()
        except BaseException:
            if pending and self.client is not None:
                try:
                    self.client.cancel(list(pending), force=True)
                except Exception:
                    pass
            raise
        return 1 if first_fail is not None else 0

    def shrink(self, cfg: dict[str, Any], i: int) -> dict[str, Any]:
        """Shrink iteration ``i`` on a worker, write the reproducer here."""
        while True:
            r = self.result(self._wait(self.submit(failure_task, cfg, i)))
            if r is not None:
                break
        ev = r["event"]
        ev["shrunk_on"] = r["worker"]
        path = os.path.join(cfg.get("out") or ".", ev["repro"])
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(r["repro_text"])
        os.replace(path + ".tmp", path)
        ev["repro"] = path
        return ev  # type: ignore[no-any-return]

    @staticmethod
    def _wait(fut: Any) -> Any:
        while not fut.done():
            time.sleep(0.05)
        return fut

    def count_retried(self) -> int:
        starts: dict[int, int] = {}
        for _t, msg in self.client.get_events(TOPIC):
            if (isinstance(msg, dict) and msg.get("campaign") == self.id
                    and msg.get("what") == "start"):
                starts[msg["batch"]] = starts.get(msg["batch"], 0) + 1
        return sum(n - 1 for n in starts.values())

    def close(self) -> None:
        for thing in (self.client, self.cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    pass
        self.client = self.cluster = None
