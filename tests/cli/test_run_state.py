"""The VM run state under ``gqemu run``: a ``stop`` error policy pauses the
vCPUs (QEMU's ``paused (io-error)``), keeps the failed request, reports one
BLOCK_IO_ERROR line, and either ends with status 4 or resumes (``cont``) and
retries it.  What QEMU 7.2 does is recorded in reliability.md §4.3 / §6.1:
stop -> paused (io-error), IDE status 0x50, request kept; ``cont`` retries;
enospc stops only on ENOSPC, EIO is reported (0x41 / 0x04).

The central property: no write that the guest saw complete is missing from
the image.  Each guest checks the image file itself (the guest is Python)
right after its write command completed."""
from __future__ import annotations

from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.machine import Machine, drive_config, make_scratch_disk

pytestmark = pytest.mark.timeout(120)

PATTERN = b"\xab" * 512
LBA = 5

GUEST = '''
from gqemu.guest.ata import ATA, AtaError
IMG = %(img)r
def on_disk(lba):
    with open(IMG, "rb") as f:
        f.seek(lba * 512)
        return f.read(512)
def guest(cpu):
    ata = ATA(cpu)
    try:
        ata.%(op)s
    except AtaError as e:
        print("error status 0x%%02x error 0x%%02x" %% (e.status, e.error))
        return
    # the command completed: the image must hold the data now
    assert on_disk(%(lba)d) == b"\\xab" * 512, "a completed write is not in the image"
    print("done status 0x%%02x" %% ata.status())
'''


def gqemu(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def img(tmp_path) -> Path:
    p = tmp_path / "d.img"
    make_scratch_disk(str(p), size_mib=1)
    return p


def blkdebug(tmp_path: Path, event: str, errno_: int, once: bool = True,
             sector: int = -1) -> Path:
    conf = tmp_path / "bd.conf"
    conf.write_text('[inject-error]\nevent = "%s"\nerrno = "%d"\nonce = "%s"\n'
                    % (event, errno_, "on" if once else "off")
                    + ('sector = "%d"\n' % sector if sector >= 0 else ""))
    return conf


def script(tmp_path: Path, img: Path, op: str, extra: str = "") -> Path:
    s = tmp_path / "g.py"
    s.write_text(GUEST % {"img": str(img), "op": op, "lba": LBA} + extra)
    return s


PIO_WRITE = "write_sectors(%d, b'\\xab' * 512)" % LBA
DMA_WRITE = "write_dma(%d, b'\\xab' * 512)" % LBA


def sector(img: Path, lba: int) -> bytes:
    return img.read_bytes()[lba * 512:(lba + 1) * 512]


def io_error_line(op: str = "write", errno_: int = 28, policy: str = "werror=enospc") -> str:
    reason = {28: "No space left on device", 5: "Input/output error",
              27: "File too large"}[errno_]
    return ("gqemu run: BLOCK_IO_ERROR: drive ide0-hd0: %s failed: %s (errno %d); "
            "%s: VM paused (io-error)\n" % (op, reason, errno_, policy))


@pytest.mark.parametrize("op", [PIO_WRITE, DMA_WRITE])
def test_enospc_pauses_and_ends_with_status_3(tmp_path, img, capsys, op):
    before = sector(img, LBA)
    conf = blkdebug(tmp_path, "write_aio", 28)
    rc, out, err = gqemu(capsys, "run", script(tmp_path, img, op),
                         "--drive", "file=blkdebug:%s:%s,format=raw" % (conf, img))
    assert rc == 4
    assert out == ""                    # the guest never saw the command end
    assert err == io_error_line() + ("gqemu run: the VM stays paused (io-error); the "
                                     "failed request was not completed\n")
    assert sector(img, LBA) == before


@pytest.mark.parametrize("op", [PIO_WRITE, DMA_WRITE])
def test_enospc_retry_lands_the_write(tmp_path, img, capsys, op):
    conf = blkdebug(tmp_path, "write_aio", 28)
    rc, out, err = gqemu(capsys, "run", script(tmp_path, img, op),
                         "--drive", "file=blkdebug:%s:%s,format=raw" % (conf, img),
                         "--on-io-error", "retry=3,delay=0")
    assert rc == 0, err
    assert out == "done status 0x50\n"
    assert err == io_error_line() + "gqemu run: cont in 0 s (retry 1 of 3)\n"
    assert sector(img, LBA) == PATTERN


def test_werror_stop_on_eio_retries_until_the_budget_is_spent(tmp_path, img, capsys):
    before = sector(img, LBA)
    conf = blkdebug(tmp_path, "write_aio", 5, once=False)       # fails every time
    rc, out, err = gqemu(capsys, "run", script(tmp_path, img, PIO_WRITE),
                         "--drive", "file=blkdebug:%s:%s,format=raw,werror=stop" % (conf, img),
                         "--on-io-error", "retry=2,delay=0")
    assert rc == 4 and out == ""
    line = io_error_line(errno_=5, policy="werror=stop")
    assert err == (line + "gqemu run: cont in 0 s (retry 1 of 2)\n"
                   + line + "gqemu run: cont in 0 s (retry 2 of 2)\n"
                   + line + "gqemu run: the VM stays paused (io-error) after 2 retries; "
                   "the failed request was not completed\n")
    assert sector(img, LBA) == before


def test_enospc_policy_reports_eio_to_the_guest(tmp_path, img, capsys):
    conf = blkdebug(tmp_path, "write_aio", 5)
    rc, out, err = gqemu(capsys, "run", script(tmp_path, img, PIO_WRITE),
                         "--drive", "file=blkdebug:%s:%s,format=raw" % (conf, img))
    assert (rc, out, err) == (0, "error status 0x41 error 0x04\n", "")


def test_rerror_stop_read_retries(tmp_path, img, capsys):
    conf = blkdebug(tmp_path, "read_aio", 5, sector=9)     # not the MBR read at start
    s = tmp_path / "r.py"
    s.write_text("from gqemu.guest.ata import ATA\n"
                 "def guest(cpu):\n"
                 "    d = ATA(cpu).read_sectors(9, 1)\n"
                 "    print(d[4:20])\n")
    drive = "file=blkdebug:%s:%s,format=raw,rerror=stop" % (conf, img)
    rc, out, err = gqemu(capsys, "run", s, "--drive", drive)
    assert rc == 4 and out == ""
    assert err.startswith(io_error_line("read", 5, "rerror=stop"))
    rc, out, err = gqemu(capsys, "run", s, "--drive", drive, "--on-io-error", "retry=1,delay=0")
    assert rc == 0 and out == "b'<LBA 0x00000009>'\n", err


def test_flush_stop_retries(tmp_path, img, capsys):
    conf = blkdebug(tmp_path, "flush_to_disk", 5)
    s = tmp_path / "f.py"
    s.write_text("from gqemu.guest.ata import ATA\n"
                 "def guest(cpu):\n"
                 "    ata = ATA(cpu)\n"
                 "    ata.write_sectors(%d, b'\\xab' * 512)\n"   # something to flush
                 "    ata.flush()\n"
                 "    print('flushed')\n" % LBA)
    rc, out, err = gqemu(capsys, "run", s, "--drive",
                         "file=blkdebug:%s:%s,format=raw,werror=stop" % (conf, img),
                         "--on-io-error", "retry=1,delay=0")
    assert rc == 0 and out == "flushed\n", err
    assert err.startswith("gqemu run: BLOCK_IO_ERROR: drive ide0-hd0: write failed: "
                          "Input/output error (errno 5); werror=stop")


def test_script_hook_resumes(tmp_path, img, capsys):
    conf = blkdebug(tmp_path, "write_aio", 28)
    hook = ("def on_io_error(machine, events):\n"
            "    print('hook', machine.runstate, events[0]['device'], events[0]['errno'])\n"
            "    machine.cont()\n")
    rc, out, err = gqemu(capsys, "run", script(tmp_path, img, PIO_WRITE, hook),
                         "--drive", "file=blkdebug:%s:%s,format=raw" % (conf, img))
    assert rc == 0, err
    assert out == "hook io-error ide0-hd0 28\ndone status 0x50\n"
    assert err == io_error_line()
    assert sector(img, LBA) == PATTERN


def test_machine_api_pauses_the_vcpus_and_cont_retries(tmp_path, img):
    """While paused, the guest makes no exit at all; ``cont`` reissues the
    write before the guest runs again, so its next status read is BSY."""
    conf = blkdebug(tmp_path, "write_aio", 28)
    seen: list[int] = []

    def guest(cpu):
        cpu.outb(0x1F6, 0xE0)
        cpu.outb(0x1F2, 1)
        for port, v in ((0x1F3, LBA), (0x1F4, 0), (0x1F5, 0)):
            cpu.outb(port, v)
        cpu.outb(0x1F7, 0x30)                       # WRITE SECTORS
        while cpu.inb(0x1F7) & 0x80:
            pass
        cpu.outsw(0x1F0, PATTERN)                  # the write starts here
        while True:
            st = cpu.inb(0x1F7)
            seen.append(st)
            if not st & 0x80:
                break

    m = Machine(drive_config(["file=blkdebug:%s:%s,format=raw" % (conf, img)]))
    try:
        m.add_cpu(guest)
        assert m.run() == "io-error" and m.runstate == "io-error"
        assert [e["operation"] for e in m.io_errors] == ["write"]
        assert m.io_errors[0]["nospace"] and m.io_errors[0]["action"] == "stop"
        exits = m.kvm.nr_exits
        statuses = list(seen)
        assert m.run() == "io-error"                # still paused: nothing runs
        assert m.kvm.nr_exits == exits and seen == statuses
        assert all(st & 0x80 for st in statuses)     # the guest saw BSY only
        assert m.cont() is True and m.cont() is False
        assert m.run() == "shutdown"
        assert seen[len(statuses)] & 0x80            # first read after cont: BSY (retried)
        assert seen[-1] == 0x50
    finally:
        m.close()
    assert sector(img, LBA) == PATTERN


def test_error_while_all_vcpus_halt(tmp_path, img, capsys):
    """The error completes in the main loop (the vCPU sleeps in HLT waiting
    for the IRQ): the VM pauses all the same, and the retry's IRQ wakes it."""
    conf = blkdebug(tmp_path, "write_aio", 28)
    s = tmp_path / "h.py"
    s.write_text(
        "from gqemu.guest.ata import ATA\n"
        "def guest(cpu):\n"
        "    ata = ATA(cpu, use_irq=True)\n"
        "    ata.command(0x30, %d, 1)\n"
        "    ata.wait_drq('write')\n"
        "    cpu.outsw(0x1F0, b'\\xab' * 512)\n"
        "    cpu.hlt()\n"
        "    print('status 0x%%02x' %% ata.status())\n" % LBA)
    rc, out, err = gqemu(capsys, "run", s, "--drive",
                         "file=blkdebug:%s:%s,format=raw" % (conf, img),
                         "--on-io-error", "retry=1,delay=0")
    assert rc == 0 and out == "status 0x50\n", err
    assert sector(img, LBA) == PATTERN


@pytest.mark.parametrize("value", ["retry", "retry=-1", "retry=x", "delay=1", "retry=1,wait=2",
                                   "retry=1,delay=-1", "pause"])
def test_bad_on_io_error_is_one_line(tmp_path, capsys, value):
    rc, _out, err = gqemu(capsys, "run", tmp_path / "none.py", "--on-io-error", value)
    assert rc == 2 and err.count("\n") == 1 and "--on-io-error" in err


def test_a_real_host_error_file_size_limit(tmp_path, img):
    """Not injected: the host refuses the write (RLIMIT_FSIZE -> EFBIG).
    werror=stop pauses; the script's hook lifts the limit and resumes, the
    retried write lands."""
    import resource
    import subprocess
    import sys
    lba = 1500                                  # beyond the 512 KiB limit
    s = tmp_path / "g.py"
    s.write_text(GUEST % {"img": str(img), "op": "write_dma(%d, b'\\xab' * 512)" % lba,
                          "lba": lba} + (
        "import resource\n"
        "def on_io_error(machine, events):\n"
        "    inf = resource.RLIM_INFINITY\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (inf, inf))\n"
        "    machine.cont()\n"))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 10, resource.RLIM_INFINITY))

    r = subprocess.run([sys.executable, "-m", "gqemu.cli.main", "run", str(s), "--drive",
                        "file=%s,format=raw,werror=stop" % img],
                       cwd=str(Path(__file__).resolve().parents[2]), preexec_fn=limit,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done status 0x50\n"
    assert r.stderr == io_error_line("write", 27, "werror=stop")
    assert sector(img, lba) == PATTERN


def test_timeout_while_paused_between_retries(tmp_path, img, capsys):
    conf = blkdebug(tmp_path, "write_aio", 28, once=False)
    rc, out, err = gqemu(capsys, "run", script(tmp_path, img, PIO_WRITE),
                         "--drive", "file=blkdebug:%s:%s,format=raw" % (conf, img),
                         "--on-io-error", "retry=100,delay=3000", "--timeout", "0.5")
    assert rc == 124 and out == ""
    assert err.endswith("gqemu run: the run exceeded its --timeout of 0.5 s while the VM "
                        "was paused (io-error)\n")


def test_every_vcpu_is_parked_while_paused(tmp_path, img):
    """A second vCPU polling a port makes no exit while the VM is stopped,
    and goes on after cont."""
    conf = blkdebug(tmp_path, "write_aio", 28)
    polls = [0]
    done = []

    def writer(cpu):
        from gqemu.guest.ata import ATA
        ATA(cpu).write_sectors(LBA, PATTERN)
        done.append(True)

    def poller(cpu):
        while not done:
            cpu.inb(0x80)
            polls[0] += 1

    m = Machine(drive_config(["file=blkdebug:%s:%s,format=raw" % (conf, img)]))
    try:
        m.add_cpu(writer)
        m.add_cpu(poller)
        assert m.run() == "io-error"
        n, exits = polls[0], m.kvm.nr_exits
        assert m.run() == "io-error"
        assert (polls[0], m.kvm.nr_exits) == (n, exits)
        assert m.cont()
        assert m.run() == "shutdown"
        assert done and polls[0] >= n
        assert all(c.error is None for c in m.kvm.cpus)
    finally:
        m.close()
    assert sector(img, LBA) == PATTERN


MULTI = '''
from gqemu.guest.ata import ATA
IMG = %(img)r
def guest(cpu):
    ata = ATA(cpu)
    data = bytes(range(256)) * 2 * 20
    ata.%(op)s(10, data)
    with open(IMG, "rb") as f:
        f.seek(10 * 512)
        assert f.read(len(data)) == data, "a completed write is not in the image"
    print("ok")
'''


@pytest.mark.parametrize("op", ["write_sectors", "write_multiple", "write_dma"])
@pytest.mark.parametrize("bad", [10, 17, 29])
def test_multi_sector_writes_failing_anywhere_land_whole(tmp_path, img, capsys, op, bad):
    """A 20-sector write whose request covering sector ``bad`` fails once:
    the retry completes it, and once the guest sees it complete, all 20
    sectors are in the image."""
    conf = blkdebug(tmp_path, "write_aio", 28, sector=bad)
    s = tmp_path / "m.py"
    s.write_text(MULTI % {"img": str(img), "op": op})
    rc, out, err = gqemu(capsys, "run", s, "--drive",
                         "file=blkdebug:%s:%s,format=raw" % (conf, img),
                         "--on-io-error", "retry=1,delay=0")
    assert (rc, out) == (0, "ok\n"), err
    assert err == io_error_line() + "gqemu run: cont in 0 s (retry 1 of 1)\n"


def test_a_guest_error_is_reported_even_when_the_run_ends_paused(tmp_path, img, capsys):
    conf = blkdebug(tmp_path, "write_aio", 28)
    s = tmp_path / "two.py"
    s.write_text(
        "from gqemu.guest.ata import ATA\n"
        "def bad(cpu):\n"
        "    raise ValueError('vCPU 0 broke')\n"
        "def writer(cpu):\n"
        "    ATA(cpu).write_sectors(%d, b'\\xab' * 512)\n"
        "guests = [bad, writer]\n" % LBA)
    rc, out, err = gqemu(capsys, "run", s, "--drive",
                         "file=blkdebug:%s:%s,format=raw" % (conf, img))
    assert rc == 4 and out == ""
    assert err.startswith(io_error_line() + "gqemu run: the VM stays paused (io-error); "
                          "the failed request was not completed\n"
                          "gqemu run: the guest on vCPU 0 raised an exception:\n")
    assert err.endswith("ValueError: vCPU 0 broke\n")


def test_a_guest_that_leaves_a_failing_write_behind(tmp_path, img):
    """The guest ends without waiting for its write; the write fails while
    the machine drains: the VM stops all the same, run() says so until
    cont, and the retry lands the data."""
    conf = blkdebug(tmp_path, "write_aio", 28)

    def guest(cpu):
        from gqemu.guest.ata import ATA
        ata = ATA(cpu)
        ata.command(0x30, LBA, 1)
        ata.wait_drq("write")
        cpu.outsw(0x1F0, PATTERN)

    m = Machine(drive_config(["file=blkdebug:%s:%s,format=raw" % (conf, img)]))
    try:
        m.add_cpu(guest)
        assert m.run() == "io-error"
        assert m.run() == "io-error"
        assert sector(img, LBA) != PATTERN
        assert m.cont()
        assert m.run() == "shutdown"
    finally:
        m.close()
    assert sector(img, LBA) == PATTERN
