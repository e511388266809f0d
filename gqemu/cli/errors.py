"""Errors shared by the command-line tools.

Kept apart from ``gqemu.cli.main`` so that ``python -m gqemu.cli.main``
(where that module runs as ``__main__``) and subcommands agree on the class.
"""
from __future__ import annotations


class UsageError(Exception):
    """A command-line or input error: printed as one line, exit status 2."""
