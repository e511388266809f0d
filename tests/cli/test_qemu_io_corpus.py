"""gqemu-io against the real qemu-io: every script of tests/qemu-io/*.qio,
on raw and (once its driver is registered) qcow2 images.  Same output after
the timing figures are filtered, same exit status, same resulting image.
See tests/qemu-io/runner.py for the script format."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import qemu_io_corpus_runner as runner  # tests/qemu-io/runner.py, via conftest

# (script, format) -> what is missing below gqemu-io.  strict: a fix shows up.
KNOWN_GAPS = {
}


def _registered(fmt: str) -> bool:
    from gqemu.block import bdrv_drivers
    return fmt in bdrv_drivers


def _cases() -> list:
    cases = []
    for path in runner.corpus():
        script = runner.load(path)
        for fmt in runner.FORMATS:
            if fmt not in script.formats:
                continue
            marks = []
            gap = KNOWN_GAPS.get((script.name, fmt))
            if gap:
                marks.append(pytest.mark.xfail(reason=gap, strict=True))
            cases.append(pytest.param(path, fmt, id="%s-%s" % (script.name, fmt),
                                      marks=marks))
    return cases


def test_corpus_is_not_empty() -> None:
    assert len(runner.corpus()) >= 40


@pytest.mark.parametrize("path, fmt", _cases())
def test_qemu_io_script(path: Path, fmt: str, qemu_io: str, qemu_img: str,
                        tmp_path: Path) -> None:
    assert _registered(fmt), "the %s driver is not registered in gqemu.block" % fmt
    script = runner.load(path)
    q, g = runner.run_both(script, fmt, qemu_io, qemu_img, tmp_path)
    problems = runner.compare(script, fmt, q, g, qemu_img, tmp_path)
    assert not problems, "\n".join(problems)


def test_filter_keeps_everything_but_timing() -> None:
    text = ("read 512/512 bytes at offset 0\n"
            "512 bytes, 1 ops; 00.00 sec (3.679 MiB/sec and 7535.3407 ops/sec)\n"
            "wrote 512/512 bytes at offset 0\n"
            "512 bytes, 1 ops; 0:08:43.52 (0.978001 bytes/sec and 0.0019 ops/sec)\n"
            "512,1,0:00:00.00,4062589.266,7934.745\n")
    assert runner.filter_qemu_io(text) == (
        "read 512/512 bytes at offset 0\n"
        "512 bytes, 1 ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)\n"
        "wrote 512/512 bytes at offset 0\n"
        "512 bytes, 1 ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)\n"
        "512,1,TIME\n")
    # a different byte count or op count still shows
    assert runner.filter_qemu_io("1 KiB, 2 ops; 00.00 sec (1 KiB/sec and 1.0000 "
                                 "ops/sec)\n") != runner.filter_qemu_io(
        "1 KiB, 1 ops; 00.00 sec (1 KiB/sec and 1.0000 ops/sec)\n")


def test_runner_sees_a_difference(qemu_io: str, qemu_img: str,
                                  tmp_path: Path) -> None:
    """The comparison is not vacuous: different commands give problems."""
    a = tmp_path / "a.qio"
    a.write_text("write -P 1 0 512\n")
    s = runner.load(a)
    (tmp_path / "1").mkdir()
    q, g = runner.run_both(s, "raw", qemu_io, qemu_img, tmp_path / "1")
    g.stdout = g.stdout.replace("512", "513", 1)
    g.image = bytes(len(q.image or b""))
    problems = runner.compare(s, "raw", q, g, qemu_img, tmp_path / "1")
    assert any("images differ" in p for p in problems)
    assert any("gqemu-io stdout" in p for p in problems)
    assert shutil.which("qemu-io")
