"""tests/cli: loads the differential qemu-io runner (tests/qemu-io/runner.py)
once, by file path, as module ``qemu_io_corpus_runner``, so the
test_qemu_io_* modules can ``import qemu_io_corpus_runner as runner`` under
any import mode (pytest imports this file before collecting them); the
real-vs-gqemu script runner ``difftools.py`` and the Bochs image builder
``bochs_images.py`` beside it likewise."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent

for _name, _path in (("qemu_io_corpus_runner", _HERE.parent / "qemu-io" / "runner.py"),
                     ("difftools", _HERE / "difftools.py"),
                     ("bochs_images", _HERE / "bochs_images.py")):
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, _path)
        _module = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
        sys.modules[_name] = _module            # dataclasses look it up
        _spec.loader.exec_module(_module)  # type: ignore[union-attr]
