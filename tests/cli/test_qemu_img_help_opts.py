"""gqemu-img's help and the options qemu-img 7.2 lists for check and
convert, through both tools (the wrappers are named qemu-img)."""
from __future__ import annotations

import difftools


def _body(help_text: str) -> list[str]:
    # the version lines and the format list are each tool's own
    lines = help_text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("usage: "))
    return [ln for ln in lines[start:] if not ln.startswith("Supported formats: ")]


def test_help_is_qemu_imgs(tmp_path, qemu_img, qemu_io):
    real, ours = difftools.both("qemu-img --help; echo rc=$?", tmp_path, qemu_img, qemu_io)
    assert _body(ours) == _body(real)
    formats = next(ln for ln in ours.splitlines() if ln.startswith("Supported formats: "))
    assert {"raw", "qcow2", "qcow", "file"} <= set(formats.split()[2:])


def test_check_source_cache_and_convert_rate_limit(tmp_path, qemu_img, qemu_io):
    script = """
qemu-img create -q -f qcow2 "$D/a.q" 1M
qemu-io -c 'write -P 7 0 64k' "$D/a.q" >/dev/null
for args in "-T none" "-T directsync --output=json" "-T bogus" "-T"; do
    qemu-img check $args "$D/a.q"; echo "check $args: $?"
done
qemu-img check --output=x; echo "no file, bad output: $?"
for r in 1M 0 1X -5 9E; do
    qemu-img convert -r $r -O raw "$D/a.q" "$D/b.raw"; echo "convert -r $r: $?"
done
cmp "$D/b.raw" <(qemu-img convert -O raw "$D/a.q" /dev/stdout 2>/dev/null) && echo same
"""
    real, ours = difftools.both(script, tmp_path, qemu_img, qemu_io)
    assert ours == real
    assert "check -T none: 0" in real
