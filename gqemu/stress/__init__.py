"""``gqemu stress``: seeded, reproducible exploration of schedules.

- :mod:`gqemu.sched` (runtime layer) owns the ordering decisions;
- :mod:`gqemu.stress.engine` runs one seeded schedule of one workload and
  checks the invariants as it goes and after drain;
- :mod:`gqemu.stress.workloads` and its siblings generate the workloads
  (runtime locks and thread-pool requests, block-layer I/O against a shadow
  model, IDE programs on several vCPUs);
- :mod:`gqemu.stress.shrink` minimises a failure and
  :mod:`gqemu.stress.repro` writes and replays reproducer files.

A stress run needs ``GQEMU_STRESS=1`` in the environment before
``gqemu.coroutine`` is imported, so that every ``coroutine_fn`` call is a
scheduling point; ``gqemu stress`` starts its workers that way.

Must not be imported by anything but gqemu.cli and gqemu.bench (top layer).
"""
