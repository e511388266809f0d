"""The gqemu exit-trace format: a msgpack stream of flat arrays.

    header  ["gqemu-trace", VERSION, {meta}]
    records [kind, ...]                  one per exit or guest-observable event
    end     [REC_END, nrecords]

``docs/trace-format.md`` is the user-facing description; this module is the
only code that packs or unpacks it.  Reading is a stream in constant memory:
``Unpacker`` with a 1 MiB buffer cap, every record checked against a flat
schema (no recursion), truncation detected by comparing ``tell()`` with the
file size.  Must not import kvm, hw or block: it is pure data.
"""
from __future__ import annotations

import os
from typing import IO, Any, Iterator

import msgpack

MAGIC = "gqemu-trace"
VERSION = 1

# record kinds (first element of every record array)
REC_END = 0             # [0, nrecords]
REC_IO = 1              # [1, cpu, dir, size, port, value]         one access
REC_IOS = 2             # [2, cpu, dir, size, port, count, data]   rep ins/outs
REC_MMIO = 3            # [3, cpu, is_write, addr, size, value]
REC_HLT = 4             # [4, cpu]
REC_SHUTDOWN = 5        # [5, cpu]                                 guest ended
REC_INTERNAL_ERROR = 6  # [6, cpu, message]                        guest raised
REC_IRQ = 7             # [7, line, level]
REC_MEMW = 8            # [8, cpu, addr, data]                     guest RAM store
REC_MEMR = 9            # [9, cpu, addr, data]                     guest RAM load

KIND_NAMES = {
    REC_END: "end", REC_IO: "io", REC_IOS: "io-string", REC_MMIO: "mmio",
    REC_HLT: "hlt", REC_SHUTDOWN: "shutdown", REC_INTERNAL_ERROR: "internal-error",
    REC_IRQ: "irq", REC_MEMW: "mem-write", REC_MEMR: "mem-read",
}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

MAX_BUFFER = 1 << 20        # one record can never need more than this
MAX_COUNT = 65536           # rep count per string exit
MAX_MEM = 1 << 16           # bytes per guest RAM access record
MAX_MESSAGE = 4096
MAX_CPUS = 256
MAX_IRQ = 24

_HEADER_KEYS = {
    "machine": str, "drives": list, "source": str, "ram_size": int,
    "created_by": str, "note": str, "irq": bool, "firmware": str,
}
_DRIVE_KEYS = {
    "index": int, "if": str, "format": str, "size": int, "sha256": str,
    "scratch": str, "file": str,
}


class TraceError(Exception):
    """A trace that cannot be read: carries a one-line reason.

    ``index`` is the record index (0 = first record after the header, -1 the
    header itself) or None when the failure is not tied to a record.
    """

    def __init__(self, msg: str, index: int | None = None) -> None:
        self.index = index
        super().__init__(msg if index is None else
                         ("header: %s" % msg if index < 0 else "record %d: %s" % (index, msg)))


class TraceTruncated(TraceError):
    """The stream stops before its end record (a killed run).  The message
    says where; ``index`` is the number of complete records."""

    def __init__(self, msg: str, index: int | None = None) -> None:
        super().__init__(msg)
        self.index = index


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError("msgpack extension type %d is not allowed" % code)


# ----------------------------------------------------------------------------
# writing

class TraceWriter:
    """Stream records to a file, flushing every ``flush_every`` records.

    Context: loop (called from the vCPU or the recorder).
    QEMU: replay/replay.c (replay_put_event), as a msgpack stream.
    """

    def __init__(self, f: IO[bytes], meta: dict, flush_every: int = 1024) -> None:
        self.f = f
        self.count = 0
        self.flush_every = flush_every
        self._pending = 0
        # autoreset=False: records accumulate in the packer's own buffer
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        self._pack = self._packer.pack
        check_meta(meta)
        f.write(msgpack.packb([MAGIC, VERSION, meta], use_bin_type=True))
        f.flush()
        self.closed = False

    def write(self, rec: list) -> None:
        self._pack(rec)
        self.count += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            # take the bytes out first: a signal handler that flushes again
            # (SIGTERM during a run) must not write them twice
            data = self._packer.bytes()
            self._packer.reset()
            self._pending = 0
            self.f.write(data)
        self.f.flush()

    def close(self, end: bool = True) -> None:
        """Write the end record (unless ``end`` is false) and flush."""
        if self.closed:
            return
        if end:
            self._pack([REC_END, self.count])
            self._pending += 1
        self.flush()
        self.closed = True


def check_meta(meta: Any, index: int = -1) -> dict:
    """Validate the header's map; returns it.  Raises TraceError."""
    if type(meta) is not dict:
        raise TraceError("metadata is not a map", index)
    _check_keys(meta, _HEADER_KEYS, "header", index)
    if meta.get("firmware", "seabios") != "seabios":
        raise TraceError("unknown firmware %r" % meta["firmware"], index)
    drives = meta.get("drives", [])
    if len(drives) > 8:
        raise TraceError("too many drives", index)
    for d in drives:
        if type(d) is not dict:
            raise TraceError("drive entry is not a map", index)
        _check_keys(d, _DRIVE_KEYS, "drive", index)
        if not 0 <= d.get("index", 0) < 4:
            raise TraceError("drive index out of range", index)
        if d.get("size", 0) < 0:
            raise TraceError("negative drive size", index)
    return meta


def _check_keys(m: dict, keys: dict[str, type], what: str, index: int) -> None:
    """Every key of ``m`` is one of ``keys``, its value of that type."""
    for k, v in m.items():
        t = keys.get(k)
        if t is None:
            raise TraceError("unknown %s key %r" % (what, k), index)
        if type(v) is not t:
            raise TraceError("%s key %r has the wrong type" % (what, k), index)


# ----------------------------------------------------------------------------
# reading

def _int(v: Any, lo: int, hi: int, what: str, i: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise TraceError("bad %s %r" % (what, v) if type(v) is int else
                         "%s is not an integer" % what, i)
    return v


def _io_head(r: list, i: int) -> int:
    """Check the cpu, direction, size and port of an io or io-string
    record; returns the size."""
    _int(r[1], 0, MAX_CPUS - 1, "cpu", i)
    _int(r[2], 0, 1, "direction", i)
    size = r[3]
    if type(size) is not int or size not in (1, 2, 4):
        raise TraceError("bad size %s" % _show(size), i)
    _int(r[4], 0, 0xFFFF, "port", i)
    return size


def check_record(r: Any, i: int) -> list:
    """Validate one record against the flat schema; returns it.

    Context: any.  Returns: the record; raises TraceError with the index.
    """
    if type(r) is not list or not r:
        raise TraceError("not a record array", i)
    kind = r[0]
    n = len(r)
    if kind == REC_IO and type(kind) is int:
        if n != 6:
            raise TraceError("io record has %d fields, not 6" % n, i)
        size = _io_head(r, i)
        _int(r[5], 0, (1 << (8 * size)) - 1, "value", i)
        return r
    if type(kind) is not int:
        raise TraceError("record kind is not an integer", i)
    if kind == REC_IOS:
        if n != 7:
            raise TraceError("io-string record has %d fields, not 7" % n, i)
        size = _io_head(r, i)
        count = _int(r[5], 1, MAX_COUNT, "count", i)
        if type(r[6]) is not bytes or len(r[6]) != size * count:
            raise TraceError("data is not %d bytes" % (size * count), i)
    elif kind == REC_MMIO:
        if n != 6:
            raise TraceError("mmio record has %d fields, not 6" % n, i)
        _int(r[1], 0, MAX_CPUS - 1, "cpu", i)
        _int(r[2], 0, 1, "is_write", i)
        _int(r[3], 0, (1 << 64) - 1, "address", i)
        size = r[4]
        if type(size) is not int or size not in (1, 2, 4, 8):
            raise TraceError("bad size %s" % _show(size), i)
        _int(r[5], 0, (1 << (8 * size)) - 1, "value", i)
    elif kind in (REC_HLT, REC_SHUTDOWN):
        if n != 2:
            raise TraceError("%s record has %d fields, not 2" % (KIND_NAMES[kind], n), i)
        _int(r[1], 0, MAX_CPUS - 1, "cpu", i)
    elif kind == REC_INTERNAL_ERROR:
        if n != 3:
            raise TraceError("internal-error record has %d fields, not 3" % n, i)
        _int(r[1], 0, MAX_CPUS - 1, "cpu", i)
        if type(r[2]) is not str or len(r[2]) > MAX_MESSAGE:
            raise TraceError("bad message", i)
    elif kind == REC_IRQ:
        if n != 3:
            raise TraceError("irq record has %d fields, not 3" % n, i)
        _int(r[1], 0, MAX_IRQ - 1, "irq line", i)
        _int(r[2], 0, 1, "irq level", i)
    elif kind in (REC_MEMW, REC_MEMR):
        if n != 4:
            raise TraceError("%s record has %d fields, not 4" % (KIND_NAMES[kind], n), i)
        _int(r[1], 0, MAX_CPUS - 1, "cpu", i)
        _int(r[2], 0, (1 << 32) - 1, "address", i)
        if type(r[3]) is not bytes or not 0 < len(r[3]) <= MAX_MEM:
            raise TraceError("bad data", i)
    elif kind == REC_END:
        if n != 2:
            raise TraceError("end record has %d fields, not 2" % n, i)
        if type(r[1]) is not int or r[1] != i:
            raise TraceError("end record counts %s records, stream has %d" % (_show(r[1]), i), i)
    else:
        raise TraceError("unknown record kind %d" % kind, i)
    return r


class TraceReader:
    """Iterate over a trace file's records, validated, in constant memory.

    ``meta`` holds the header map after construction.  Iteration yields
    each record (the end record is consumed, not yielded); it raises
    TraceError for a malformed record (with its index) and TraceTruncated
    when the stream stops without an end record.

    Context: any.
    QEMU: replay/replay-internal.c (replay_check_event and friends).
    """

    def __init__(self, f: IO[bytes], size: int | None = None) -> None:
        self.f = f
        if size is None:
            try:
                size = os.fstat(f.fileno()).st_size
            except (AttributeError, OSError, ValueError):
                size = None
        self.size = size
        self.count = 0
        self.ended = False
        self._u = msgpack.Unpacker(f, max_buffer_size=MAX_BUFFER, strict_map_key=True,
                                   raw=False, use_list=True, ext_hook=_reject_ext,
                                   read_size=64 * 1024)
        try:
            hdr = self._u.unpack()
        except msgpack.OutOfData:
            raise TraceError("empty file or truncated header: not a gqemu trace")
        except Exception as e:
            raise TraceError("not a gqemu trace (%s)" % _why(e))
        if type(hdr) is not list or len(hdr) != 3 or hdr[0] != MAGIC:
            raise TraceError("not a gqemu trace (bad header)")
        if type(hdr[1]) is not int or hdr[1] != VERSION:
            raise TraceError("unsupported trace version %s (this gqemu reads version %d)"
                             % (_show(hdr[1]), VERSION), -1)
        self.meta = check_meta(hdr[2])

    def position(self) -> int:
        return self._u.tell()

    def __iter__(self) -> Iterator[list]:
        u = self._u
        tell = u.tell
        i = 0
        end = tell()            # where the last complete record ended
        check = check_record
        try:
            for r in u:
                end = tell()
                # hot path: single-byte/word register accesses
                if (type(r) is list and len(r) == 6 and r[0] == 1 and type(r[0]) is int
                        and type(r[1]) is int and 0 <= r[1] < MAX_CPUS
                        and (r[2] == 0 or r[2] == 1) and type(r[2]) is int
                        and (r[3] == 1 or r[3] == 2 or r[3] == 4) and type(r[3]) is int
                        and type(r[4]) is int and 0 <= r[4] <= 0xFFFF
                        and type(r[5]) is int and 0 <= r[5] < (1 << (r[3] << 3))):
                    i += 1
                    yield r
                    continue
                check(r, i)
                if r[0] == REC_END:
                    self.count = i
                    self.ended = True
                    self._check_trailing(i)
                    return
                i += 1
                yield r
        except TraceError:
            self.count = i
            raise
        except Exception as e:
            self.count = i
            raise TraceError("malformed record (%s)" % _why(e), i) from None
        self.count = i
        # Unpacker.tell() after a partial object says how much of its prefix
        # was consumed, not where it began: compare the last record's end.
        if self.size is not None and end != self.size:
            raise TraceTruncated("truncated record at byte %d (after %d complete records)"
                                 % (end, i), i)
        raise TraceTruncated("trace ends without an end record after %d records "
                             "(the recording was cut short)" % i, i)

    def _check_trailing(self, i: int) -> None:
        try:
            self._u.unpack()
        except msgpack.OutOfData:
            pos = self._u.tell()
            if self.size is not None and pos != self.size:
                raise TraceError("trailing bytes after the end record", i + 1)
            return
        except Exception:
            pass
        raise TraceError("trailing data after the end record", i + 1)


_MSGPACK_TYPES = {type(None): "nil", bool: "boolean", float: "float", str: "string",
                  bytes: "binary", list: "array", dict: "map"}


def _show(v: Any) -> str:
    """A field value for a message: an integer as itself, anything else by
    its msgpack type (never Python's ``None`` or a long repr)."""
    if type(v) is int:
        return str(v)
    return "(a %s)" % _MSGPACK_TYPES.get(type(v), "non-integer")


def _why(e: Exception) -> str:
    """Why msgpack refused the bytes, in words (never a Python class name)."""
    s = str(e)
    if isinstance(e, UnicodeDecodeError):
        return "a string is not valid UTF-8"
    if "not allowed for map key" in s:
        return "a map key is not a string"
    if "extension type" in s or "timestamp" in s:
        return "msgpack extension types are not allowed"
    if "exceeds max_" in s or isinstance(e, msgpack.BufferFull):
        return "an array, map or string longer than the %d MiB limit" % (MAX_BUFFER >> 20)
    if isinstance(e, msgpack.StackError):
        return "nested too deeply"
    return "not msgpack data"


def open_trace(path: str) -> tuple[IO[bytes], TraceReader]:
    """Open ``path`` and read its header.  Raises OSError or TraceError."""
    f = open(path, "rb")
    try:
        return f, TraceReader(f)
    except BaseException:
        f.close()
        raise


def port_accesses(rec: list) -> list[tuple[int, int, int, int]]:
    """The single port accesses of an io or io-string record, in order, as
    (direction, size, port, value): a ``rep ins/outs`` is one access per
    element, as QEMU's trace shows them.  [] for any other record."""
    if rec[0] == REC_IO:
        return [(rec[2], rec[3], rec[4], rec[5])]
    if rec[0] == REC_IOS:
        _k, _c, d, size, port, count, data = rec
        return [(d, size, port, int.from_bytes(data[i:i + size], "little"))
                for i in range(0, size * count, size)]
    return []
