"""A minimal GDB remote serial protocol client for QEMU's gdbstub (-gdb).

Only what record.py needs: hardware breakpoints, continue, single step,
reading the instruction pointer and guest memory.  Packets are
``$data#checksum``, acknowledged with ``+`` (no no-ack mode).
"""
from __future__ import annotations

import socket
from typing import Optional

MEM_CHUNK = 1024            # QEMU's gdbstub packets are at most 4 KiB of hex


class GdbError(Exception):
    pass


class GdbRemote:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    # -- framing -------------------------------------------------------------

    def _byte(self) -> bytes:
        if not self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("gdbstub closed the connection")
            self.buf = data
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def send(self, data: str) -> None:
        cs = sum(data.encode()) & 0xFF
        pkt = ("$%s#%02x" % (data, cs)).encode()
        while True:
            self.sock.sendall(pkt)
            ack = self._byte()
            if ack == b"+":
                return
            if ack != b"-":
                raise GdbError("expected an ack, got %r" % ack)

    def recv(self) -> str:
        while self._byte() != b"$":
            pass
        data = b""
        while True:
            b = self._byte()
            if b == b"#":
                break
            data += b
        cs = self._byte() + self._byte()
        if int(cs, 16) != sum(data) & 0xFF:
            self.sock.sendall(b"-")
            return self.recv()
        self.sock.sendall(b"+")
        return data.decode()

    def cmd(self, data: str) -> str:
        self.send(data)
        return self.recv()

    # -- commands ------------------------------------------------------------

    def _ok(self, data: str) -> None:
        r = self.cmd(data)
        if r != "OK":
            raise GdbError("%s: %r" % (data, r))

    def hbreak(self, addr: int) -> None:
        self._ok("Z1,%x,1" % addr)

    def hdelete(self, addr: int) -> None:
        self._ok("z1,%x,1" % addr)

    def resume(self, step: bool = False) -> Optional[str]:
        """Continue (or single-step) until the next stop: the stop reply,
        or None when QEMU exited or closed the connection."""
        try:
            r = self.cmd("s" if step else "c")
        except EOFError:
            return None
        return None if r[:1] in ("W", "X") else r

    def pc(self) -> int:
        """The instruction pointer: x86-64's register 16 (rip) in the ``g``
        packet, after 16 8-byte registers (``p`` needs the target XML)."""
        r = self.cmd("g")
        if len(r) < 17 * 16 or r.startswith("E"):
            raise GdbError("cannot read the registers: %r" % r[:40])
        return int.from_bytes(bytes.fromhex(r[16 * 16:17 * 16]), "little")

    def read(self, addr: int, n: int) -> bytes:
        out = b""
        while n:
            k = min(n, MEM_CHUNK)
            r = self.cmd("m%x,%x" % (addr, k))
            if r.startswith("E") or len(r) != 2 * k:
                raise GdbError("m%x,%x: %r" % (addr, k, r))
            out += bytes.fromhex(r)
            addr += k
            n -= k
        return out
