"""Counting the Python calls a piece of code makes, with ``sys.setprofile``
(deterministic, so tests can hold a budget; the speed itself is measured by
``gqemu bench``, never timed in tests)."""
from __future__ import annotations

import sys
from typing import Any, Callable

import gqemu.qemu_coroutine as coroutine_mod   # where coroutine_fn's wrapper lives


def python_calls(fn: Callable[[], Any]) -> list[str]:
    """Names of the Python functions ``fn()`` calls, ``fn`` itself first (in
    every coroutine it switches to), leaving out the GQEMU_DEBUG/GQEMU_STRESS
    coroutine_fn wrappers."""
    names: list[str] = []

    def prof(frame: Any, event: str, arg: Any) -> None:
        code = frame.f_code
        if event == "call" and not (code.co_name == "checked"
                                    and code.co_filename == coroutine_mod.__file__):
            names.append(code.co_name)
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names


def c_calls(fn: Callable[[], Any]) -> list[str]:
    """Names of the C functions (builtins, methods of C types) that ``fn()``
    calls, in every coroutine it switches to, in order."""
    names: list[str] = []

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and arg is not sys.setprofile:
            names.append(arg.__name__)
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names
