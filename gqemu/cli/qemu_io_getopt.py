"""glibc ``getopt`` / ``getopt_long`` for qemu-io's and qemu-img's commands
and command lines: argument permutation (options may follow operands),
clusters (``-qv``), attached arguments (``-P5``), ``--``, unique prefixes of
long options, a leading ``+`` (stop at the first operand) or ``:`` (no
messages; ``:`` for a missing argument) in the optstring, and glibc's
error messages on stderr.  ``optind`` and the permuted ``argv`` follow
glibc's step by step, so a caller can name ``argv[optind - 1]`` at an error
as qemu-img does.

Must not import: anything from ``gqemu`` but ``gqemu.cli.qemu_io_util``.
QEMU: none (glibc 2.36 posix/getopt.c: _getopt_internal_r,
process_long_option, exchange).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

from gqemu.cli.qemu_io_util import err


class Getopt:
    """glibc getopt()/getopt_long() with argument permutation.

    Iterate to get ``(c, optarg)`` pairs in order; ``c`` is '?' after an
    error (printed to stderr as glibc prints it, unless the optstring starts
    with ':'; then a missing argument gives ':').  While iterating,
    ``optind`` and ``argv`` are glibc's; once the iteration finishes,
    ``args`` holds the non-option arguments in order.  ``longopts`` maps a
    long name to ``(has_arg, c)``.
    """

    def __init__(self, argv: Sequence[str], optstring: str,
                 longopts: Optional[dict[str, tuple[bool, str]]] = None,
                 prog: Optional[str] = None) -> None:
        self.argv = list(argv)
        self.require_order = optstring[:1] == "+"
        self.optstring = optstring.lstrip("+-")
        self.print_errors = self.optstring[:1] != ":"
        self.longopts = longopts or {}
        self.prog = prog if prog is not None else self.argv[0]
        # set to a list, messages are collected there instead of printed
        self.messages: Optional[list[str]] = None
        self.optind = 1
        self._first = self._last = 1        # the non-options skipped so far
        self._next = ""                     # the rest of a short-option word

    @property
    def args(self) -> list[str]:
        """The operands (after the scan: argv[optind:])."""
        return self.argv[self.optind:]

    @property
    def permuted(self) -> list[str]:
        """argv as glibc leaves it once the scan is over: the option
        elements (with their separate arguments, and ``--``) first, then the
        operands (QEMU code that reads ``argv[1]`` afterwards sees this)."""
        return self.argv

    def _error(self, msg: str) -> None:
        if not self.print_errors:
            return
        line = "%s: %s\n" % (self.prog, msg)
        if self.messages is not None:
            self.messages.append(line)
        else:
            err(line)

    def _exchange(self) -> None:
        """Move the skipped non-options [first, last) after the options
        [last, optind)."""
        a, first, last, optind = self.argv, self._first, self._last, self.optind
        a[first:optind] = a[last:optind] + a[first:last]
        self._first, self._last = first + optind - last, optind

    def __iter__(self) -> Iterator[tuple[str, Optional[str]]]:
        while True:
            res = self._step()
            if res is None:
                return
            yield res

    def _nonoption(self) -> bool:
        a = self.argv[self.optind]
        return a[:1] != "-" or a == "-"

    def _step(self) -> Optional[tuple[str, Optional[str]]]:
        argv, argc = self.argv, len(self.argv)
        if not self._next:
            self._last = min(self._last, self.optind)
            self._first = min(self._first, self.optind)
            if not self.require_order:
                if self._first != self._last and self._last != self.optind:
                    self._exchange()
                elif self._last != self.optind:
                    self._first = self.optind
                while self.optind < argc and self._nonoption():
                    self.optind += 1
                self._last = self.optind
            if self.optind != argc and argv[self.optind] == "--":
                self.optind += 1
                if self._first != self._last and self._last != self.optind:
                    self._exchange()
                elif self._first == self._last:
                    self._first = self.optind
                self._last = self.optind = argc
            if self.optind == argc:
                if self._first != self._last:
                    self.optind = self._first
                return None
            if self._nonoption():           # only with '+'
                return None
            if self.longopts and argv[self.optind].startswith("--"):
                return self._long(argv[self.optind][2:])
            self._next = argv[self.optind][1:]
        c, self._next = self._next[0], self._next[1:]
        if not self._next:
            self.optind += 1
        i = self.optstring.find(c)
        if i < 0 or c in ":;":
            self._error("invalid option -- '%s'" % c)
            return "?", None
        if self.optstring[i + 1:i + 2] != ":":
            return c, None
        optarg: Optional[str] = None
        if self._next:
            optarg = self._next
            self.optind += 1
        elif self.optind == argc:
            self._error("option requires an argument -- '%s'" % c)
            c = ":" if self.optstring[:1] == ":" else "?"
        else:
            optarg = argv[self.optind]
            self.optind += 1
        self._next = ""
        return c, optarg

    def _long(self, word: str) -> tuple[str, Optional[str]]:
        name, eq, value = word.partition("=")
        self.optind += 1
        if name in self.longopts:
            found = name
        else:
            hits = [n for n in self.longopts if n.startswith(name)]
            if not hits:
                self._error("unrecognized option '--%s'" % word)
                return "?", None
            found = hits[0]
            ambig = [n for n in hits[1:] if self.longopts[n] != self.longopts[found]]
            if ambig:
                # glibc lists the first match and every later one unlike it
                self._error("option '--%s' is ambiguous; possibilities:%s" % (
                    word, "".join(" '--%s'" % n for n in hits
                                  if n == found or n in ambig)))
                return "?", None
        has_arg, c = self.longopts[found]
        if eq:
            if has_arg:
                return c, value
            self._error("option '--%s' doesn't allow an argument" % found)
            return "?", None
        if not has_arg:
            return c, None
        if self.optind < len(self.argv):
            self.optind += 1
            return c, self.argv[self.optind - 1]
        self._error("option '--%s' requires an argument" % found)
        return (":" if self.optstring[:1] == ":" else "?"), None
