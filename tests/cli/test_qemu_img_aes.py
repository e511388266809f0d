"""qcow2 legacy AES encryption (iotests 134, 158): the same script run with
qemu-img/qemu-io 7.2 and with gqemu's prints the same and leaves the same
image files, byte for byte (the cipher has no random part: the IV is the
guest sector number), and each tool reads what the other wrote.  The
pure-Python AES gives the bytes the ``cryptography`` backend gives."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

import difftools
from gqemu.block import crypto_aes
from gqemu.cli import qemu_io as gio

pytestmark = pytest.mark.timeout(180)

SECRET = "--object secret,id=sec0,data=astrochicken"
SPEC = "driver=qcow2,file.filename=t.qcow2,encrypt.key-secret=sec0"
CHAIN = ("driver=qcow2,file.filename=o.qcow2,backing.driver=qcow2,"
         "backing.file.filename=t.qcow2,backing.encrypt.key-secret=sec0,"
         "encrypt.key-secret=sec0")

SCRIPT = r"""
S="%(secret)s"
qemu-img create -f qcow2 $S -o encryption=on,encrypt.key-secret=sec0 t.qcow2 4M
qemu-img info t.qcow2 | grep -v 'disk size'
qemu-img info --output=json t.qcow2 | grep -v actual-size
qemu-io -c "read 0 512" t.qcow2
qemu-io $S -c "read 0 512" --image-opts driver=qcow2,file.filename=t.qcow2,encrypt.key-secret=sec1
qemu-io $S -c "read 0 512" --image-opts %(spec)s,encrypt.format=luks
qemu-io $S -c "write -P 0xb 512 512" -c "write -P 0xc 100k 3k" -c "write -z 1M 64k" \
    -c "write -P 0xd 2M 1M" -c "write -P 0xe 3M 4096" --image-opts %(spec)s
qemu-io $S -c "read -P 0 0 512" -c "read -P 0xb 512 512" -c "read -P 0 1k 99k" \
    -c "read -P 0xc 100k 3k" -c "read -P 0 103k 1k" -c "read -P 0xd 2M 1M" -c info \
    -c map --image-opts %(spec)s
qemu-io $S -c "read -P 0xd 2M 1M" --image-opts %(spec)s,encrypt.format=aes
qemu-io --object secret,id=sec0,data=platypus -c "read -P 0xd 2M 1M" --image-opts %(spec)s
qemu-io $S -c "read -P 0xe 3M 4096" 'json:{"driver": "qcow2", "file": {"filename": "t.qcow2"}, "encrypt": {"key-secret": "sec0"}}'
qemu-img map $S --output=json --image-opts %(spec)s
qemu-img check $S --image-opts %(spec)s
qemu-img create -f qcow2 -u $S -o encryption=on,encrypt.key-secret=sec0 -b t.qcow2 -F qcow2 o.qcow2 4M
qemu-io $S -c "write -P 0xe 0 1024" -c "write -P 0xf 2M 512" --image-opts %(chain)s
qemu-io $S -c "read -P 0xe 0 1024" -c "read -P 0 1024 63k" -c "read -P 0xb 512 512" \
    -c "read -P 0xf 2M 512" -c "read -P 0xd 2M+512 1M-512" --image-opts %(chain)s
qemu-img create -f qcow2 -o encrypt.format=aes,encryption=on n.qcow2 1M
qemu-img create -f qcow2 -o encrypt.key-secret=sec0 n.qcow2 1M
qemu-img create -f qcow2 $S -o encrypt.format=aes,encrypt.key-secret=sec0,encrypt.hash-alg=sha256 n.qcow2 1M
qemu-img create -f qcow2 $S -o encryption=on,encrypt.key-secret=nope n.qcow2 1M
qemu-io -c "read 0 512" --image-opts driver=qcow2,file.filename=n.qcow2,encrypt.format=aes
qemu-io --object secret,id=sec0 -c quit
qemu-io --object secret,id=sec0,data=x,bar=1 -c quit
md5sum t.qcow2 o.qcow2
""" % {"secret": SECRET, "spec": SPEC, "chain": CHAIN}


def test_aes_outputs_and_files_are_qemus(tmp_path, qemu_img, qemu_io):
    real, ours = difftools.both(SCRIPT, tmp_path, qemu_img, qemu_io)
    assert "encrypted: yes" in real and "Pattern verification failed" in real
    assert ours == real


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True)


def test_aes_cross_read(tmp_path, qemu_img, qemu_io):
    """Sectors gqemu encrypts (data and copy-on-write) decrypt in qemu-io,
    and the other way round, at unaligned guest offsets."""
    g = str(difftools.gqemu_bin(tmp_path) / "qemu-io")
    img = str(tmp_path / "x.qcow2")
    spec = "driver=qcow2,file.filename=%s,encrypt.key-secret=k" % img
    obj = ["--object", "secret,id=k,data=a-longer-password-than-16"]
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", *obj, "-o",
                    "encryption=on,encrypt.key-secret=k,cluster_size=4k", img, "1M"], check=True)
    for writer, reader, off in ((g, qemu_io, 5 * 512), (qemu_io, g, 77 * 512)):
        w = _run(writer, *obj, "-c", "write -P 0x5a %d 9k" % off, "--image-opts", spec)
        assert w.returncode == 0, w
        r = _run(reader, *obj, "-c", "read -P 0x5a %d 9k" % off, "-c",
                 "read -P 0 %d 512" % (off - 512), "--image-opts", spec)
        assert "verification failed" not in r.stdout and r.returncode == 0, r
    assert _run(qemu_img, "check", *obj, "--image-opts", spec).returncode == 0


def test_pure_python_aes(tmp_path, qemu_io, qemu_img, monkeypatch):
    """FIPS-197's AES-128 example; CBC over sectors as the fast backend; an
    image written with the pure-Python AES reads back in qemu-io."""
    aes = crypto_aes._PyAES128(bytes(range(16)))
    block = struct.unpack(">4I", bytes.fromhex("00112233445566778899aabbccddeeff"))
    enc = aes.encrypt(*block)
    assert struct.pack(">4I", *enc).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert aes.decrypt(*enc) == block
    data = bytearray(os.urandom(2048))
    pure = crypto_aes.QCryptoBlockQcow("astrochicken", pure=True)
    a = bytearray(data)
    pure.encrypt(512 * 12345, a)
    assert crypto_aes._backend() is not None, "the tests need cryptography (the test extra)"
    b = bytearray(data)
    crypto_aes.QCryptoBlockQcow("astrochicken").encrypt(512 * 12345, b)
    assert a == b
    pure.decrypt(512 * 12345, a)
    assert a == data
    img = str(tmp_path / "p.qcow2")
    spec = "driver=qcow2,file.filename=%s,encrypt.key-secret=sec0" % img
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", *SECRET.split(), "-o",
                    "encryption=on,encrypt.key-secret=sec0", img, "1M"], check=True)
    monkeypatch.setattr(crypto_aes, "_BACKEND", False)
    monkeypatch.setattr(sys, "argv", ["qemu-io"])
    from gqemu.block import crypto_secret
    monkeypatch.setattr(crypto_secret, "SECRETS", {})
    assert gio.main(["qemu-io", *SECRET.split(), "-c", "write -P 0x33 1536 2k",
                     "--image-opts", spec]) == 0
    r = _run(qemu_io, *SECRET.split(), "-c", "read -P 0x33 1536 2k", "-c", "read -P 0 0 1536",
             "--image-opts", spec)
    assert "verification failed" not in r.stdout and r.returncode == 0, r


def test_secrets_are_per_run(tmp_path, monkeypatch, capsys):
    """Each in-process run starts with no objects, as a new qemu-img
    process: the same --object twice in a row is no duplicate."""
    from gqemu.cli import qemu_img as gimg
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    args = ["create", "-q", "-f", "qcow2", *SECRET.split(), "-o",
            "encryption=on,encrypt.key-secret=sec0"]
    assert gimg.main(args + ["a.qcow2", "1M"]) == 0
    assert gimg.main(args + ["b.qcow2", "1M"]) == 0
    assert gimg.main(["create", "-q", "-f", "qcow2", "-o",
                      "encryption=on,encrypt.key-secret=sec0", "c.qcow2", "1M"]) == 1
    assert "No secret with id 'sec0'" in capsys.readouterr().err
