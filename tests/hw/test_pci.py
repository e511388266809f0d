"""PCI configuration space against QEMU 7.2 + SeaBIOS facts: the config
dumps of tests/data/virtio/debugcon.bin (recorded by virtioblk.asm under
real qemu-system-x86_64), the pci_cfg_* lines of refdata's trace, and the
BAR sizing answers SeaBIOS got there."""
from __future__ import annotations

import lzma
import re
from pathlib import Path

import pytest

from gqemu.hw.memory import cpu_inb, cpu_inl, cpu_inw, cpu_outb, cpu_outl, cpu_outw
from gqemu.machine import Machine, drive_config, make_scratch_disk
from gqemu.trace import trace_close_output, trace_enable_events, trace_init_output, trace_reset

DATA = Path(__file__).resolve().parents[1] / "data" / "virtio"
CHIPSET = (0x00, 0x08, 0x09, 0x0B)      # 00:00.0 00:01.0 00:01.1 00:01.3


def recorded_config() -> dict[int, bytes]:
    """devfn -> config bytes as QEMU showed them to the boot program."""
    dbg = (DATA / "debugcon.bin").read_bytes()
    assert dbg[0:1] == b"S" and dbg[1] == 2
    out = {0x10: dbg[2:2 + 0x50]}
    pos = 2 + 0x50
    for devfn in CHIPSET:
        out[devfn] = dbg[pos:pos + 0x40]
        pos += 0x40
    return out


@pytest.fixture
def machine(tmp_path):
    disk = tmp_path / "v.img"
    make_scratch_disk(str(disk), 2)
    boot = tmp_path / "b.img"
    make_scratch_disk(str(boot), 2)
    m = Machine(drive_config(["file=%s,format=raw,if=ide" % boot,
                              "file=%s,format=raw,if=virtio" % disk]))
    yield m
    m.close()


def cfg_read(m, devfn, off, size=4):
    cpu_outl(m.as_io, 0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
    port = 0xCFC + (off & 3)
    return {1: cpu_inb, 2: cpu_inw, 4: cpu_inl}[size](m.as_io, port)


def cfg_write(m, devfn, off, val, size=4):
    cpu_outl(m.as_io, 0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
    port = 0xCFC + (off & 3)
    {1: cpu_outb, 2: cpu_outw, 4: cpu_outl}[size](m.as_io, port, val)


def test_config_space_is_what_seabios_left_under_qemu(machine):
    """Every dword the boot program read under QEMU, as gqemu answers it;
    the one documented difference is the IDE function's bus-master bit,
    which scripted machines (--accel sim) keep on (0x0107, QEMU: 0x0103)."""
    for devfn, want in recorded_config().items():
        got = b"".join(cfg_read(machine, devfn, off).to_bytes(4, "little")
                       for off in range(0, len(want), 4))
        if devfn == 0x09:
            assert got[4:6] == b"\x07\x01"
            got = got[:4] + b"\x03\x01" + got[6:]
        assert got == want, "devfn %02x" % devfn


def test_kvm_machine_leaves_ide_bus_mastering_off(tmp_path, kvm):
    """Under --accel kvm the IDE command register is SeaBIOS's 0x0103."""
    disk = tmp_path / "v.img"
    make_scratch_disk(str(disk), 2)
    m = Machine(drive_config(["file=%s,format=raw" % disk]), accel="kvm")
    try:
        assert cfg_read(m, 0x09, 0x04) == 0x02800103
        assert cfg_read(m, 0x09, 0x20) == 0xC001      # BAR4 as today without virtio
    finally:
        m.close()


def test_byte_and_word_accesses(machine):
    """The program's byte read of 0x3C and word read at 0xCFE (recorded)."""
    dbg = (DATA / "debugcon.bin").read_bytes()
    pos = 2 + 0x50 + 4 * 0x40
    assert cfg_read(machine, 0x10, 0x3C, 1) == dbg[pos]
    assert cfg_read(machine, 0x10, 0x02, 2) == int.from_bytes(dbg[pos + 1:pos + 3], "little")


def test_latch_rules(machine):
    """QEMU's pci_host: only a dword write to 0xCF8 latches; data reads
    with bit 31 clear, of an absent function or another bus are all ones;
    the latch reads back whole."""
    cpu_outl(machine.as_io, 0xCF8, 0x80000000)
    cpu_outb(machine.as_io, 0xCF8, 0x00)          # ignored
    assert cpu_inl(machine.as_io, 0xCFC) == 0x12378086
    assert cpu_inl(machine.as_io, 0xCF8) == 0x80000000
    cpu_outl(machine.as_io, 0xCF8, 0x00000000)
    assert cpu_inl(machine.as_io, 0xCFC) == 0xFFFFFFFF
    assert cfg_read(machine, 0x18, 0) == 0xFFFFFFFF   # 00:03.0: nothing
    cpu_outl(machine.as_io, 0xCF8, 0x80010000)        # bus 1
    assert cpu_inl(machine.as_io, 0xCFC) == 0xFFFFFFFF
    # the latch's low bits select the byte, as pci_host_data_read ORs them
    cpu_outl(machine.as_io, 0xCF8, 0x80000002)
    assert cpu_inw(machine.as_io, 0xCFC) == 0x1237


def test_bar_sizing_as_seabios_saw_it(machine):
    """refdata: BAR4 of piix3-ide answers 0xfffffff1 to all ones, the
    i440FX's BARs and ROM answer 0; virtio BAR0 (128 bytes) and BAR1 (4 KiB)."""
    for devfn, off, want in ((0x09, 0x20, 0xFFFFFFF1), (0x00, 0x10, 0), (0x09, 0x30, 0),
                             (0x10, 0x10, 0xFFFFFF81), (0x10, 0x14, 0xFFFFF000)):
        old = cfg_read(machine, devfn, off)
        cfg_write(machine, devfn, off, 0xFFFFFFFF)
        assert cfg_read(machine, devfn, off) == want, (devfn, off)
        cfg_write(machine, devfn, off, old)


def test_bar4_moves_and_io_enable_gates_it(machine):
    """Programming BAR4 moves the bus-master registers; clearing command
    I/O unmaps them (all ones), as QEMU's pci_update_mappings."""
    as_io = machine.as_io
    assert cfg_read(machine, 0x09, 0x20) == 0xC081     # after virtio's 128 bytes
    cpu_outb(as_io, 0xC084, 0x00)
    cpu_outl(as_io, 0xC084, 0x1234)                     # PRD address of channel 0
    assert cpu_inl(as_io, 0xC084) == 0x1234
    cfg_write(machine, 0x09, 0x20, 0xD001)
    assert cpu_inl(as_io, 0xD004) == 0x1234
    assert cpu_inl(as_io, 0xC084) == 0xFFFFFFFF
    cmd = cfg_read(machine, 0x09, 0x04, 2)
    cfg_write(machine, 0x09, 0x04, cmd & ~1, 2)
    assert cpu_inl(as_io, 0xD004) == 0xFFFFFFFF
    cfg_write(machine, 0x09, 0x04, cmd, 2)
    assert cpu_inl(as_io, 0xD004) == 0x1234


def test_write_masks(machine):
    """Read-only identity, writable line register, write-1-to-clear status."""
    cfg_write(machine, 0x10, 0x00, 0)
    assert cfg_read(machine, 0x10, 0x00) == 0x10011AF4
    cfg_write(machine, 0x10, 0x3C, 0x55, 1)
    assert cfg_read(machine, 0x10, 0x3C, 1) == 0x55
    cfg_write(machine, 0x10, 0x04, 0xFFFF, 2)
    assert cfg_read(machine, 0x10, 0x04, 2) == 0x0507


def _ref_lines(refdata: Path, pattern: str) -> list[str]:
    with lzma.open(refdata / "mbr" / "out" / "trace-raw.log.xz", "rt") as f:
        return [re.sub(r"^\d+@[\d.]+:", "", ln.rstrip("\n")) for ln in f if pattern in ln]


def test_trace_lines_match_qemu(machine, refdata):
    """pci_cfg_read/write print as QEMU 7.2's log backend did in refdata."""
    import io
    buf = io.StringIO()
    trace_init_output(buf, "log")
    trace_enable_events("pci_cfg_*")
    try:
        cfg_read(machine, 0x00, 0x00)
        cfg_read(machine, 0x00, 0x02, 2)
        cfg_read(machine, 0x08, 0x0E, 1)
        cfg_write(machine, 0x09, 0x04, 0x103, 2)
        cfg_write(machine, 0x09, 0x40, 0x8000, 2)
    finally:
        trace_reset()
        trace_close_output()
    got = buf.getvalue().splitlines()
    ref = set(_ref_lines(refdata, "pci_cfg_"))
    for line in got:
        assert line in ref, line
    assert len(got) == 5


def test_ide_bus_master_off_moves_no_data(tmp_path):
    """Command bit 2 off: the bus master's accesses go to an empty space
    (QEMU's disabled bus-master region): a READ DMA ends but guest RAM is
    untouched (and a WRITE DMA would write what the empty space reads: 0);
    with it back on the data arrives."""
    from gqemu.guest.ata import ATA, DMA_BUFFER
    from gqemu.guest.virtio_blk import pci_cfg_read, pci_cfg_write
    disk = tmp_path / "d.img"
    make_scratch_disk(str(disk), 2)
    seen = {}

    def guest(cpu):
        ata = ATA(cpu, use_irq=True)    # the zero PRD has no EOT: BM stays ACTIVE + INTR
        cpu.memory.write(DMA_BUFFER, b"\xee" * 512)
        cmd = pci_cfg_read(cpu, 0x09, 0x04)
        pci_cfg_write(cpu, 0x09, 0x04, (cmd & 0xFFFF) & ~0x4)
        seen["off"] = ata.read_dma(3, 1)
        pci_cfg_write(cpu, 0x09, 0x04, (cmd & 0xFFFF) | 0x4)
        seen["on"] = ata.read_dma(3, 1)

    m = Machine(drive_config(["file=%s,format=raw" % disk]))
    try:
        m.add_cpu(guest)
        m.run()
        assert all(c.error is None for c in m.kvm.cpus), [c.error for c in m.kvm.cpus]
    finally:
        m.close()
    from gqemu.machine import scratch_sector
    assert seen["off"] == b"\xee" * 512
    assert seen["on"] == scratch_sector(3)
