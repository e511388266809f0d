"""Import a QEMU log-backend trace of ``ide_*`` / ``bmdma_*`` events.

Each traced guest access becomes one REC_IO record, in order (the rules of
``refdata/README.md``, "Mapping events to accesses"):

- ``ide_ioport_read/write``: size 1 at the traced port (0x1f0..0x1f7,
  0x170..0x177);
- ``ide_status_read`` (alternate status) and ``ide_ctrl_write`` (older
  QEMU: ``ide_cmd_write``): size 1 at the control port (0x3f6 / 0x376);
- ``ide_data_readw/writew``: size 2, ``ide_data_readl/writel``: size 4, at
  the data port;
- a byte read of the data port is one access but two lines: an
  ``ide_data_readw`` (present only when DRQ was set) and then an
  ``ide_ioport_read ... (Data)``; the two become one size-1 read;
- ``bmdma_read/write``: size 1 in the bus-master window.  The log names
  only the offset inside a channel's 4-byte window, so the channel is the
  one whose IDE registers the guest touched last (0 before any);
  ``bmdma_addr_read/write`` (PRD address) become size-4 accesses at
  offset 4 of that channel.  The window is placed at gqemu's BAR4 (0xc000)
  whatever BAR the guest programmed;
- guest RAM is not in the log, so when a DMA starts the importer writes a
  PRD table covering exactly the command's sectors (REC_MEMW) where the
  guest's table was (moved low when beyond gqemu's RAM);
- unless the guest's memory is given (``guest_ram``, the command line's
  ``--ram FILE@ADDR``: e.g. a boot program whose PRD tables and write
  buffers are part of its image): then those images are stored first
  (REC_MEMW) and the guest's own PRD tables are used as they are, so a
  table longer or shorter than the transfer, a size-0 (64 KiB) or odd
  entry, a table moved while the engine runs, all replay as recorded.

Accesses that QEMU does not trace (refdata/README.md, "Untraced port I/O")
have no line, so they are absent from the import; none of them changes
device state.  Events that are not accesses (``ide_exec_cmd``,
``ide_sector_read``, ``ide_reset``, ``ide_dma_cb``, ``pci_cfg_*`` ...) are
checked for form and skipped.  An unknown or garbled line raises
``LogError`` with its line number.  Must not import kvm, hw or block.
"""
from __future__ import annotations

import lzma
import re
from typing import IO, Any, Iterable, Iterator, Optional, Sequence, Union

from gqemu.replay.format import KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, MAX_MEM, REC_IO, REC_MEMW

BMDMA_BASE = 0xC000
RAM_SIZE = 16 << 20             # gqemu's default guest RAM
PRD_TABLE_MAX = 4096            # QEMU walks at most one page of PRDs
PRD_RELOC = 0x3000              # where an out-of-RAM PRD table is moved
DMA_SCRATCH = 0x200000          # where synthetic PRDs point (64 KiB a channel)
_DMA_LBA28 = (0xC8, 0xCA)       # READ DMA, WRITE DMA
_DMA_LBA48 = (0x25, 0x35)       # READ DMA EXT, WRITE DMA EXT

# "pid@sec.usec:" (-msg timestamp=on) is optional
_PREFIX = re.compile(r"(?:(\d+)@(\d+\.\d+):)?([a-z_][a-z0-9_]*)(?: (.*))?\Z")
_P = r"(?:0x[0-9a-f]+|\(nil\))"          # glibc %p
_X = r"0x([0-9a-f]+)"

_REG_READ = ("Data", "Error", "Sector Count", "Sector Number", "Cylinder Low",
             "Cylinder High", "Device/Head", "Status")
_REG_WRITE = ("Data", "Features", "Sector Count", "Sector Number", "Cylinder Low",
              "Cylinder High", "Device/Head", "Command")

_ACCESS = {
    "ide_ioport_read": re.compile(
        r"IDE PIO rd @ %s \(([A-Za-z /]+)\); val %s; bus (%s) IDEState %s\Z" % (_X, _X, _P, _P)),
    "ide_ioport_write": re.compile(
        r"IDE PIO wr @ %s \(([A-Za-z /]+)\); val %s; bus (%s) IDEState %s\Z" % (_X, _X, _P, _P)),
    "ide_status_read": re.compile(
        r"IDE PIO rd @ %s \(Alt Status\); val %s; bus (%s); IDEState %s\Z" % (_X, _X, _P, _P)),
    "ide_ctrl_write": re.compile(
        r"IDE PIO wr @ %s \(Device Control\); val %s; bus (%s)\Z" % (_X, _X, _P)),
    "ide_data_readw": re.compile(
        r"IDE PIO rd @ %s \(Data: Word\); val %s; bus (%s); IDEState %s\Z" % (_X, _X, _P, _P)),
    "ide_data_writew": re.compile(
        r"IDE PIO wr @ %s \(Data: Word\); val %s; bus (%s); IDEState %s\Z" % (_X, _X, _P, _P)),
    "ide_data_readl": re.compile(
        r"IDE PIO rd @ %s \(Data: Long\); val %s; bus (%s); IDEState %s\Z" % (_X, _X, _P, _P)),
    "ide_data_writel": re.compile(
        r"IDE PIO wr @ %s \(Data: Long\); val %s; bus (%s); IDEState %s\Z" % (_X, _X, _P, _P)),
    "bmdma_read": re.compile(r"bmdma: readb %s : %s\Z" % (_X, _X)),
    "bmdma_write": re.compile(r"bmdma: writeb %s : %s\Z" % (_X, _X)),
    "bmdma_addr_read": re.compile(r"data: %s\Z" % _X),
    "bmdma_addr_write": re.compile(r"data: %s\Z" % _X),
}
_ACCESS["ide_cmd_write"] = _ACCESS["ide_ctrl_write"]      # QEMU < 7.0 name

_D = r"-?\d+"
_OTHER = {
    "ide_exec_cmd": re.compile(r"IDE exec cmd: bus %s; state %s; cmd %s\Z" % (_P, _P, _X)),
    "ide_sector_read": re.compile(r"sector=%s nsectors=%s\Z" % (_D, _D)),
    "ide_sector_write": re.compile(r"sector=%s nsectors=%s\Z" % (_D, _D)),
    "ide_reset": re.compile(r"IDEstate %s\Z" % _P),
    "ide_bus_reset_aio": re.compile(r"aio_cancel\Z"),
    "ide_cancel_dma_sync_buffered": re.compile(
        r"invoking cb %s of buffered request %s with -ECANCELED\Z" % (_P, _P)),
    "ide_cancel_dma_sync_remaining": re.compile(r"draining all remaining requests\Z"),
    "ide_dma_cb": re.compile(r"IDEState %s; sector_num=%s n=%s cmd=DMA [A-Z]+\Z" % (_P, _D, _D)),
    "ide_transfer_stop": re.compile(r".*\Z"),
    "bmdma_reset": re.compile(r"\Z"),
    "bmdma_cmd_writeb": re.compile(r"val: %s\Z" % _X),
    "pci_cfg_read": re.compile(r"(\S+) ([0-9a-f]{2}):([0-9a-f]{2})\.(\d) @%s -> %s\Z" % (_X, _X)),
    "pci_cfg_write": re.compile(r"(\S+) ([0-9a-f]{2}):([0-9a-f]{2})\.(\d) @%s <- %s\Z" % (_X, _X)),
}
# ATAPI events (CD-ROM guests): their arguments vary; accepted by name.
_ATAPI_PREFIXES = ("ide_atapi_", "cd_read_sector")

_IDE_PORTS = ((0x1F0, 0), (0x170, 1))
_CTRL_PORTS = {0x3F6: 0, 0x376: 1}


class LogError(Exception):
    """An unknown or garbled log line: ``lineno`` is 1-based."""

    def __init__(self, lineno: int, msg: str) -> None:
        self.lineno = lineno
        super().__init__("line %d: %s" % (lineno, msg))


def open_log(path: str) -> IO[bytes]:
    """Open a plain or xz-compressed log (bytes; lines are decoded one by
    one so a bad byte is reported with its line number)."""
    if path.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


class QemuLogImporter:
    """Turn QEMU log lines into gqemu REC_IO records.

    After iteration: ``stats`` (events seen per name), ``bmdma_bar`` (the
    BAR4 value the guest programmed, if logged), ``threads`` (cpu index per
    thread id).
    """

    def __init__(self, bmdma_base: int = BMDMA_BASE, ram_size: int = RAM_SIZE,
                 guest_ram: Sequence[tuple[int, bytes]] = ()) -> None:
        self.bmdma_base = bmdma_base
        self.ram_size = ram_size
        for addr, data in guest_ram:
            if addr < 0 or addr + len(data) > ram_size:
                raise ValueError("guest RAM image at 0x%x (%d bytes) is outside the %d "
                                 "bytes of RAM" % (addr, len(data), ram_size))
        self.guest_ram = list(guest_ram)
        self.synthesize_prd = not self.guest_ram
        # per channel: task-file count bytes, last command, BMDMA state
        self._nsect = [[0, 0], [0, 0]]          # [hob, low]
        self._cmd = [0, 0]
        self._bm_cmd = [0, 0]
        self._prd_addr = [0, 0]                 # as the guest wrote it
        self._prd_reloc: list[Optional[int]] = [None, None]
        self.prd_synthesized = 0
        self.stats: dict[str, int] = {}
        self.bmdma_bar: int | None = None
        self.threads: dict[str, int] = {}
        self._bus_channel: dict[str, int] = {}
        self._last_channel = 0
        self._pending: dict[Optional[str], tuple] = {}   # tid -> (lineno, rec, bus)
        self._access = _ACCESS          # the access events this importer converts
        self.lines = 0

    def _cpu(self, tid: str | None) -> int:
        if tid is None:
            return 0
        cpu = self.threads.get(tid)
        if cpu is None:
            cpu = self.threads[tid] = len(self.threads)
        return cpu

    def _channel(self, bus: str, port: int, lineno: int) -> int:
        if port in _CTRL_PORTS:
            ch = _CTRL_PORTS[port]
        else:
            base = port & ~7
            ch = 0 if base == 0x1F0 else 1 if base == 0x170 else -1
            if ch < 0:
                raise LogError(lineno, "port 0x%x is not an IDE port" % port)
        known = self._bus_channel.setdefault(bus, ch)
        if known != ch:
            raise LogError(lineno, "bus %s used on both IDE channels" % bus)
        self._last_channel = ch
        return ch

    def records(self, lines: Iterable[Union[str, bytes]]) -> Iterator[list]:
        """Yield REC_IO records for ``lines`` (text or bytes).  Raises LogError."""
        for addr, data in self.guest_ram:
            for off in range(0, len(data), MAX_MEM):
                yield [REC_MEMW, 0, addr + off, bytes(data[off:off + MAX_MEM])]
        self.guest_ram = []
        families = {"ide_ioport_read": self._task_file, "ide_ioport_write": self._task_file,
                    "ide_status_read": self._control, "ide_ctrl_write": self._control,
                    "ide_cmd_write": self._control}
        for lineno, raw in enumerate(lines, 1):
            self.lines = lineno
            parsed = self._parse(lineno, raw)
            if parsed is None:
                continue
            tid, name, args, line = parsed
            rx = self._access.get(name)
            if rx is None:
                yield from self._event(lineno, name, args, line)
                continue
            am = rx.match(args)
            if am is None:
                raise LogError(lineno, "garbled %s line: %s" % (name, _clip(line)))
            cpu = self._cpu(tid)
            if name.startswith("bmdma_"):
                yield from self._flush_pending(tid)
                yield from self._bmdma(name, am, cpu, lineno)
                continue
            port = int(am.group(1), 16)
            if port > 0xFFFF:
                raise LogError(lineno, "port 0x%x out of range" % port)
            yield from families.get(name, self._data)(lineno, tid, cpu, name, am, port)
        yield from self._flush_pending(None, every=True)

    def _parse(self, lineno: int, raw: Union[str, bytes]) -> Optional[tuple[str, str, str, str]]:
        """One log line: (thread id, event, arguments, line), or None for a
        blank line."""
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise LogError(lineno, "not UTF-8 text") from None
        line = raw.rstrip("\n")
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            return None
        m = _PREFIX.match(line)
        if m is None:
            raise LogError(lineno, "not a QEMU trace line: %s" % _clip(line))
        tid, name, args = m.group(1), m.group(3), m.group(4) or ""
        if name == "bmdma_reset":
            args = args.strip()
        self.stats[name] = self.stats.get(name, 0) + 1
        return tid, name, args, line

    def _event(self, lineno: int, name: str, args: str, line: str) -> Iterator[list]:
        """A line that is no IDE/BMDMA access event (qemu_log_io's importer
        turns some into records)."""
        self._other(lineno, name, args, line)
        return iter(())

    def _other(self, lineno: int, name: str, args: str, line: str) -> None:
        """An event that is no guest access (ATAPI, PCI config, ...): only
        the PIIX IDE BAR4 it programs matters here."""
        orx = _OTHER.get(name)
        if orx is None:
            if name.startswith(_ATAPI_PREFIXES):
                return
            raise LogError(lineno, "unknown trace event '%s'" % name)
        om = orx.match(args)
        if om is None:
            raise LogError(lineno, "garbled %s line: %s" % (name, _clip(line)))
        if name == "pci_cfg_write" and om.group(1) == "piix3-ide" \
                and int(om.group(5), 16) == 0x20:
            v = int(om.group(6), 16)
            if v != 0xFFFFFFFF and v & 0xFFFC:
                self.bmdma_bar = v & 0xFFFC

    def _task_file(self, lineno: int, tid: str, cpu: int, name: str, am: Any,
                   port: int) -> Iterator[list]:
        """ide_ioport_read/write: a byte access of 0x1f0..0x1f7."""
        pending = self._pending
        reg, val, bus = am.group(2), int(am.group(3), 16), am.group(4)
        ch = self._channel(bus, port, lineno)
        if port in _CTRL_PORTS:
            raise LogError(lineno, "%s at the control port" % name)
        names = _REG_READ if name == "ide_ioport_read" else _REG_WRITE
        if reg != names[port & 7]:
            raise LogError(lineno, "register '%s' does not match port 0x%x" % (reg, port))
        if val > 0xFF:
            raise LogError(lineno, "value 0x%x too wide for a byte access" % val)
        if name == "ide_ioport_read":
            p = pending.get(tid)
            if p is not None and p[2] == bus and port & 7 == 0:
                # the word read inside a byte read of the data port
                del pending[tid]
            else:
                yield from self._flush_pending(tid)
            yield [REC_IO, cpu, KVM_EXIT_IO_IN, 1, port, val]
            return
        yield from self._flush_pending(tid)
        if port & 7 == 2:
            self._nsect[ch] = [self._nsect[ch][1], val]
        elif port & 7 == 7:
            self._cmd[ch] = val
        yield [REC_IO, cpu, KVM_EXIT_IO_OUT, 1, port, val]

    def _control(self, lineno: int, tid: str, cpu: int, name: str, am: Any,
                 port: int) -> Iterator[list]:
        """ide_status_read / ide_ctrl_write / ide_cmd_write: 0x3f6, 0x376."""
        val, bus = int(am.group(2), 16), am.group(3)
        if port not in _CTRL_PORTS:
            raise LogError(lineno, "%s at port 0x%x, not a control port" % (name, port))
        self._channel(bus, port, lineno)
        if val > 0xFF:
            raise LogError(lineno, "value 0x%x too wide for a byte access" % val)
        yield from self._flush_pending(tid)
        d = KVM_EXIT_IO_IN if name == "ide_status_read" else KVM_EXIT_IO_OUT
        yield [REC_IO, cpu, d, 1, port, val]

    def _data(self, lineno: int, tid: str, cpu: int, name: str, am: Any,
              port: int) -> Iterator[list]:
        """ide_data_readw/writew/readl/writel: the data port."""
        val, bus = int(am.group(2), 16), am.group(3)
        self._channel(bus, port, lineno)
        if port & 7:
            raise LogError(lineno, "%s at port 0x%x, not a data port" % (name, port))
        size = 2 if name.endswith("w") else 4
        if val >> (8 * size):
            raise LogError(lineno, "value 0x%x too wide for %d bytes" % (val, size))
        yield from self._flush_pending(tid)
        if name == "ide_data_readw":
            # may be the first half of a byte read of the data port
            self._pending[tid] = (lineno, [REC_IO, cpu, KVM_EXIT_IO_IN, 2, port, val], bus)
            return
        d = KVM_EXIT_IO_IN if name.startswith("ide_data_read") else KVM_EXIT_IO_OUT
        yield [REC_IO, cpu, d, size, port, val]

    def _flush_pending(self, tid: str | None, every: bool = False) -> Iterator[list]:
        if not self._pending:
            return
        if every:
            for key in list(self._pending):
                yield self._pending.pop(key)[1]
        elif tid in self._pending:
            yield self._pending.pop(tid)[1]

    def _bmdma(self, name: str, m: re.Match, cpu: int, lineno: int) -> Iterator[list]:
        ch = self._last_channel
        base = self.bmdma_base + 8 * ch
        if name in ("bmdma_read", "bmdma_write"):
            off, val = int(m.group(1), 16), int(m.group(2), 16)
            if off > 3:
                raise LogError(lineno, "bmdma offset 0x%x outside the 4-byte window" % off)
            if val > 0xFF:
                raise LogError(lineno, "value 0x%x too wide for a byte access" % val)
            if name == "bmdma_write" and off == 0:
                if val & 1 and not self._bm_cmd[ch] & 1 and self.synthesize_prd:
                    prd = self._synthetic_prd(ch, cpu)
                    if prd is not None:
                        yield prd
                self._bm_cmd[ch] = val & 0x09
            d = KVM_EXIT_IO_IN if name == "bmdma_read" else KVM_EXIT_IO_OUT
            yield [REC_IO, cpu, d, 1, base + off, val]
            return
        val = int(m.group(1), 16)
        if val > 0xFFFFFFFF:
            raise LogError(lineno, "PRD address 0x%x too wide" % val)
        if name == "bmdma_addr_write":
            self._prd_addr[ch] = val & ~3
            if self.synthesize_prd and (val & ~3) + PRD_TABLE_MAX > self.ram_size:
                # beyond gqemu's guest RAM: move the table (and what the
                # register reads back) to a fixed low address
                reloc = PRD_RELOC + 0x1000 * ch
                self._prd_reloc[ch] = reloc
                val = reloc | (val & 3)
            else:
                self._prd_reloc[ch] = None
            yield [REC_IO, cpu, KVM_EXIT_IO_OUT, 4, base + 4, val]
        else:
            moved = self._prd_reloc[ch]
            if moved is not None and val & ~3 == self._prd_addr[ch]:
                val = moved | (val & 3)
            yield [REC_IO, cpu, KVM_EXIT_IO_IN, 4, base + 4, val]

    def _synthetic_prd(self, ch: int, cpu: int) -> Optional[list]:
        """QEMU's log has no guest RAM: when a channel's DMA starts, write a
        PRD table like the guest's (one entry per 64 KiB, EOT on the last)
        covering exactly the command's sectors, so the transfer ends as it
        did (a table longer or shorter than the transfer changes the BMDMA
        status).  The data goes to a scratch buffer: DMA data is not in the
        log either."""
        cmd = self._cmd[ch]
        hob, low = self._nsect[ch]
        if cmd in _DMA_LBA28:
            nsect = low or 256
        elif cmd in _DMA_LBA48:
            nsect = (hob << 8 | low) or 65536
        else:
            return None
        nbytes = nsect * 512
        entries = []
        while nbytes:
            n = min(nbytes, 0x10000)
            nbytes -= n
            flags = 0x8000 if not nbytes else 0
            entries.append((DMA_SCRATCH + 0x10000 * ch).to_bytes(4, "little")
                           + (n & 0xFFFF).to_bytes(2, "little") + flags.to_bytes(2, "little"))
        addr = self._prd_reloc[ch]
        if addr is None:
            addr = self._prd_addr[ch]
        self.prd_synthesized += 1
        return [REC_MEMW, cpu, addr, b"".join(entries)]


def _clip(s: str) -> str:
    s = s.encode("unicode_escape").decode("ascii")     # no raw control bytes
    return s if len(s) <= 100 else s[:97] + "..."
