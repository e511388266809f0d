"""tests/cli: loads the differential qemu-io runner (tests/qemu-io/runner.py)
once, by file path, as module ``qemu_io_corpus_runner``, so the
test_qemu_io_* modules can ``import qemu_io_corpus_runner as runner`` under
any import mode (pytest imports this file before collecting them)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "qemu_io_corpus_runner"

if _NAME not in sys.modules:
    _path = Path(__file__).resolve().parents[1] / "qemu-io" / "runner.py"
    _spec = importlib.util.spec_from_file_location(_NAME, _path)
    _module = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules[_NAME] = _module                # dataclasses look it up
    _spec.loader.exec_module(_module)  # type: ignore[union-attr]
