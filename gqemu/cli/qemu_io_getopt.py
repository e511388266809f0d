"""glibc ``getopt`` / ``getopt_long`` for qemu-io's commands and command
line: argument permutation (options may follow operands), clusters
(``-qv``), attached arguments (``-P5``), ``--`` and unique prefixes of long
options, with glibc's error messages on stderr.

Must not import: anything from ``gqemu`` but ``gqemu.cli.qemu_io_util``.
QEMU: none (POSIX getopt as glibc implements it).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

from gqemu.cli.qemu_io_util import err


class Getopt:
    """glibc getopt()/getopt_long() with argument permutation.

    Iterate to get ``(c, optarg)`` pairs in order; ``c`` is '?' after an
    error (already printed to stderr as glibc prints it).  Once the
    iteration finishes, ``args`` holds the non-option arguments in order.
    ``longopts`` maps a long name to ``(has_arg, c)``.
    """

    def __init__(self, argv: Sequence[str], optstring: str,
                 longopts: Optional[dict[str, tuple[bool, str]]] = None,
                 prog: Optional[str] = None) -> None:
        self.argv = list(argv)
        self.optstring = optstring
        self.longopts = longopts or {}
        self.prog = prog if prog is not None else self.argv[0]
        self.args: list[str] = []
        self._opts: list[str] = []          # option elements, in order

    @property
    def permuted(self) -> list[str]:
        """argv as glibc leaves it once the scan is over: the option
        elements (with their separate arguments, and ``--``) first, then the
        operands (QEMU code that reads ``argv[1]`` afterwards sees this)."""
        return self.argv[:1] + self._opts + self.args

    def _takes_arg(self, c: str) -> Optional[bool]:
        i = self.optstring.find(c)
        if c == ":" or i < 0:
            return None
        return self.optstring[i + 1:i + 2] == ":"

    def __iter__(self) -> Iterator[tuple[str, Optional[str]]]:
        argv = self.argv
        i = 1
        while i < len(argv):
            a = argv[i]
            i += 1
            if a == "--":
                self._opts.append(a)
                self.args.extend(argv[i:])
                return
            if len(a) < 2 or a[0] != "-":
                self.args.append(a)
                continue
            start = i - 1
            if a.startswith("--") and self.longopts:
                res, i = self._long(a, i)
                self._opts.extend(argv[start:i])
                yield res
                continue
            self._opts.append(a)
            j = 1
            while j < len(a):
                c = a[j]
                j += 1
                takes = self._takes_arg(c)
                if takes is None:
                    err("%s: invalid option -- '%s'\n" % (self.prog, c))
                    yield "?", None
                    continue
                if not takes:
                    yield c, None
                    continue
                if j < len(a):
                    yield c, a[j:]
                elif i < len(argv):
                    i += 1
                    self._opts.append(argv[i - 1])
                    yield c, argv[i - 1]
                else:
                    err("%s: option requires an argument -- '%s'\n"
                        % (self.prog, c))
                    yield "?", None
                break

    def _long(self, a: str, i: int) -> tuple[tuple[str, Optional[str]], int]:
        name, eq, value = a[2:].partition("=")
        if name in self.longopts:
            matches = [name]
        else:
            matches = [n for n in self.longopts if n.startswith(name)]
        if not matches:
            err("%s: unrecognized option '%s'\n" % (self.prog, a))
            return ("?", None), i
        if len(matches) > 1:
            err("%s: option '%s' is ambiguous; possibilities:%s\n"
                % (self.prog, a, "".join(" '--%s'" % m for m in matches)))
            return ("?", None), i
        full = matches[0]
        has_arg, c = self.longopts[full]
        if not has_arg:
            if eq:
                err("%s: option '--%s' doesn't allow an argument\n"
                    % (self.prog, full))
                return ("?", None), i
            return (c, None), i
        if eq:
            return (c, value), i
        if i < len(self.argv):
            return (c, self.argv[i]), i + 1
        err("%s: option '--%s' requires an argument\n" % (self.prog, full))
        return ("?", None), i
