"""A wall-clock limit for a run, that also stops a guest computing forever.

A guest program is Python running in a greenlet: ``while True: pass`` makes
no exit, so neither the exit budget (``max_exits``) nor any greenlet switch
can end it.  :func:`kvm_set_time_limit` bounds a run two ways:

* a gevent timer at the deadline sets ``s.limit_error`` and wakes the halted
  vCPUs; every vCPU checks ``limit_error`` before ``KVM_RUN`` and ends with
  ``EXCP_WATCHDOG`` (this covers guests that wait: HLT, polling);
* ``SIGALRM`` (an interval timer, main thread only) covers a guest that
  never exits: the handler runs between two bytecodes of whatever the main
  thread executes; when that is a guest program (not an emulator hook on
  its stack, such as the recorder's), it raises
  :class:`GuestTimeout` there (a BaseException: ``except Exception`` in the
  guest does not catch it), so the guest program ends with it and its vCPU
  reports the limit.  The timer repeats every 0.1 s, so a guest that catches
  even that is interrupted again; after ``GIVE_UP`` further interruptions the
  process exits with ``status`` (the last resort: nothing else can end a
  Python loop that ignores every exception).

Must not import: gqemu.machine, gqemu.replay, gqemu.cli.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import gevent
from greenlet import getcurrent

from gqemu.kvm.cpu import GuestTimeout, GuestWatchdog, KVMState, kvm_kick_all

__all__ = ["kvm_set_time_limit", "TimeLimit", "GIVE_UP"]

REPEAT = 0.1            # s between SIGALRMs once the limit has expired
GIVE_UP = 50            # interruptions a guest may survive before os._exit


class TimeLimit:
    """An armed limit; :meth:`cancel` disarms it (idempotent)."""

    def __init__(self, s: KVMState, seconds: float, status: int) -> None:
        self.s = s
        self.seconds = seconds
        self.status = status
        self.message = "the run exceeded its --timeout of %g s" % seconds
        self.interrupts = 0
        self.timer: Any = gevent.get_hub().loop.timer(seconds)
        self.timer.start(self._expired)
        self.old_handler: Any = None
        if threading.current_thread() is threading.main_thread():
            self.old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)

    def _set_error(self) -> None:
        if self.s.limit_error is None:
            self.s.limit_error = GuestWatchdog(self.message)

    def _expired(self) -> None:
        # in the hub: wake whatever waits so that it sees the limit
        self._set_error()
        kvm_kick_all(self.s)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        self._set_error()
        cur = getcurrent()
        if any(c.guest is cur for c in self.s.cpus) and _guest_code(frame):
            self.interrupts += 1
            if self.interrupts > GIVE_UP:
                sys.stderr.write("gqemu run: %s, and the guest program ignores being "
                                 "stopped; exiting\n" % self.message)
                sys.stderr.flush()
                os._exit(self.status)
            raise GuestTimeout(self.message)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.stop()
            self.timer.close()
            self.timer = None
        if self.old_handler is not None:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, self.old_handler)
            self.old_handler = None


_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_GUEST_SIDE = (os.path.join(_PKG, "guest") + os.sep, os.path.join(_PKG, "kvm", "guest.py"))


def _guest_code(frame: Any) -> bool:
    """Whether ``frame`` runs guest code: the script or the guest-side
    library, not an emulator hook running on the guest's stack (the
    recorder's RAM hooks): those are left to finish, and the next alarm or
    exit ends the guest."""
    name = os.path.abspath(frame.f_code.co_filename) if frame is not None else ""
    return not name.startswith(_PKG) or name.startswith(_GUEST_SIDE)


def kvm_set_time_limit(s: KVMState, seconds: float, status: int = 124) -> TimeLimit:
    """Bound the run of ``s`` to ``seconds`` of wall-clock time from now;
    ``status`` is the exit status of the last resort.  Returns the armed
    limit.  Context: the main greenlet, before the main loop."""
    if not seconds > 0:
        raise ValueError("the time limit must be > 0")
    return TimeLimit(s, seconds, status)

