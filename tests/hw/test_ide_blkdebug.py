"""rerror/werror through real fault injection (blkdebug under raw), as
reliability 4.1/4.3 and T48 set them up."""
from __future__ import annotations

import pytest

from gqemu.block.blk_error import blk_is_stopped, blk_resume
from tests.hw.rig import Rig, make_disk
from tests.hw.test_ide_ata import NSECT, issue, sector, wait_status
from tests.hw.test_ide_bmdma import BM, EOT, prds


def blkdebug(tmp_path, rules):
    disk = make_disk(tmp_path / "d.img", NSECT)
    conf = tmp_path / "bd.conf"
    conf.write_text("".join('[inject-error]\nevent = "%s"\nerrno = "%d"\n%s' % (ev, err, extra)
                            for ev, err, extra in rules))
    return disk, "blkdebug:%s:%s" % (conf, disk)


def test_read_error_report(tmp_path):
    disk, spec = blkdebug(tmp_path, [("read_aio", 5, "")])
    rig = Rig([spec], {"rerror": "report"})
    try:
        issue(rig, 0x20, lba=7, count=1)
        assert wait_status(rig) == 0x41 and rig.inb(0x1F1) == 0x04
        assert rig.inw(0x1F0) == 0
        issue(rig, 0xC8, lba=7, count=1)           # DMA: the same, BM stops
        prds(rig, [(0x2000, 512 | EOT)])
        rig.outb(BM, 0x09)
        rig.settle()
        assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
        assert rig.inb(BM + 2) & 0x01 == 0
    finally:
        rig.close()


def test_read_error_ignore(tmp_path):
    disk, spec = blkdebug(tmp_path, [("read_aio", 5, 'once = "on"\n')])
    rig = Rig([spec], {"rerror": "ignore"})
    try:
        issue(rig, 0x20, lba=7, count=2)
        assert wait_status(rig) == 0x58 and rig.inb(0x1F1) == 0   # the failed block
        rig.insw(0x1F0, 256)
        assert wait_status(rig) == 0x58 and rig.insw(0x1F0, 256) == sector(8)
    finally:
        rig.close()


@pytest.mark.parametrize("err", [5, 28])
def test_write_error_enospc_policy(tmp_path, err):
    disk, spec = blkdebug(tmp_path, [("write_aio", err, 'once = "on"\n')])
    rig = Rig([spec])                              # werror default: enospc
    try:
        issue(rig, 0x30, lba=9, count=1)
        rig.outsw(0x1F0, b"\x33" * 512)
        rig.settle()
        if err == 28:
            assert rig.inb(0x1F7) == 0x50 and blk_is_stopped(rig.blks[0])
            blk_resume(rig.blks[0])
            rig.drain()
            rig.settle()
            assert rig.inb(0x1F7) == 0x50 and not blk_is_stopped(rig.blks[0])
        else:
            assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
    finally:
        rig.close()
    assert (disk.read_bytes()[9 * 512:10 * 512] == b"\x33" * 512) == (err == 28)
