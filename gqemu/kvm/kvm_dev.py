"""/dev/kvm with the standard library: the ioctls, the structures, the
shared ``kvm_run`` page.

:class:`KvmVM` opens /dev/kvm, creates a VM with an in-kernel irqchip (the
PIC/IOAPIC pair QEMU's ``kernel-irqchip=on`` uses), maps guest RAM (an
anonymous ``mmap``, the same bytes the hw layer's RAM region and the DMA
engine use) as memory slot 0 at guest-physical 0, and creates vCPUs.
:class:`KvmVcpu` owns a vCPU fd, its mmap'd ``struct kvm_run`` and the
register ioctls.  ``KvmVcpu.run()`` is the blocking ``KVM_RUN`` itself: it
is called on the vCPU's own OS thread (``gqemu.kvm.accel``), never on the
loop's.

Structures follow linux/kvm.h for x86-64 (``struct kvm_run``'s union at
offset 32; ``kvm_regs`` 144 bytes; ``kvm_sregs`` 312 bytes).  Errors are
``KvmError`` with a one-line message.

Must not import: gqemu.hw or anything above kvm (pure host interface).
QEMU: accel/kvm/kvm-all.c (kvm_init, kvm_init_vcpu, kvm_vcpu_ioctl),
target/i386/kvm.c; linux include/uapi/linux/kvm.h.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from typing import Optional

KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(0, nr, 0)


def _iow(nr: int, size: int) -> int:
    return _ioc(1, nr, size)


def _ior(nr: int, size: int) -> int:
    return _ioc(2, nr, size)


class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64)]


class kvm_regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class kvm_segment(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16), ("type", ctypes.c_uint8),
                ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8),
                ("db", ctypes.c_uint8), ("s", ctypes.c_uint8), ("l", ctypes.c_uint8),
                ("g", ctypes.c_uint8), ("avl", ctypes.c_uint8),
                ("unusable", ctypes.c_uint8), ("padding", ctypes.c_uint8)]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


class kvm_sregs(ctypes.Structure):
    _fields_ = [("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment),
                ("fs", kvm_segment), ("gs", kvm_segment), ("ss", kvm_segment),
                ("tr", kvm_segment), ("ldt", kvm_segment),
                ("gdt", kvm_dtable), ("idt", kvm_dtable),
                ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64),
                ("cr3", ctypes.c_uint64), ("cr4", ctypes.c_uint64),
                ("cr8", ctypes.c_uint64), ("efer", ctypes.c_uint64),
                ("apic_base", ctypes.c_uint64),
                ("interrupt_bitmap", ctypes.c_uint64 * 4)]


class kvm_dirty_log(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("padding1", ctypes.c_uint32),
                ("dirty_bitmap", ctypes.c_void_p)]


class kvm_irq_level(ctypes.Structure):
    _fields_ = [("irq", ctypes.c_uint32), ("level", ctypes.c_uint32)]


class kvm_pic_state(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint8) for n in (
        "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select",
        "poll", "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi",
        "special_fully_nested_mode", "init4", "elcr", "elcr_mask")]


class kvm_irqchip(ctypes.Structure):
    _fields_ = [("chip_id", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("chip", ctypes.c_uint8 * 512)]


assert ctypes.sizeof(kvm_regs) == 144 and ctypes.sizeof(kvm_sregs) == 312
assert ctypes.sizeof(kvm_irqchip) == 520

KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, ctypes.sizeof(kvm_userspace_memory_region))
KVM_GET_DIRTY_LOG = _iow(0x42, ctypes.sizeof(kvm_dirty_log))
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
PAGE_SIZE = 4096
KVM_SET_TSS_ADDR = _io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, 8)
KVM_CREATE_IRQCHIP = _io(0x60)
KVM_IRQ_LINE = _iow(0x61, ctypes.sizeof(kvm_irq_level))
KVM_GET_IRQCHIP = _ioc(3, 0x62, ctypes.sizeof(kvm_irqchip))
KVM_SET_IRQCHIP = _ior(0x63, ctypes.sizeof(kvm_irqchip))
KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE = 0, 1
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, ctypes.sizeof(kvm_regs))
KVM_SET_REGS = _iow(0x82, ctypes.sizeof(kvm_regs))
KVM_GET_SREGS = _ior(0x83, ctypes.sizeof(kvm_sregs))
KVM_SET_SREGS = _iow(0x84, ctypes.sizeof(kvm_sregs))

KVM_API_VERSION = 12
# where QEMU puts the TSS and identity map pages that Intel needs for real mode
KVM_TSS_ADDR = 0xFFFBD000
KVM_IDENTITY_MAP_ADDR = 0xFEFFC000

# struct kvm_run offsets (x86-64)
RUN_IMMEDIATE_EXIT = 1
RUN_EXIT_REASON = 8
RUN_UNION = 32
_IO_FMT = struct.Struct("<BBHIQ")          # direction, size, port, count, data_offset
_MMIO_FMT = struct.Struct("<Q8sIB")        # phys_addr, data[8], len, is_write
_FAIL_ENTRY_FMT = struct.Struct("<QI")     # hardware_entry_failure_reason, cpu
_INTERNAL_FMT = struct.Struct("<II")       # suberror, ndata

_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc_ioctl.restype = ctypes.c_int


class KvmError(Exception):
    """/dev/kvm is missing, refused, or an ioctl failed: one line."""


def _ioctl(fd: int, req: int, arg: object = None, what: str = "") -> int:
    """ioctl(2) through libc with the GIL released (ctypes drops it), so a
    blocking KVM_RUN never stops the loop's thread.  Returns the result;
    raises KvmError, or InterruptedError for EINTR (a kick)."""
    if arg is None:
        p = None
    elif isinstance(arg, int):
        p = ctypes.c_void_p(arg)
    else:
        p = ctypes.cast(ctypes.byref(arg), ctypes.c_void_p)  # type: ignore[arg-type]
    ret = _libc_ioctl(fd, req, p)
    if ret < 0:
        err = ctypes.get_errno()
        if err == errno.EINTR:
            raise InterruptedError(err, os.strerror(err))
        raise KvmError("%s: %s" % (what or "ioctl 0x%x" % req, os.strerror(err)))
    return ret


def kvm_available(path: str = "/dev/kvm") -> Optional[str]:
    """None when ``path`` can be opened read/write, else why not (one line)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return "%s: %s" % (path, e.strerror)
    os.close(fd)
    return None


class KvmVcpu:
    """One vCPU fd and its shared ``kvm_run`` page."""

    def __init__(self, vm: "KvmVM", index: int) -> None:
        self.vm = vm
        self.index = index
        self.fd = _ioctl(vm.fd, KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU")
        try:
            self.run_page = mmap.mmap(self.fd, vm.run_size, mmap.MAP_SHARED,
                                      mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            os.close(self.fd)
            raise KvmError("mmap kvm_run: %s" % e.strerror)
        self.thread_id = 0          # the OS thread inside KVM_RUN (for kicks)

    # -- registers -------------------------------------------------------------

    def get_regs(self) -> kvm_regs:
        r = kvm_regs()
        _ioctl(self.fd, KVM_GET_REGS, r, "KVM_GET_REGS")
        return r

    def set_regs(self, r: kvm_regs) -> None:
        _ioctl(self.fd, KVM_SET_REGS, r, "KVM_SET_REGS")

    def get_sregs(self) -> kvm_sregs:
        s = kvm_sregs()
        _ioctl(self.fd, KVM_GET_SREGS, s, "KVM_GET_SREGS")
        return s

    def set_sregs(self, s: kvm_sregs) -> None:
        _ioctl(self.fd, KVM_SET_SREGS, s, "KVM_SET_SREGS")

    def set_real_mode(self, cs: int, ip: int, regs: dict[str, int]) -> None:
        """Real mode at ``cs:ip`` with the other segments 0 (flat 64 KiB
        limits, as after a BIOS), and the general registers in ``regs``."""
        s = self.get_sregs()
        for name in ("cs", "ds", "es", "fs", "gs", "ss"):
            seg = getattr(s, name)
            seg.selector = cs if name == "cs" else 0
            seg.base = seg.selector << 4
            seg.limit = 0xFFFF
        s.cr0 &= ~1
        self.set_sregs(s)
        r = kvm_regs()
        for k, v in regs.items():
            setattr(r, k, v)
        r.rip = ip
        self.set_regs(r)

    # -- the run page ----------------------------------------------------------

    def run(self) -> int:
        """KVM_RUN, blocking the calling OS thread.  Returns 0, or -EINTR
        when kicked (a signal, or ``immediate_exit`` set)."""
        try:
            return _ioctl(self.fd, KVM_RUN, None, "KVM_RUN")
        except InterruptedError:
            return -errno.EINTR

    @property
    def exit_reason(self) -> int:
        return struct.unpack_from("<I", self.run_page, RUN_EXIT_REASON)[0]

    def set_immediate_exit(self, v: int) -> None:
        self.run_page[RUN_IMMEDIATE_EXIT] = 1 if v else 0

    def io(self) -> tuple[int, int, int, int, int]:
        """KVM_EXIT_IO: (direction, size, port, count, data_offset)."""
        return _IO_FMT.unpack_from(self.run_page, RUN_UNION)

    def mmio(self) -> tuple[int, bytes, int, int]:
        """KVM_EXIT_MMIO: (phys_addr, data[8], len, is_write)."""
        return _MMIO_FMT.unpack_from(self.run_page, RUN_UNION)

    def set_mmio_data(self, data: bytes) -> None:
        off = RUN_UNION + 8
        self.run_page[off:off + len(data)] = data

    def fail_entry(self) -> tuple[int, int]:
        return _FAIL_ENTRY_FMT.unpack_from(self.run_page, RUN_UNION)

    def internal(self) -> tuple[int, int]:
        return _INTERNAL_FMT.unpack_from(self.run_page, RUN_UNION)

    def close(self) -> None:
        try:
            self.run_page.close()
        finally:
            os.close(self.fd)


class KvmVM:
    """A VM on /dev/kvm: in-kernel irqchip, RAM in slot 0, vCPUs."""

    def __init__(self, ram_size: int, path: str = "/dev/kvm") -> None:
        try:
            self.sys_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmError("%s: %s" % (path, e.strerror))
        self.fd = -1
        self.ram: Optional[mmap.mmap] = None
        self.vcpus: list[KvmVcpu] = []
        try:
            version = _ioctl(self.sys_fd, KVM_GET_API_VERSION, None, "KVM_GET_API_VERSION")
            if version != KVM_API_VERSION:
                raise KvmError("%s: KVM API version %d, expected %d"
                               % (path, version, KVM_API_VERSION))
            self.fd = _ioctl(self.sys_fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM")
            self.run_size = _ioctl(self.sys_fd, KVM_GET_VCPU_MMAP_SIZE, None,
                                   "KVM_GET_VCPU_MMAP_SIZE")
            _ioctl(self.fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR, "KVM_SET_TSS_ADDR")
            ident = ctypes.c_uint64(KVM_IDENTITY_MAP_ADDR)
            _ioctl(self.fd, KVM_SET_IDENTITY_MAP_ADDR, ident, "KVM_SET_IDENTITY_MAP_ADDR")
            _ioctl(self.fd, KVM_CREATE_IRQCHIP, None, "KVM_CREATE_IRQCHIP")
            self.ram = mmap.mmap(-1, ram_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.ram_size = ram_size
            self._ram_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.ram))
            self._set_ram_slot(0)
        except BaseException:
            self.close()
            raise

    def _set_ram_slot(self, flags: int) -> None:
        region = kvm_userspace_memory_region(0, flags, 0, self.ram_size, self._ram_addr)
        _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")

    def enable_dirty_log(self) -> None:
        """Log the guest's writes to RAM (slot 0), page by page."""
        self._set_ram_slot(KVM_MEM_LOG_DIRTY_PAGES)
        self._bitmap = ctypes.create_string_buffer((self.ram_size // PAGE_SIZE + 63) // 64 * 8)

    def get_dirty_pages(self) -> list[int]:
        """The pages the guest wrote since the last call (and clears the
        log).  QEMU: kvm_physical_sync_dirty_bitmap."""
        bm = self._bitmap
        log = kvm_dirty_log(0, 0, ctypes.cast(bm, ctypes.c_void_p))
        _ioctl(self.fd, KVM_GET_DIRTY_LOG, log, "KVM_GET_DIRTY_LOG")
        bits = int.from_bytes(bm.raw, "little")     # usually a handful of pages:
        pages = []                                  # visit set bits only
        while bits:
            low = bits & -bits
            pages.append(low.bit_length() - 1)
            bits ^= low
        return pages

    def create_vcpu(self) -> KvmVcpu:
        v = KvmVcpu(self, len(self.vcpus))
        self.vcpus.append(v)
        return v

    def irq_line(self, irq: int, level: int) -> None:
        """Drive ISA IRQ ``irq`` of the in-kernel PIC/IOAPIC.  QEMU: kvm_set_irq."""
        _ioctl(self.fd, KVM_IRQ_LINE, kvm_irq_level(irq, 1 if level else 0), "KVM_IRQ_LINE")

    def set_pic(self, chip: int, **fields: int) -> None:
        """Set fields of the in-kernel i8259 ``chip`` (0 master, 1 slave),
        the others as they are.  QEMU: kvm_pic_put (KVM_SET_IRQCHIP)."""
        ic = kvm_irqchip(chip, 0)
        _ioctl(self.fd, KVM_GET_IRQCHIP, ic, "KVM_GET_IRQCHIP")
        st = kvm_pic_state.from_buffer(ic.chip)
        for name, val in fields.items():
            setattr(st, name, val)
        _ioctl(self.fd, KVM_SET_IRQCHIP, ic, "KVM_SET_IRQCHIP")

    def close(self) -> None:
        for v in self.vcpus:
            v.close()
        self.vcpus = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.sys_fd >= 0:
            os.close(self.sys_fd)
            self.sys_fd = -1
        # The RAM mapping stays valid while the hw layer's region holds it.
