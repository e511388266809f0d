"""gqemu: an executable model of QEMU's storage I/O path.

The package is layered (ARCHITECTURE.md section 2); this top-level module
imports nothing so that the command-line tools start fast.
"""

__version__ = "0.1.0"
