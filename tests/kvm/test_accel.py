"""The real accelerator on /dev/kvm: boot programs against what real QEMU
7.2 (SeaBIOS) did with them (tests/data/kvm/record.sh re-records), kicks,
and the one-line errors of ``gqemu run --accel kvm``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "kvm"

needs_kvm = pytest.mark.usefixtures("kvm")     # skips locally, fails under CI


def _nasm_free_bin(name: str) -> Path:
    """The assembled program kept beside its source (record.sh writes it)."""
    return DATA / (name + ".bin")


@needs_kvm
def test_irq_wakes_hlt_as_under_qemu(tmp_path):
    """IRQ 14 reaches a guest sleeping in HLT through the in-kernel PIC
    (KVM_IRQ_LINE), the ISR runs once, and the data and exit status are
    QEMU's."""
    con = tmp_path / "con"
    rc = main(["run", "--accel", "kvm", "--boot", str(_nasm_free_bin("irqwait")),
               "--debugcon", str(con), "--timeout", "20"])
    assert rc == int((DATA / "irqwait.status").read_text())
    assert con.read_bytes() == (DATA / "irqwait.debugcon").read_bytes()


@needs_kvm
def test_same_program_from_the_disk(tmp_path):
    """With no --boot, sector 0 of the first IDE disk is the program."""
    from gqemu.machine import make_scratch_disk
    disk = tmp_path / "d.img"
    make_scratch_disk(str(disk), size_mib=1, mbr=_nasm_free_bin("irqwait").read_bytes())
    con = tmp_path / "con"
    rc = main(["run", "--accel", "kvm", "--drive", "file=%s,format=raw" % disk,
               "--debugcon", str(con), "--timeout", "20"])
    assert rc == int((DATA / "irqwait.status").read_text())
    assert con.read_bytes() == (DATA / "irqwait.debugcon").read_bytes()


@needs_kvm
def test_spinning_guest_is_kicked_out(tmp_path, capsys):
    """``jmp $`` never exits: --timeout kicks the vCPU out of KVM_RUN."""
    spin = tmp_path / "spin.bin"
    # mov al,0x42; out 0xe9,al; jmp $
    spin.write_bytes(bytes([0xB0, 0x42, 0xE6, 0xE9, 0xEB, 0xFE]))
    con = tmp_path / "con"
    rc = main(["run", "--accel", "kvm", "--boot", str(spin), "--debugcon", str(con),
               "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert rc == 124
    assert con.read_bytes() == b"B"
    assert "exceeded its --timeout of 0.5 s" in err
    assert len(err.strip().splitlines()) == 1


@needs_kvm
def test_guest_fault_is_one_line(tmp_path, capsys):
    """Protected mode with an empty IDT, then int3: KVM cannot go on (an
    emulation failure or a triple fault, depending on the host CPU); one
    line naming it, status 1."""
    prog = tmp_path / "tf.bin"
    # lidt [0x7c20]; mov eax,cr0; or al,1; mov cr0,eax; int3; jmp $
    code = bytes([0x0F, 0x01, 0x1E, 0x20, 0x7C, 0x0F, 0x20, 0xC0, 0x0C, 0x01,
                  0x0F, 0x22, 0xC0, 0xCC, 0xEB, 0xFE])
    prog.write_bytes(code.ljust(0x20, b"\x90") + bytes(6))
    rc = main(["run", "--accel", "kvm", "--boot", str(prog), "--timeout", "10"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert ("gqemu run: vCPU 0 stopped: KVM_EXIT_INTERNAL_ERROR" in err
            or "gqemu run: vCPU 0 stopped: the guest shut down the vCPU (triple fault)" in err)
    assert "at 0000:7c0d" in err                # the int3
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, msg", [
    (["--boot", "/nonexistent.bin"], "--boot /nonexistent.bin: No such file or directory"),
    ([], "--accel kvm needs --boot FILE or a bootable --drive"),
    (["script.py"], "--accel kvm runs machine code"),
])
def test_bad_kvm_runs_are_one_line(argv, msg, capsys):
    if not os.path.exists("/dev/kvm") and msg.startswith("--boot"):
        msg = "/dev/kvm"
    rc = main(["run", "--accel", "kvm"] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


@needs_kvm
def test_unbootable_disk(tmp_path, capsys):
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(1 << 20))
    rc = main(["run", "--accel", "kvm", "--drive", "file=%s,format=raw" % disk])
    err = capsys.readouterr().err
    assert rc == 2 and "Boot failed: not a bootable disk" in err


def test_missing_dev_kvm_is_one_line(tmp_path):
    """Without a usable /dev/kvm: one line, status 2 (checked in a child
    whose kvm_available is pointed at a missing node)."""
    code = ("import sys, gqemu.kvm.kvm_dev as d\n"
            "real = d.kvm_available\n"
            "d.kvm_available = lambda path='/dev/kvm': real('/nonexistent/kvm')\n"
            "from gqemu.cli.main import main\n"
            "sys.exit(main(['run', '--accel', 'kvm', '--boot', sys.argv[1]]))\n")
    boot = tmp_path / "b.bin"
    boot.write_bytes(b"\xf4")
    p = subprocess.run([sys.executable, "-c", code, str(boot)], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == ("gqemu run: --accel kvm: /nonexistent/kvm: "
                                "No such file or directory")


def _enospc_drive(tmp_path):
    from gqemu.machine import make_scratch_disk
    img = tmp_path / "d.img"
    make_scratch_disk(str(img), size_mib=1)
    conf = tmp_path / "bd.conf"
    conf.write_text('[inject-error]\nevent = "write_aio"\nerrno = "28"\nonce = "on"\n')
    return img, "file=blkdebug:%s:%s,format=raw,if=ide,index=0" % (conf, img)


@needs_kvm
def test_enospc_pauses_real_guest_and_cont_retries(tmp_path, capsys):
    """werror=enospc (the default) on real guest code: the VM pauses with one
    BLOCK_IO_ERROR line, the retry writes the sector, the guest sees 0x50."""
    img, drive = _enospc_drive(tmp_path)
    prog = DATA / "pioenospc.bin"
    con = tmp_path / "con"
    rc = main(["run", "--accel", "kvm", "--boot", str(prog), "--drive", drive,
               "--debugcon", str(con), "--on-io-error", "retry=1,delay=0", "--timeout", "20"])
    err = capsys.readouterr().err
    assert rc == 33, err
    assert "BLOCK_IO_ERROR: drive ide0-hd0: write failed: No space left on device" in err
    assert con.read_bytes() == b"\x50"
    assert img.read_bytes()[5 * 512:6 * 512] == prog.read_bytes()


@needs_kvm
def test_enospc_without_retry_ends_paused(tmp_path, capsys):
    img, drive = _enospc_drive(tmp_path)
    before = img.read_bytes()
    rc = main(["run", "--accel", "kvm", "--boot", str(DATA / "pioenospc.bin"),
               "--drive", drive, "--debugcon", str(tmp_path / "con"), "--timeout", "20"])
    err = capsys.readouterr().err
    assert rc == 4, err
    assert "VM paused (io-error)" in err
    assert img.read_bytes() == before


def _ide_accesses(records):
    """IDE port accesses of gqemu trace records (REC_IO / REC_IOS), one per
    element, each wait (an alternate-status read and the status reads after
    it, or a run of status reads) collapsed to its last status: how many
    polls a wait takes, and whether its first read still sees BSY, depends
    on the host's speed (refdata/README)."""
    from gqemu.replay.format import port_accesses
    ide = set(range(0x1F0, 0x1F8)) | {0x3F6}
    out = []
    for rec in records:
        for a in port_accesses(rec):
            if a[2] not in ide:
                continue
            if a[0] == 0 and a[2] == 0x1F7 and out and out[-1][0] == 0 \
                    and out[-1][2] in (0x1F7, 0x3F6):
                out[-1] = a
            else:
                out.append(a)
    return out


@needs_kvm
def test_int13_matches_qemu(tmp_path):
    """A boot program that loads sectors with INT 13h (CHS and extended),
    asks the geometry and names a bad drive: QEMU+SeaBIOS's results, and the
    IDE accesses of the whole run (the firmware's probe and boot read, then
    INT 13h's transfers) are SeaBIOS's, access for access."""
    import lzma
    from gqemu.machine import make_scratch_disk
    from gqemu.replay.format import open_trace
    from gqemu.replay.qemu_log import QemuLogImporter
    prog = _nasm_free_bin("int13")
    disk = tmp_path / "d.img"
    make_scratch_disk(str(disk), mbr=prog.read_bytes())
    con, trace = tmp_path / "con", tmp_path / "t.gqt"
    rc = main(["run", "--accel", "kvm", "--drive", "file=%s,format=raw" % disk,
               "--debugcon", str(con), "--record", str(trace), "--timeout", "20"])
    assert rc == int((DATA / "int13.status").read_text())
    assert con.read_bytes() == (DATA / "int13.debugcon").read_bytes()
    f, r = open_trace(str(trace))
    with f:
        ours = _ide_accesses(list(r))
    with lzma.open(DATA / "int13.trace.log.xz", "rt") as f:
        qemu = _ide_accesses(list(QemuLogImporter().records(f)))
    # from power-on: SeaBIOS's probe and boot read, then the program's INT 13h
    assert len(ours) > 1500                      # IDENTIFY + 1 + 3 + 1 sectors of words
    assert qemu == ours


@needs_kvm
def test_bmdma_reference_program_on_kvm(tmp_path):
    """tests/data/bmdma's boot program (INT 13h loads the rest of it, PCI
    configuration writes, 21 bus-master edge cases) on /dev/kvm: QEMU's exit
    status, and its debugcon bytes (every case's BM status, task file and
    buffer) and disk afterwards equal the recording under real QEMU 7.2."""
    import lzma
    import shutil
    bm = DATA.parent / "bmdma"
    disk = tmp_path / "bm.img"
    with lzma.open(bm / "disk-pristine.img.xz") as f, open(disk, "wb") as out:
        shutil.copyfileobj(f, out)
    pristine = tmp_path / "pristine.img"
    shutil.copyfile(disk, pristine)
    con, trace = tmp_path / "con", tmp_path / "bm.gqt"
    rc = main(["run", "--accel", "kvm", "--drive", "file=%s,format=raw" % disk,
               "--debugcon", str(con), "--timeout", "60", "--record", str(trace)])
    assert rc == int((bm / "exitcode.txt").read_text())
    assert con.read_bytes() == (bm / "debugcon.bin").read_bytes()
    with lzma.open(bm / "disk-after.img.xz") as f:
        after = f.read()
    assert disk.read_bytes() == after
    # the recording (guest RAM from KVM's dirty log included) replays under
    # the simulated loop: every PRD table and DMA buffer the guest wrote is there
    assert main(["replay", str(trace), "--drive", "file=%s,format=raw" % pristine]) == 0
    assert pristine.read_bytes() == after


@needs_kvm
def test_mmio_exits_as_under_qemu(tmp_path):
    """32-bit code reading and writing the unassigned PCI hole: KVM_EXIT_MMIO
    decoded, unassigned memory reads 0 and drops writes as under QEMU, and
    the exits are recorded."""
    from gqemu.machine import make_scratch_disk
    from gqemu.replay.format import REC_MMIO, open_trace
    disk = tmp_path / "d.img"
    make_scratch_disk(str(disk), size_mib=1, mbr=_nasm_free_bin("mmio").read_bytes())
    con, trace = tmp_path / "con", tmp_path / "t.gqt"
    rc = main(["run", "--accel", "kvm", "--drive", "file=%s,format=raw" % disk,
               "--debugcon", str(con), "--record", str(trace), "--timeout", "20"])
    assert rc == int((DATA / "mmio.status").read_text())
    assert con.read_bytes() == (DATA / "mmio.debugcon").read_bytes()
    f, r = open_trace(str(trace))
    with f:
        mmio = [rec for rec in r if rec[0] == REC_MMIO]
    # [kind, cpu, is_write, addr, len, value]
    assert [(m[2], m[3], m[4]) for m in mmio] == [(0, 0xD0000000, 4), (1, 0xD0000000, 4),
                                                   (0, 0xD0000000, 4)]
    assert mmio[1][5] == 0x12345678
