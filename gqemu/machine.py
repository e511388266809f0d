"""The ``pc`` machine: hardware, drives, vCPUs and the run state.

``Machine`` opens the drives (``gqemu.blockdev``: QEMU's ``-drive`` syntax,
the scratch disk, device locks), builds the hardware with the hw layer's
``pc`` wiring helpers (IDE, PCI, virtio-blk), creates one vCPU per guest
program -- or, under ``accel=kvm``, one real vCPU that boots a program --
and runs them.  The drive helpers are re-exported here.

Must not import: gqemu.cli.
QEMU: hw/i386/pc_piix.c (pc_init1), blockdev.c (drive_new).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from gqemu.blockdev import (NR_DRIVES, NR_VIRTIO, SCRATCH_TAG, SECTOR, MachineError,
                            drive_config, file_sha256, make_scratch_disk, open_drive,
                            parse_drive_spec, scratch_drives, scratch_sector)

__all__ = ["Machine", "MachineError", "drive_config", "parse_drive_spec", "make_scratch_disk",
           "scratch_drives", "scratch_sector", "file_sha256", "SCRATCH_TAG", "SECTOR",
           "NR_DRIVES", "NR_VIRTIO", "RAM_SIZE", "BMDMA_BASE"]

RAM_SIZE = 16 << 20          # guest RAM: room for PRD tables and DMA buffers
BMDMA_BASE = 0xC000          # PIIX BAR4, where SeaBIOS put it in refdata
BOOT_ADDR = 0x7C00           # where a BIOS loads the boot sector
BOOT_MAX = 0xA0000 - BOOT_ADDR   # a --boot file may fill conventional memory


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
                 ctx: Any = None, accel: str = "sim", debugcon: Any = None,
                 ide_bus_master: Optional[bool] = None) -> None:
        from gqemu.aio import qemu_get_aio_context
        import gqemu.block  # noqa: F401  (registers the drivers)
        from gqemu.block.block_backend import blk_new_open
        from gqemu.block.driver import BlockError
        from gqemu.kvm.cpu import KVMState
        self.ctx = ctx if ctx is not None else qemu_get_aio_context()
        self.ram_size = ram_size
        # the IDE function's bus mastering at start: on for scripted guests,
        # off as SeaBIOS leaves it (--accel kvm, replays of SeaBIOS guests)
        self.ide_bus_master = accel == "sim" if ide_bus_master is None else ide_bus_master
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
                target[d["index"]] = open_drive(d, blk_new_open, BlockError)
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
        # the i8042, port 0x92, port 0x61, the RTC/CMOS, the FDC's and
        # fw_cfg's first registers, as QEMU's pc has them (a replay of a
        # --accel kvm recording reads them too)
        from gqemu.hw.pc_legacy import pc_cmos_bytes, pc_legacy_init
        units = [(self.ide[0], self.ide[1])[i // 2].ifs[i % 2] if i in self.blks else None
                 for i in range(4)]
        pc_legacy_init(self.as_io.root, pc_cmos_bytes(ram_size, units), self._guest_shutdown)
        self.io_errors: list[dict] = []     # BLOCK_IO_ERROR events that stopped the VM
        from gqemu.block.blk_error import blk_add_stop_handler
        from gqemu.kvm.runstate import qemu_add_vm_change_state_handler
        for idx, blk in self._all_blks():
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
        as SeaBIOS leaves it (0x0103); ``ide_bus_master`` overrides (the
        replay of a trace whose header says ``firmware: seabios``).
        QEMU: i440fx_init, pci_create_simple."""
        from gqemu.hw.ide.piix import piix3_ide_pci_new
        from gqemu.hw.pc_pci import pc_pci_chipset, pci_bios_setup
        from gqemu.hw.pci import PCI_COMMAND, PCI_COMMAND_MASTER, pci_bus_new
        self.pci = pci_bus_new(self.as_io, self.as_mem, self.pic.irqs)
        pc_pci_chipset(self.pci)
        self.ide_pci = piix3_ide_pci_new(self.pci, self.ide[2])
        self.virtio: list[Any] = []
        if self.vblks:          # the virtio modules only for a machine that has one
            from gqemu.hw.virtio.virtio_pci import virtio_blk_pci_new
            self.virtio = [virtio_blk_pci_new(self.pci, (2 + n) << 3, self.vblks[i], self.ctx)
                           for n, i in enumerate(sorted(self.vblks))]
        pci_bios_setup(self.pci)
        if self.ide_bus_master:
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
                "drive_files": {d["index"]: d["file"] for d in self.drives},
                "read_clears": self._read_clears}

    def _read_clears(self, port: int) -> bool:
        """Does a read of ``port`` consume what it returns?  A virtio
        function's ISR (BAR0 + 0x13, wherever the guest put BAR0)."""
        from gqemu.hw.virtio.virtio_pci import VIRTIO_PCI_ISR
        for dev in self.virtio:
            bar = dev.bars[0]
            if bar is not None and bar.addr >= 0 and port == bar.addr + VIRTIO_PCI_ISR:
                return True
        return False

    def add_cpu(self, guest_fn: GuestFn) -> Any:
        """A vCPU running ``guest_fn(cpu)``."""
        from gqemu.kvm.cpu import CPUState
        from gqemu.kvm.guest import GuestMemory, X86CPU
        index = len(self.kvm.cpus)
        mem = GuestMemory(self.ram, index)
        self.memories.append(mem)
        return CPUState(self.kvm, index, guest_fn, X86CPU(index, mem))

    def _guest_shutdown(self) -> None:
        """An ACPI power off (S5): the run ends with status 0 and the
        drives are closed (flushed), as QEMU's shutdown does."""
        self.kvm.exit_request = True

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

    def add_boot_cpu(self, code: bytes, firmware: bool = True,
                     boot_disk: bool = True) -> Any:
        """Under ``accel=kvm``: vCPU 0 starts ``code`` (a boot sector) at
        0000:7C00 in real mode with the registers SeaBIOS leaves (DL = 0x80,
        AX = 0xAA55, IF set, segments 0, SP = 0x6F04).  With ``firmware``
        the vCPU first runs SeaBIOS's IDE probe (and, with ``boot_disk``,
        its read of the boot sector) as exits of its own
        (gqemu.kvm.firmware).  QEMU+SeaBIOS: boot.c call_boot_entry."""
        from gqemu.hw.ide.piix import PRIMARY, SECONDARY
        from gqemu.kvm.cpu import CPUState
        from gqemu.kvm.firmware import seabios_firmware
        from gqemu.kvm.guest import X86CPU
        if self.accel is None:
            raise MachineError("a boot sector needs --accel kvm")
        if not code or len(code) > BOOT_MAX:
            raise MachineError("boot code must be 1..%d bytes (got %d)" % (BOOT_MAX, len(code)))
        bios = self.bios = self._install_bios()
        self.ram[BOOT_ADDR:BOOT_ADDR + len(code)] = code
        fw = None
        if firmware:
            from gqemu.hw.virtio.virtio_pci import virtio_pci_seabios_writes
            boot = None
            if boot_disk and self.blks:
                first = min(self.blks)
                boot = (first // 2, first % 2)
            writes = tuple(w for k, proxy in enumerate(self.virtio)
                           for w in virtio_pci_seabios_writes(proxy, self.ram_size, k))
            fw = seabios_firmware(((PRIMARY[0], PRIMARY[1]), (SECONDARY[0], SECONDARY[1])), boot,
                                  writes)
        index = len(self.kvm.cpus)
        cpu = CPUState(self.kvm, index, fw, X86CPU(index, None))
        bios.cpu = cpu
        cpu.accel_run = self.accel.create_vcpu()
        from gqemu.kvm.bios import bios_pic_setup
        bios_pic_setup(self.accel.vm)
        from gqemu.kvm.bios import BIOS_SEG, BOOT_OFF, SEABIOS_BOOT_SP
        start = (0, BOOT_ADDR)
        if firmware and boot_disk and not self.blks and self.virtio:
            # SeaBIOS boots the first virtio-blk disk through INT 13h
            start = (BIOS_SEG, BOOT_OFF)
        cpu.accel_run.vcpu.set_real_mode(start[0], start[1], {
            "rax": 0xAA55, "rdx": 0x80, "rsp": SEABIOS_BOOT_SP, "rflags": 0x202})
        return cpu

    def _install_bios(self) -> Any:
        """The IVT, BIOS data area and INT 13h of gqemu.kvm.bios, over the
        IDE disks in index order, then the virtio-blk ones."""
        from gqemu.hw.ide.piix import PRIMARY, SECONDARY
        from gqemu.kvm.bios import bios_install
        disks = []
        for idx in sorted(self.blks):
            base, ctl, _irq = (PRIMARY, SECONDARY)[idx // 2]
            st = (self.ide[0], self.ide[1])[idx // 2].ifs[idx % 2]
            disks.append({"base": base, "ctl": ctl, "unit": idx % 2,
                          "sectors": st.nb_sectors, "heads": st.heads or 16,
                          "spt": st.sectors or 63, "cyls": st.cylinders or 1,
                          "trans": st.chs_trans})
        from gqemu.kvm.int13_virtio import virtio_bios_disks   # then virtio's
        disks += virtio_bios_disks(self.ram, self.ram_size, self.virtio)
        return bios_install(self.ram, self.as_io.root, disks)

    def firmware_probe(self, boot_disk: bool) -> None:
        """Put the IDE controller in the state SeaBIOS leaves it in, with no
        exit at all (gqemu.kvm.firmware.DirectIO); ``add_boot_cpu`` runs
        the same probe as exits of the vCPU instead."""
        from gqemu.aio import aio_poll
        from gqemu.hw.ide.piix import PRIMARY, SECONDARY
        from gqemu.kvm.firmware import DirectIO, FirmwareError, seabios_ata_probe
        boot = None
        if boot_disk and self.blks:
            first = min(self.blks)
            boot = (first // 2, first % 2)
        try:
            io = DirectIO(self.as_io, lambda: aio_poll(self.ctx, True))
            seabios_ata_probe(io, ((PRIMARY[0], PRIMARY[1]), (SECONDARY[0], SECONDARY[1])), boot)
        except FirmwareError as e:
            raise MachineError(str(e))

    def boot_sector(self) -> bytes:
        """Sector 0 of the first IDE disk (of the first virtio-blk disk when
        there is none), as SeaBIOS loads it; MachineError when there is no
        disk or it lacks the 55 AA signature."""
        from gqemu.block.block_backend import blk_pread
        from gqemu.block.driver import BlockError
        if self.blks:
            blk = self.blks[min(self.blks)]
        elif getattr(self, "vblks", None):
            blk = self.vblks[min(self.vblks)]   # no IDE disk: SeaBIOS boots virtio
        else:
            raise MachineError("no disk to boot from")
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

    def _all_blks(self) -> list[tuple[Any, Any]]:
        """(index, backend) of every drive: IDE by index, then virtio as
        ("virtio", index)."""
        return (list(self.blks.items())
                + [(("virtio", i), b) for i, b in getattr(self, "vblks", {}).items()])

    def _blk_stopped(self, index: Any, blk: Any) -> None:
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
        blks = [blk for _idx, blk in self._all_blks()]
        if running:
            for blk in blks:
                if blk_is_stopped(blk):
                    blk_resume(blk)
            return
        from gqemu.block.driver import BlockError
        for blk in blks:
            blk_drain(blk)
        for blk in blks:
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
        from gqemu.block.abandon import bdrv_abandon
        from gqemu.block.block_backend import blk_bs, blk_unref
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
        # isa-debug-exit is QEMU's exit(): no bdrv_close_all, so what the
        # format drivers still cache (qcow2's dirty L2 and refcount tables)
        # never reaches the image
        exited = kvm is not None and kvm.exit_status is not None
        for blks in (self.blks, getattr(self, "vblks", {})):
            for idx in list(blks):
                blk = blks.pop(idx)
                if exited:
                    bdrv_abandon(blk_bs(blk))
                blk_unref(blk)


def _pic_notify(s: Any, n: int, level: int) -> None:
    from gqemu.kvm.cpu import kvm_set_irq
    kvm_set_irq(s, n, level)
