"""The ``pc`` machine: drives from ``-drive`` specs, hardware, vCPUs.

``parse_drive_spec`` reads QEMU's ``-drive`` syntax (``key=value`` items,
``,,`` escapes a comma); ``make_scratch_disk`` writes the self-describing
raw disk of ``refdata/mkdisk.py``; ``Machine`` opens the drives, builds the
hardware with the hw layer's ``pc`` wiring helper, and creates one vCPU per
guest program.

Must not import: gqemu.cli.
QEMU: hw/i386/pc_piix.c (pc_init1), blockdev.c (drive_new).
"""
from __future__ import annotations

import os
import struct
from typing import Any, Callable, Optional, Sequence

SECTOR = 512
NR_DRIVES = 4               # primary/secondary x master/slave
NR_VIRTIO = 8               # if=virtio drives: PCI slots 2..9
RAM_SIZE = 16 << 20          # guest RAM: room for PRD tables and DMA buffers
BMDMA_BASE = 0xC000          # PIIX BAR4, where SeaBIOS put it in refdata
BOOT_ADDR = 0x7C00           # where a BIOS loads the boot sector
BOOT_MAX = 0xA0000 - BOOT_ADDR   # a --boot file may fill conventional memory

# keys the machine consumes; everything else goes to blk_new_open's options
# (``if`` too: it makes the drive a guest device's, which takes QEMU's locks)
_MACHINE_KEYS = ("file", "index", "bus", "unit", "media", "id")
_CACHE_MODES = ("writeback", "writethrough", "none", "directsync", "unsafe")


class MachineError(Exception):
    """Bad machine or drive configuration: a one-line message."""


def parse_drive_spec(spec: str) -> dict[str, str]:
    """Split a ``-drive`` argument into its items.

    ``file=a,,b.img,format=raw`` gives ``{"file": "a,b.img", "format": "raw"}``.
    An argument with no ``=`` at all is taken as a file name.  Raises
    MachineError for an empty item, a missing value or a repeated key.
    """
    if "=" not in spec:
        if not spec:
            raise MachineError("empty -drive argument")
        return {"file": spec.replace(",,", ",")}
    from gqemu.block.drive_opts import qemu_opts_split
    items = qemu_opts_split(spec)
    out: dict[str, str] = {}
    for item in items:
        if not item:
            raise MachineError("-drive %s: empty option" % spec)
        key, eq, value = item.partition("=")
        if not eq:
            # QemuOpts: a bare 'key' means key=on
            value = "on"
        if not key:
            raise MachineError("-drive %s: option without a name" % spec)
        if key in out:
            raise MachineError("-drive %s: option '%s' given twice" % (spec, key))
        out[key] = value
    return out


def drive_config(specs: Sequence[str]) -> list[dict]:
    """Turn ``--drive`` arguments into ``{"index", "file", "options"}`` dicts,
    checking the machine-level keys (QEMU's drive_new).  Raises MachineError."""
    drives: list[dict] = []
    used: set[int] = set()
    vused: set[int] = set()
    for spec in specs:
        opts = parse_drive_spec(spec)
        if "file" not in opts or not opts["file"]:
            raise MachineError("-drive %s: a file= is required" % spec)
        iface = opts.get("if", "ide")
        if iface not in ("ide", "virtio"):
            raise MachineError("-drive %s: if=%s is not supported by machine pc here "
                               "(use if=ide or if=virtio)" % (spec, iface))
        media = opts.get("media", "disk")
        if media != "disk":
            raise MachineError("-drive %s: media=%s is not supported (disk only)"
                               % (spec, media))
        cache = opts.get("cache")
        if cache is not None and cache not in _CACHE_MODES:
            raise MachineError("-drive %s: invalid cache option '%s'" % (spec, cache))
        options = {k: v for k, v in opts.items() if k not in _MACHINE_KEYS}
        if iface == "virtio":
            drives.append(_virtio_drive(spec, opts, options, vused))
            continue
        index = _drive_index(spec, opts, used)
        used.add(index)
        options["if"] = iface
        drives.append({"index": index, "file": opts["file"], "options": options,
                       "spec": spec, "name": opts.get("id") or _drive_name(index)})
    drives.sort(key=lambda d: (d.get("if", "ide") == "virtio", d["index"]))
    return drives


def _drive_name(index: int, iface: str = "ide") -> str:
    """QEMU's name for a drive without ``id=``: ``ide0-hd0`` (bus 0, unit 0)
    .. ``ide1-hd1``, ``virtio0`` ...  QEMU: blockdev.c drive_new."""
    if iface == "virtio":
        return "virtio%d" % index
    return "ide%d-hd%d" % (index // 2, index % 2)


def _virtio_drive(spec: str, opts: dict, options: dict, vused: set[int]) -> dict:
    """An ``if=virtio`` drive: ``index`` counts virtio drives (each becomes
    a legacy virtio-blk-pci function, 00:02.0 onwards)."""
    if "bus" in opts or "unit" in opts:
        raise MachineError("-drive %s: bus/unit are for if=ide" % spec)
    index = _int_opt(spec, opts, "index", NR_VIRTIO)
    if index is None:
        index = next((i for i in range(NR_VIRTIO) if i not in vused), None)
        if index is None:
            raise MachineError("-drive %s: no free virtio slot (%d at most)" % (spec, NR_VIRTIO))
    if index in vused:
        raise MachineError("-drive %s: virtio drive index=%d exists" % (spec, index))
    vused.add(index)
    options["if"] = "virtio"
    return {"index": index, "file": opts["file"], "options": options, "if": "virtio",
            "spec": spec, "name": opts.get("id") or _drive_name(index, "virtio")}


def _int_opt(spec: str, opts: dict, key: str, hi: int) -> Optional[int]:
    v = opts.get(key)
    if v is None:
        return None
    try:
        n = int(v, 0)
    except ValueError:
        raise MachineError("-drive %s: %s=%s is not a number" % (spec, key, v))
    if not 0 <= n < hi:
        raise MachineError("-drive %s: %s=%d out of range (0..%d)" % (spec, key, n, hi - 1))
    return n


def _drive_index(spec: str, opts: dict, used: set[int]) -> int:
    index = _int_opt(spec, opts, "index", NR_DRIVES)
    bus = _int_opt(spec, opts, "bus", 2)
    unit = _int_opt(spec, opts, "unit", 2)
    if index is not None and (bus is not None or unit is not None):
        raise MachineError("-drive %s: index cannot be used with bus and unit" % spec)
    if index is None and (bus is not None or unit is not None):
        index = (bus or 0) * 2 + (unit or 0)
    if index is None:
        index = next((i for i in range(NR_DRIVES) if i not in used), None)
        if index is None:
            raise MachineError("-drive %s: no free IDE slot (4 drives at most)" % spec)
    if index in used:
        raise MachineError("-drive %s: drive with bus=%d, unit=%d (index=%d) exists"
                           % (spec, index // 2, index % 2, index))
    return index


# ------------------------------------------------------------- scratch disk

# u32 LBA, 504 bytes of text (struct cuts the 512 given to 504), u32 ~LBA.
_SCRATCH_SECTOR = struct.Struct("<I504sI")


def scratch_sector(lba: int) -> bytes:
    """Sector ``lba`` of the self-describing disk: LBA (u32 LE), the text
    ``<LBA 0x%08x> `` repeated, and ``lba ^ 0xffffffff`` (u32 LE) at the end."""
    return _SCRATCH_SECTOR.pack(lba, b"<LBA 0x%08x> " % lba * 32, lba ^ 0xFFFFFFFF)


def make_scratch_disk(path: str, size_mib: int = 16, mbr: Optional[bytes] = None) -> int:
    """Write the self-describing raw disk (as refdata/mkdisk.py does).

    ``mbr``, if given, becomes sector 0 (512 bytes ending in 55 aa).
    Returns the size in bytes.
    """
    nsect = size_mib * 2048
    if mbr is not None and (len(mbr) != SECTOR or mbr[510:] != b"\x55\xaa"):
        raise MachineError("boot sector must be 512 bytes ending in 55 aa")
    pack = _SCRATCH_SECTOR.pack     # one C call per sector: gqemu run's start-up
    with open(path, "wb") as f:
        for first in range(0, nsect, 2048):
            chunk = [pack(lba, b"<LBA 0x%08x> " % lba * 32, lba ^ 0xFFFFFFFF)
                     for lba in range(first, min(first + 2048, nsect))]
            if first == 0 and mbr is not None and chunk:
                chunk[0] = mbr
            f.write(b"".join(chunk))
    return nsect * SECTOR


SCRATCH_TAG = "mkdisk-16M"     # a trace header's "scratch" value for such a disk


def scratch_drives(tmpdir: str, indexes: Sequence[int],
                   virtio: Sequence[int] = ()) -> list[dict]:
    """A fresh scratch disk in ``tmpdir`` for each IDE index (and each
    if=virtio index in ``virtio``), as ``drive_config()`` dicts marked
    ``"scratch": SCRATCH_TAG``."""
    drives: list[dict] = []
    for iface, idxs in (("ide", indexes), ("virtio", virtio)):
        for idx in idxs:
            name = "scratch%d.img" % idx if iface == "ide" else "scratch-virtio%d.img" % idx
            path = os.path.join(tmpdir, name)
            make_scratch_disk(path)
            d = {"index": idx, "file": path, "options": {"format": "raw", "if": iface},
                 "name": _drive_name(idx, iface), "scratch": SCRATCH_TAG}
            if iface == "virtio":
                d["if"] = "virtio"
            drives.append(d)
    return drives


def file_sha256(path: str) -> str:
    import hashlib     # only a recording needs it: kept off gqemu run's start-up
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


GuestFn = Callable[[Any], Any]


# ---------------------------------------------------------------- machine

class Machine:
    """A ``pc`` machine: guest RAM, the I/O space with the IDE controller
    (and PIIX bus-master DMA when the hw layer provides it), the ISA
    interrupt lines wired to the KVM layer, the drives, and the vCPUs.

    ``drives`` are ``drive_config()`` dicts.  Raises MachineError with a
    one-line message when a drive cannot be opened or attached.
    QEMU: pc_init1 + drive_new + kvm_init_vcpu.
    """

    def __init__(self, drives: Sequence[dict], ram_size: int = RAM_SIZE,
                 ctx: Any = None, accel: str = "sim", debugcon: Any = None) -> None:
        from gqemu.aio import qemu_get_aio_context
        import gqemu.block  # noqa: F401  (registers the drivers)
        from gqemu.block.block_backend import blk_new_open
        from gqemu.block.driver import BlockError
        from gqemu.kvm.cpu import KVMState
        self.ctx = ctx if ctx is not None else qemu_get_aio_context()
        self.ram_size = ram_size
        self.blks: dict[int, Any] = {}
        self.vblks: dict[int, Any] = {}      # if=virtio drives by index
        self.drives = list(drives)
        self.accel: Any = None
        if accel == "kvm":
            from gqemu.kvm.accel import KvmAccel
            from gqemu.kvm.kvm_dev import KvmError
            try:
                self.accel = KvmAccel(self.ctx, ram_size)
            except KvmError as e:
                raise MachineError("--accel kvm: %s" % e)
        elif accel != "sim":
            raise MachineError("invalid accelerator %s (sim or kvm)" % accel)
        try:
            for d in self.drives:
                target = self.vblks if d.get("if") == "virtio" else self.blks
                target[d["index"]] = _open_drive(d, blk_new_open, BlockError)
            self._build_hw()
        except BaseException:
            self.close()
            raise
        self.kvm = KVMState(self.ctx, self.as_io, self.as_mem)
        from gqemu.hw.irq import isa_pic_set_notify
        isa_pic_set_notify(self.pic, _pic_notify, self.kvm)
        self.memories: list[Any] = []
        if self.accel is not None:
            from gqemu.hw.isa_debug import isa_debug_exit_init, isa_debugcon_init
            self.kvm.accel = self.accel
            isa_debugcon_init(self.as_io.root, debugcon)
            isa_debug_exit_init(self.as_io.root, self._debug_exit)
        self.io_errors: list[dict] = []     # BLOCK_IO_ERROR events that stopped the VM
        from gqemu.block.blk_error import blk_add_stop_handler
        from gqemu.kvm.runstate import qemu_add_vm_change_state_handler
        for idx, blk in self.blks.items():
            blk_add_stop_handler(blk, self._blk_stopped, idx)
        qemu_add_vm_change_state_handler(self.kvm, self._vm_state_change, None)

    def _build_hw(self) -> None:
        from gqemu.hw.ide.piix import pc_ide_init
        from gqemu.hw.irq import isa_pic_new
        from gqemu.hw.memory import (memory_region_add_subregion,
                                     memory_region_init_ram,
                                     new_address_space_io,
                                     new_address_space_memory)
        self.as_io = new_address_space_io()
        self.as_mem = new_address_space_memory()
        if self.accel is not None:
            from gqemu.hw.memory_region import memory_region_init_ram_ptr
            ram = memory_region_init_ram_ptr(None, "pc.ram", self.ram_size, self.accel.ram)
        else:
            ram = memory_region_init_ram(None, "pc.ram", self.ram_size)
        memory_region_add_subregion(self.as_mem.root, 0, ram)
        assert ram.ram is not None
        self.ram: Any = ram.ram
        self.pic = isa_pic_new()
        blks = [self.blks.get(i) for i in range(NR_DRIVES)]
        try:
            self.ide = pc_ide_init(self.as_io, self.pic.irqs, blks,
                                   address_space_memory=self.as_mem, ctx=self.ctx,
                                   bmdma_base=None)
        except ValueError as e:
            raise MachineError(str(e).splitlines()[0] if str(e) else "cannot attach the drives")
        self._build_pci()

    def _build_pci(self) -> None:
        """PCI bus 0 (i440FX, PIIX3, the IDE function with BAR4, PIIX4_PM,
        one legacy virtio-blk-pci per if=virtio drive from 00:02.0), with
        the registers SeaBIOS leaves: BAR4 at 0xC000 when there is no
        virtio drive.  Scripted guests (--accel sim) predate PCI, so there
        the IDE function also has bus mastering on; under kvm it is off,
        as SeaBIOS leaves it (0x0103).  QEMU: i440fx_init, pci_create_simple."""
        from gqemu.hw.ide.piix import piix3_ide_pci_new
        from gqemu.hw.pci import (PCI_COMMAND, PCI_COMMAND_MASTER, pc_pci_chipset,
                                  pci_bios_setup, pci_bus_new)
        from gqemu.hw.virtio.virtio_pci import virtio_blk_pci_new
        self.pci = pci_bus_new(self.as_io, self.as_mem, self.pic.irqs)
        pc_pci_chipset(self.pci)
        self.ide_pci = piix3_ide_pci_new(self.pci, self.ide[2])
        self.virtio = [virtio_blk_pci_new(self.pci, (2 + n) << 3, self.vblks[i], self.ctx)
                       for n, i in enumerate(sorted(self.vblks))]
        pci_bios_setup(self.pci)
        if self.accel is None:
            self.ide_pci.config_write(PCI_COMMAND, self.ide_pci.command | PCI_COMMAND_MASTER, 2)

    def replay_hints(self) -> dict:
        """What the replayer needs to know to make progress on the right
        drive: the drives behind each port and IRQ line, and the drive files
        (``Replayer(..., **machine.replay_hints())``)."""
        from gqemu.hw.ide.piix import PRIMARY, SECONDARY
        port_drives: dict[int, tuple[int, ...]] = {}
        irq_drives: dict[int, tuple[int, ...]] = {}
        bar4 = self.ide_pci.bars[4]
        bm_base = bar4.addr if bar4 is not None and bar4.addr >= 0 else BMDMA_BASE
        for ch, (iobase, iobase2, irq) in enumerate((PRIMARY, SECONDARY)):
            drives = (2 * ch, 2 * ch + 1)
            for port in list(range(iobase, iobase + 8)) + [iobase2]:
                port_drives[port] = drives
            for off in range(8):
                port_drives[bm_base + 8 * ch + off] = drives
            irq_drives[irq] = drives
        return {"port_drives": port_drives, "irq_drives": irq_drives,
                "drive_files": {d["index"]: d["file"] for d in self.drives}}

    def add_cpu(self, guest_fn: GuestFn) -> Any:
        """A vCPU running ``guest_fn(cpu)``."""
        from gqemu.kvm.cpu import CPUState
        from gqemu.kvm.guest import GuestMemory, X86CPU
        index = len(self.kvm.cpus)
        mem = GuestMemory(self.ram, index)
        self.memories.append(mem)
        return CPUState(self.kvm, index, guest_fn, X86CPU(index, mem))

    def _debug_exit(self, status: int) -> None:
        """isa-debug-exit: the run ends with ``status`` after this exit."""
        self.kvm.exit_status = status
        self.kvm.exit_request = True

    def stop(self) -> None:
        """End the run at the vCPUs' next exit; under ``accel=kvm`` kick
        them out of KVM_RUN now (a guest spinning without exits included)."""
        self.kvm.exit_request = True
        if self.accel is not None:
            from gqemu.kvm.accel import qemu_cpu_kick
            for r in self.accel.runs:
                qemu_cpu_kick(r)

    def add_boot_cpu(self, code: bytes) -> Any:
        """Under ``accel=kvm``: vCPU 0 starts ``code`` (a boot sector) at
        0000:7C00 in real mode with the registers SeaBIOS leaves (DL = 0x80,
        AX = 0xAA55, IF set, segments 0, SP = 0x7C00).  QEMU+SeaBIOS:
        boot.c call_boot_entry."""
        from gqemu.kvm.cpu import CPUState
        if self.accel is None:
            raise MachineError("a boot sector needs --accel kvm")
        if not code or len(code) > BOOT_MAX:
            raise MachineError("boot code must be 1..%d bytes (got %d)" % (BOOT_MAX, len(code)))
        bios = self.bios = self._install_bios()
        self.ram[BOOT_ADDR:BOOT_ADDR + len(code)] = code
        cpu = CPUState(self.kvm, len(self.kvm.cpus), None, None)
        bios.cpu = cpu
        cpu.accel_run = self.accel.create_vcpu()
        cpu.accel_run.vcpu.set_real_mode(0, BOOT_ADDR, {
            "rax": 0xAA55, "rdx": 0x80, "rsp": BOOT_ADDR, "rflags": 0x202})
        return cpu

    def _install_bios(self) -> Any:
        """The IVT, BIOS data area and INT 13h of gqemu.kvm.bios, over the
        IDE disks in index order."""
        from gqemu.hw.ide.piix import PRIMARY, SECONDARY
        from gqemu.kvm.bios import bios_install
        disks = []
        for idx in sorted(self.blks):
            base, ctl, _irq = (PRIMARY, SECONDARY)[idx // 2]
            st = self.ide[idx // 2].ifs[idx % 2]
            disks.append({"base": base, "ctl": ctl, "unit": idx % 2,
                          "sectors": st.nb_sectors, "heads": st.heads or 16,
                          "spt": st.sectors or 63, "cyls": st.cylinders or 1})
        return bios_install(self.ram, self.as_io.root, disks)

    def firmware_probe(self, boot_disk: bool, cpu: Any = None) -> None:
        """Put the IDE controller in the state SeaBIOS leaves it in before a
        boot sector runs (gqemu.kvm.firmware): as exits of ``cpu`` (traced
        and recorded, as SeaBIOS's accesses are in QEMU's trace), or with no
        exit at all when ``cpu`` is None."""
        from gqemu.aio import aio_poll
        from gqemu.hw.ide.piix import PRIMARY, SECONDARY
        from gqemu.kvm.bios import ExitIO
        from gqemu.kvm.firmware import DirectIO, FirmwareError, seabios_ata_probe
        boot = None
        if boot_disk and self.blks:
            first = min(self.blks)
            boot = (first // 2, first % 2)
        try:
            io = ExitIO(cpu) if cpu is not None else \
                DirectIO(self.as_io, lambda: aio_poll(self.ctx, True))
            seabios_ata_probe(io, ((PRIMARY[0], PRIMARY[1]), (SECONDARY[0], SECONDARY[1])), boot)
        except FirmwareError as e:
            raise MachineError(str(e))

    def boot_sector(self) -> bytes:
        """Sector 0 of the first IDE disk, as SeaBIOS loads it; MachineError
        when there is no disk or it lacks the 55 AA signature."""
        from gqemu.block.block_backend import blk_pread
        from gqemu.block.driver import BlockError
        if not self.blks:
            raise MachineError("no IDE disk to boot from")
        blk = self.blks[min(self.blks)]
        try:
            data = blk_pread(blk, 0, SECTOR)
        except BlockError as e:
            raise MachineError("cannot read the boot sector: %s" % e)
        if data[510:512] != b"\x55\xaa":
            raise MachineError("Boot failed: not a bootable disk")
        return data

    def run(self) -> str:
        """Run the VM until every vCPU has ended or the VM stops; return the
        run state: ``"shutdown"``, or ``"io-error"`` when a ``stop`` error
        policy paused it (see :meth:`cont`).  Requests the guests left in
        flight are drained when they end, and may stop the VM too.
        Raises GuestDeadlock when every vCPU sleeps in HLT with nothing
        pending."""
        from gqemu.kvm.main_loop import kvm_main_loop
        from gqemu.kvm.runstate import RUN_STATE_SHUTDOWN, vm_stop
        state = kvm_main_loop(self.kvm)
        if state == RUN_STATE_SHUTDOWN:
            self.drain()
            if self.kvm.vmstop_request is not None:
                vm_stop(self.kvm, self.kvm.vmstop_request)
                state = self.kvm.runstate
        return state

    @property
    def runstate(self) -> str:
        """QEMU's run state: ``running``, ``io-error`` (paused by an I/O
        error), ... (``query-status``)."""
        return self.kvm.runstate

    def cont(self) -> bool:
        """Resume a stopped VM, as QMP ``cont``: reset the drives' I/O
        status, let the devices retry the requests the error parked (before
        any vCPU runs again), wake the vCPUs.  Call :meth:`run` next.
        Returns False when the VM was not stopped.  QEMU: qmp_cont."""
        from gqemu.kvm.runstate import vm_start
        return vm_start(self.kvm)

    def _blk_stopped(self, index: int, blk: Any) -> None:
        """A drive's error policy said ``stop``: pause the VM (QEMU:
        blk_error_action -> qemu_system_vmstop_request(RUN_STATE_IO_ERROR))."""
        from gqemu.kvm.runstate import RUN_STATE_IO_ERROR, qemu_system_vmstop_request
        ev = dict(blk.io_error_events[-1])
        ev["index"] = index
        self.io_errors.append(ev)
        qemu_system_vmstop_request(self.kvm, RUN_STATE_IO_ERROR)

    def _vm_state_change(self, opaque: Any, running: bool, state: str) -> None:
        """On a stop, drain and flush the drives (QEMU: do_vm_stop's
        bdrv_drain_all + bdrv_flush_all); on a start, resume the stopped
        drives, which schedules the devices' restart bottom halves."""
        from gqemu.block.blk_error import blk_is_stopped, blk_resume
        from gqemu.block.block_backend import blk_drain, blk_flush
        if running:
            for blk in self.blks.values():
                if blk_is_stopped(blk):
                    blk_resume(blk)
            return
        from gqemu.block.driver import BlockError
        for blk in self.blks.values():
            blk_drain(blk)
        for blk in self.blks.values():
            try:
                blk_flush(blk)
            except BlockError:
                pass            # do_vm_stop goes on whatever bdrv_flush_all returns

    def drain(self) -> None:
        """Let every pending request complete."""
        from gqemu.aio import aio_poll
        while aio_poll(self.ctx, True):
            pass

    def close(self) -> None:
        """Drain, flush and close the drives (idempotent)."""
        from gqemu.block.block_backend import blk_unref
        kvm = getattr(self, "kvm", None)
        if kvm is not None and kvm.started:
            from gqemu.kvm.main_loop import kvm_stop_vcpus
            kvm_stop_vcpus(kvm)         # vCPUs left parked by a stopped VM
        if getattr(self, "accel", None) is not None:
            self.accel.close()          # kick the vCPU out of KVM_RUN first
            self.accel = None
        if getattr(self, "ctx", None) is not None and (self.blks or getattr(self, "vblks", None)):
            try:
                self.drain()
            except Exception:
                pass
        for blks in (self.blks, getattr(self, "vblks", {})):
            for idx in list(blks):
                blk_unref(blks.pop(idx))


def _open_drive(d: dict, blk_new_open: Any, BlockError: Any) -> Any:
    """Open one drive as QEMU's ``-drive if=ide`` does: the device takes
    "consistent read" and "write" and shares neither "write" nor "resize",
    so the image is locked against other writers.  ``share-rw`` is a
    property of ``-device``, not of ``-drive`` (QEMU's message), and an
    ide-hd cannot be read-only.  Raises MachineError (one line)."""
    from gqemu.block.block_backend import blk_bs, blk_is_read_only, blk_unref
    spec = d.get("spec") or "file=%s" % d["file"]
    opts = dict(d["options"])
    share_rw = opts.pop("share-rw", None)
    try:
        blk = blk_new_open(d["file"], opts)
    except BlockError as e:
        hint = getattr(e, "hint", None)
        if hint:        # a lock conflict: QEMU names no -drive, it fails at realize
            raise MachineError("%s (%s%s)" % (e, hint[:1].lower(), hint[1:]))
        raise MachineError("-drive %s: %s" % (spec, e))
    except OSError as e:
        raise MachineError("-drive %s: %s" % (spec, e.strerror or e))
    bs = blk_bs(blk)
    if share_rw is not None:
        fmt = bs.drv.format_name if bs is not None and bs.drv is not None else "raw"
        blk_unref(blk)
        raise MachineError("-drive %s: Block format '%s' does not support the option "
                           "'share-rw'" % (spec, fmt))
    if blk_is_read_only(blk):
        blk_unref(blk)
        raise MachineError("Block node is read-only")
    blk.name = d.get("name") or _drive_name(d["index"], d.get("if", "ide"))
    return blk


def _pic_notify(s: Any, n: int, level: int) -> None:
    from gqemu.kvm.cpu import kvm_set_irq
    kvm_set_irq(s, n, level)
