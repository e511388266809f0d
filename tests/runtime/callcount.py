"""Counting the Python calls a piece of code makes, with ``sys.setprofile``
(deterministic, so tests can hold a budget; the speed itself is measured by
``gqemu bench``, never timed in tests)."""
from __future__ import annotations

import sys
from typing import Any, Callable

import gqemu.qemu_coroutine as coroutine_mod   # where coroutine_fn's wrapper lives


def _profiled(fn: Callable[[], Any], pick: Callable[[Any, str, Any], Any]) -> list[str]:
    """The non-None ``pick(frame, event, arg)`` of every profile event of
    ``fn()``, in every coroutine it switches to, in order."""
    names: list[str] = []

    def prof(frame: Any, event: str, arg: Any) -> None:
        name = pick(frame, event, arg)
        if name is not None:
            names.append(name)
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names


def python_calls(fn: Callable[[], Any]) -> list[str]:
    """Names of the Python functions ``fn()`` calls, ``fn`` itself first (in
    every coroutine it switches to), leaving out the GQEMU_DEBUG/GQEMU_STRESS
    coroutine_fn wrappers."""
    def pick(frame: Any, event: str, arg: Any) -> Any:
        code = frame.f_code
        if event == "call" and not (code.co_name == "checked"
                                    and code.co_filename == coroutine_mod.__file__):
            return code.co_name
        return None
    return _profiled(fn, pick)


def c_calls(fn: Callable[[], Any]) -> list[str]:
    """Names of the C functions (builtins, methods of C types) that ``fn()``
    calls, in every coroutine it switches to, in order."""
    def pick(frame: Any, event: str, arg: Any) -> Any:
        if event == "c_call" and arg is not sys.setprofile:
            return arg.__name__
        return None
    return _profiled(fn, pick)
