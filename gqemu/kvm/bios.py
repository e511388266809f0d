"""The BIOS services a boot program may call under ``--accel kvm``.

gqemu runs no BIOS code, but boot programs load the rest of themselves
with INT 13h.  :func:`bios_install` fills the real-mode IVT: every vector
points at an ``iret`` (so a stray INT 10h returns), the hardware IRQ
vectors (0x08-0x0F, 0x70-0x77) at stubs that send EOI as SeaBIOS's do,
IRQ 14's setting the BIOS data area's disk_interrupt_flag first, and
:func:`bios_pic_setup` leaves the in-kernel 8259s as SeaBIOS does; INT 13h
is a 7-byte stub in the BIOS segment::

    F000:E3FE  push dx; mov dx, 0x4f0; out dx, al; pop dx; iret

The ``out`` to ``GQEMU_BIOS_PORT`` (0x4F0, unused on QEMU's pc) exits to
gqemu, which performs the service with the caller's registers and returns
results in them (AH status, AL count, CF in the FLAGS image the ``int``
pushed).  Disk services drive the IDE controller exactly as SeaBIOS 1.16.2
does (``gqemu.kvm.firmware.ata_pio_transfer``), and those port accesses are
real exits of the vCPU: dispatched, traced and recorded like the program's
own, as they appear in QEMU's trace.

INT 13h is SeaBIOS's (``gqemu.kvm.int13``: reset, status, CHS and
extended read/write/verify/seek, parameters with SeaBIOS's geometry
translation, size, EDD): drives 0x80.. are the IDE disks in index order.
INT 11h, 12h, 15h, 16h and 1Ah have the same kind of stub at their
classic entry points, trapping to ports 0x4F1..0x4F5
(``gqemu.kvm.biossvc``), and the BIOS data area is filled as SeaBIOS
leaves it.

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/disk.c (handle_13 and friends), src/block.c.
"""
from __future__ import annotations

import struct
from typing import Any, Sequence

from gqemu.aio import aio_poll
from gqemu.hw.memory import MEMTXATTRS_UNSPECIFIED
from gqemu.hw.memory_region import (MemoryRegion, MemoryRegionOps,
                                    memory_region_add_subregion, memory_region_init_io)
from gqemu.kvm.biossvc import SERVICES, Regs, bios_data_area_init
from gqemu.kvm.cpu import CPUState, kvm_handle_io
from gqemu.kvm.exits import KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KvmRun
from gqemu.kvm.int13 import Call, int13_disk

GQEMU_BIOS_PORT = 0x4F0
BIOS_SEG = 0xF000
INT13_OFF = 0xE3FE          # the classic INT 13h entry point
IRET_OFF = 0xFF53           # the classic dummy-interrupt iret


def _stub(port: int) -> bytes:
    """push dx; mov dx, port; out dx, al; pop dx; iret"""
    return bytes([0x52, 0xBA]) + struct.pack("<H", port) + bytes([0xEE, 0x5A, 0xCF])


INT13_STUB = _stub(GQEMU_BIOS_PORT)
CF = 0x0001
# SeaBIOS's boot_disk + call_boot_entry, for INT 19h (the bootstrap loader)
# and a boot from a virtio-blk disk (no IDE disk: its boot read is an INT
# 13h read like any other, through the virtio driver):
#   cli; ax = ss = ds = es = 0; sp = SEABIOS_BOOT_SP
#   INT 13h AH=02 AL=1 CX=1 DX=0x80 to 0000:7C00; jc/no 55 AA: INT 18h's stub
#   AX=AA55 DX=0080, BX CX SI DI BP 0, FLAGS 0x0202; jmp 0000:7C00
BOOT_OFF = 0xE100
BOOT_STUB = bytes.fromhex(
    "fa31c08ed0bc046f8ed88ec0bb007cb80102b90100ba8000cd137221813efe7d55aa"
    "7519b855aa31db31c9ba800031f631ff31ed6802029dea007c0000ea50e100f0")
# INT 18h (boot failure): SeaBIOS finds no next device and, with no reboot
# timeout from QEMU, waits for ever: sti; hlt; jmp back to the hlt
BOOT_FAIL_OFF = 0xE150
BOOT_FAIL_STUB = bytes.fromhex("fbf4ebfd")
#: SP as SeaBIOS's call_boot_entry leaves it (recorded: int19.asm)
SEABIOS_BOOT_SP = 0x6F04
# a service that waits (INT 16h AH=00 with no key) resumes here instead of
# at its stub's pop dx: pop dx; sti; hlt; jmp (the INT 16h stub)
WAIT_OFF = 0xE840
# SeaBIOS's hardware-interrupt entries (recorded IVT: 0x08 -> F000:FEA5,
# 0x72/0x73 -> F000:D437): here they only send the EOI its handlers send
PIC_EOI_OFF = 0xFEA5
PIC2_EOI_OFF = 0xD437
PIC_EOI_STUB = bytes([0x50, 0xB0, 0x20, 0xE6, 0x20, 0x58, 0xCF])  # push ax; EOI master; iret
PIC2_EOI_STUB = bytes([0x50, 0xB0, 0x20, 0xE6, 0xA0, 0xE6, 0x20, 0x58, 0xCF])  # + slave
# IRQ 14 (vector 0x76; SeaBIOS's handle_76): disk_interrupt_flag
# (0040:008E) = 0xff, then EOI to both
IRQ14_OFF = 0xE3C0
IRQ14_STUB = bytes([0x50, 0x1E, 0x31, 0xC0, 0x8E, 0xD8, 0xC6, 0x06, 0x8E, 0x04, 0xFF,
                    0xB0, 0x20, 0xE6, 0xA0, 0xE6, 0x20, 0x1F, 0x58, 0xCF])
# the PIC as SeaBIOS 1.16.2 leaves it (recorded under QEMU 7.2): vectors
# 0x08 and 0x70, IRQ 0, 1, 2, 6, 8, 12, 13, 14 unmasked, the PCI lines
# 10 and 11 level-triggered (ELCR 0x4D1 = 0x0C)
SEABIOS_PIC = ({"irq_base": 0x08, "imr": 0xB8, "elcr": 0x00},
               {"irq_base": 0x70, "imr": 0x8E, "elcr": 0x0C})


class ExitIO:
    """Port accesses made as exits of ``cpu``: dispatched through
    ``kvm_handle_io`` and handed to the exit hook (recorder) as the
    program's own would be."""

    def __init__(self, cpu: CPUState) -> None:
        self.cpu = cpu
        self.s = cpu.kvm_state
        self.run = KvmRun()

    def _exit(self, direction: int, size: int, port: int, count: int) -> None:
        run = self.run
        run.exit_reason = KVM_EXIT_IO
        run.io_direction, run.io_size, run.io_port, run.io_count = direction, size, port, count
        kvm_handle_io(port, MEMTXATTRS_UNSPECIFIED, run.data, direction, size, count,
                      self.s.as_io)
        self.s.nr_exits += 1
        if self.s.on_exit is not None:
            self.s.on_exit(self.cpu, run)

    def inb(self, port: int) -> int:
        self._exit(KVM_EXIT_IO_IN, 1, port, 1)
        return self.run.data[0]

    def outb(self, port: int, val: int) -> None:
        self.run.data[0] = val & 0xFF
        self._exit(KVM_EXIT_IO_OUT, 1, port, 1)

    def inw(self, port: int) -> int:
        self._exit(KVM_EXIT_IO_IN, 2, port, 1)
        return int.from_bytes(self.run.data[:2], "little")

    def inl(self, port: int) -> int:
        self._exit(KVM_EXIT_IO_IN, 4, port, 1)
        return int.from_bytes(self.run.data[:4], "little")

    def outw(self, port: int, val: int) -> None:
        self.run.data[:2] = (val & 0xFFFF).to_bytes(2, "little")
        self._exit(KVM_EXIT_IO_OUT, 2, port, 1)

    def outl(self, port: int, val: int) -> None:
        self.run.data[:4] = (val & 0xFFFFFFFF).to_bytes(4, "little")
        self._exit(KVM_EXIT_IO_OUT, 4, port, 1)

    def insw(self, port: int, n: int) -> bytes:
        self._exit(KVM_EXIT_IO_IN, 2, port, n)
        return bytes(self.run.data[:2 * n])

    def outsw(self, port: int, data: bytes) -> None:
        self.run.data[:len(data)] = data
        self._exit(KVM_EXIT_IO_OUT, 2, port, len(data) // 2)

    def poll(self) -> None:
        aio_poll(self.s.ctx, True)

    def sync_ram(self) -> None:
        """Let a recording take the RAM written so far (a virtio chain the
        next exit hands to the device)."""
        if self.s.on_run_return is not None:
            self.s.on_run_return(self.cpu)


class BiosState:
    """What the services need: RAM, the disks (IDE index order) with their
    channel ports and geometry, the last status (INT 13h AH=01)."""

    def __init__(self, ram: Any, disks: Sequence[dict]) -> None:
        self.ram = ram
        self.disks = list(disks)    # {"base", "ctl", "unit", "sectors", "heads", "spt", "cyls"}
        self.cpu: Any = None
        self.on_ram_write: Any = None   # (addr, n): RAM the firmware wrote
        self.a20 = 1                    # INT 15h AH=24 without port I/O (``io`` None)
        self.io: Any = None             # the trap's ExitIO while a service runs
        self.rtc_b = 0x02               # RTC status B, as SeaBIOS's rtc_setup leaves it

    @property
    def last_status(self) -> int:
        """INT 13h's last status, in the BIOS data area (0040:0074) as
        SeaBIOS keeps it."""
        return int(self.ram[0x474])

    @last_status.setter
    def last_status(self, v: int) -> None:
        self.ram[0x474] = v & 0xFF


def bios_install(ram: Any, io_root: MemoryRegion, disks: Sequence[dict]) -> BiosState:
    """Fill the IVT and the BIOS data area, put the stubs in the BIOS
    segment, map the trap port.  Returns the state; set ``.cpu`` to the
    vCPU before it runs."""
    bs = BiosState(ram, disks)
    base = BIOS_SEG << 4
    ram[base + IRET_OFF] = 0xCF
    ram[base + INT13_OFF:base + INT13_OFF + len(INT13_STUB)] = INT13_STUB
    ram[base + PIC_EOI_OFF:base + PIC_EOI_OFF + len(PIC_EOI_STUB)] = PIC_EOI_STUB
    ram[base + PIC2_EOI_OFF:base + PIC2_EOI_OFF + len(PIC2_EOI_STUB)] = PIC2_EOI_STUB
    ram[base + IRQ14_OFF:base + IRQ14_OFF + len(IRQ14_STUB)] = IRQ14_STUB
    ram[base + BOOT_OFF:base + BOOT_OFF + len(BOOT_STUB)] = BOOT_STUB
    ram[base + BOOT_FAIL_OFF:base + BOOT_FAIL_OFF + len(BOOT_FAIL_STUB)] = BOOT_FAIL_STUB
    ivt = bytearray(struct.pack("<HH", IRET_OFF, BIOS_SEG) * 256)
    for v in range(8):
        struct.pack_into("<HH", ivt, (0x08 + v) * 4, PIC_EOI_OFF, BIOS_SEG)
        struct.pack_into("<HH", ivt, (0x70 + v) * 4, PIC2_EOI_OFF, BIOS_SEG)
    struct.pack_into("<HH", ivt, 0x76 * 4, IRQ14_OFF, BIOS_SEG)
    ram[0:1024] = ivt
    ram[0x48E] = 0                                  # disk_interrupt_flag
    ram[0x13 * 4:0x13 * 4 + 4] = struct.pack("<HH", INT13_OFF, BIOS_SEG)
    ram[0x18 * 4:0x18 * 4 + 4] = struct.pack("<HH", BOOT_FAIL_OFF, BIOS_SEG)
    ram[0x19 * 4:0x19 * 4 + 4] = struct.pack("<HH", BOOT_OFF, BIOS_SEG)
    for k, (vec, off, _fn) in enumerate(SERVICES, 1):
        stub = _stub(GQEMU_BIOS_PORT + k)
        ram[base + off:base + off + len(stub)] = stub
        ram[vec * 4:vec * 4 + 4] = struct.pack("<HH", off, BIOS_SEG)
    jmp16 = SERVICES[3][1] - (WAIT_OFF + 5)           # a short jmp back to INT 16h's stub
    ram[base + WAIT_OFF:base + WAIT_OFF + 5] = bytes([0x5A, 0xFB, 0xF4, 0xEB, jmp16 & 0xFF])
    bios_data_area_init(ram)                        # base memory, EBDA, keyboard...
    ram[0x475] = len(bs.disks)                      # number of hard disks
    memory_region_add_subregion(io_root, GQEMU_BIOS_PORT, memory_region_init_io(
        None, MemoryRegionOps(_trap_read, _trap_write, name="gqemu-bios"), bs,
        "gqemu-bios", 1 + len(SERVICES)))
    return bs


def bios_pic_setup(vm: Any) -> None:
    """Program the in-kernel PICs as SeaBIOS leaves them (initialised,
    ICW4 8086 mode, vector bases 0x08/0x70, its masks and ELCR), so a
    program that hooks IRQ 10/11 at 0x72/0x73 and unmasks them gets its
    interrupt, level-triggered, as under QEMU.  SeaBIOS: pic_setup,
    pciinit.c (piix_isa_bridge_setup)."""
    from gqemu.kvm.kvm_dev import KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE
    for chip, state in zip((KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE), SEABIOS_PIC):
        vm.set_pic(chip, init_state=0, init4=1, auto_eoi=0, read_reg_select=0, **state)


def _trap_read(opaque: BiosState, addr: int, size: int) -> int:
    return (1 << (8 * size)) - 1


def _trap_write(opaque: BiosState, addr: int, val: int, size: int) -> None:
    if opaque.cpu is not None and opaque.cpu.accel_run is not None:
        if addr == 0:
            handle_int13(opaque, opaque.cpu)
        elif addr <= len(SERVICES):
            handle_service(opaque, opaque.cpu, addr - 1)


def handle_service(bs: BiosState, cpu: CPUState, k: int) -> None:
    """One call of INT 11h/12h/15h/16h/1Ah (``gqemu.kvm.biossvc``), from
    its stub's trap: 32-bit registers and ES in and out, DX in the slot
    the stub pushed, CF and ZF in the FLAGS image the ``int`` pushed."""
    vcpu = cpu.accel_run.vcpu
    regs = vcpu.get_regs()
    sregs = vcpu.get_sregs()
    ss, sp = sregs.ss.base, regs.rsp & 0xFFFF
    ram = bs.ram
    dx = struct.unpack_from("<H", ram, ss + sp)[0]
    flags_at = ss + ((sp + 6) & 0xFFFF)
    flags = struct.unpack_from("<H", ram, flags_at)[0]
    es = sregs.es.selector
    r = Regs(regs.rax & 0xFFFFFFFF, regs.rbx & 0xFFFFFFFF, regs.rcx & 0xFFFFFFFF,
             (regs.rdx & 0xFFFF0000) | dx, regs.rsi & 0xFFFFFFFF, regs.rdi & 0xFFFFFFFF,
             es, flags)
    bs.io = ExitIO(cpu)
    try:
        SERVICES[k][2](bs, r)
    finally:
        bs.io = None
    regs.rax, regs.rbx, regs.rcx = r.eax, r.ebx, r.ecx
    regs.rdx = (regs.rdx & 0xFFFF) | (r.edx & 0xFFFF0000)
    regs.rsi, regs.rdi = r.esi, r.edi
    if r.wait:
        regs.rip = WAIT_OFF
    vcpu.set_regs(regs)
    if r.es != es:
        sregs.es.selector, sregs.es.base = r.es, r.es << 4
        vcpu.set_sregs(sregs)
    struct.pack_into("<H", ram, ss + sp, r.edx & 0xFFFF)
    struct.pack_into("<H", ram, flags_at, r.flags & 0xFFFF)


def handle_int13(bs: BiosState, cpu: CPUState) -> None:
    """One INT 13h call, from the stub's trap: the caller's registers in,
    SeaBIOS's answer (``gqemu.kvm.int13``) out, CF in the FLAGS image the
    ``int`` pushed.  SeaBIOS: handle_13."""
    vcpu = cpu.accel_run.vcpu
    regs = vcpu.get_regs()
    sregs = vcpu.get_sregs()
    ss, sp = sregs.ss.base, regs.rsp & 0xFFFF
    ram = bs.ram
    dx = struct.unpack_from("<H", ram, ss + sp)[0]          # pushed by the stub
    flags_at = ss + ((sp + 6) & 0xFFFF)
    r = Call(regs.rax & 0xFFFF, regs.rbx & 0xFFFF, regs.rcx & 0xFFFF, dx,
             regs.rsi & 0xFFFF, sregs.ds.base >> 4, sregs.es.base >> 4)
    status = int13_disk(bs, ExitIO(cpu), r)
    regs.rax = (regs.rax & ~0xFFFF) | r.ax
    regs.rbx = (regs.rbx & ~0xFFFF) | r.bx
    regs.rcx = (regs.rcx & ~0xFFFF) | r.cx
    vcpu.set_regs(regs)
    struct.pack_into("<H", ram, ss + sp, r.dx)
    flags = struct.unpack_from("<H", ram, flags_at)[0]
    struct.pack_into("<H", ram, flags_at, (flags | CF) if status else (flags & ~CF))
