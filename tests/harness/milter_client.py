"""A minimal milter-protocol (version 6) client: readiness probe and load driver.

Speaks to a milter socket the way Postfix does, without Postfix: negotiate, send a
session's macros, envelope, headers and body, and read the end-of-message replies.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

SMFIF_ALL = 0x1FF
SMFIP_ALL = 0x1FFFFF


def _packet(cmd: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload) + 1) + cmd + payload


def _z(*parts: str | bytes) -> bytes:
    return b"".join((p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p)
                    + b"\0" for p in parts)


@dataclass
class Reply:
    code: bytes
    actions: list[tuple[bytes, bytes]] = field(default_factory=list)  # (cmd, payload)


class MilterClient:
    def __init__(self, address: str, timeout: float = 30.0) -> None:
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address[5:])
            except OSError:
                self.sock.close()
                raise
        else:
            port, _, host = address.split(":", 1)[1].partition("@")
            self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout)
        self.protocol = 0
        self.buf = b""

    def close(self) -> None:
        try:
            self.sock.sendall(_packet(b"Q"))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> tuple[bytes, bytes]:
        while len(self.buf) < 4:
            self._fill()
        (n,) = struct.unpack(">I", self.buf[:4])
        while len(self.buf) < 4 + n:
            self._fill()
        pkt, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return pkt[:1], pkt[1:]

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("milter closed the connection")
        self.buf += chunk

    def negotiate(self) -> None:
        self.sock.sendall(_packet(b"O", struct.pack(">III", 6, SMFIF_ALL, SMFIP_ALL)))
        cmd, payload = self._read()
        if cmd != b"O":
            raise ConnectionError(f"bad negotiation reply {cmd!r}")
        _ver, _act, self.protocol = struct.unpack(">III", payload[:12])

    def _noreply(self, bit: int) -> bool:
        return bool(self.protocol & bit)

    def _step(self, cmd: bytes, payload: bytes, skip_bit: int, noreply_bit: int) -> Reply | None:
        if self.protocol & skip_bit:
            return None
        self.sock.sendall(_packet(cmd, payload))
        if self._noreply(noreply_bit):
            return None
        return self._reply()

    def _reply(self) -> Reply:
        reply = Reply(b"")
        while True:
            cmd, payload = self._read()
            if cmd in (b"c", b"a", b"r", b"t", b"d", b"y"):  # continue/accept/reject/...
                reply.code = cmd
                reply.actions.append((cmd, payload))
                return reply
            reply.actions.append((cmd, payload))  # modifications: h, m, i, q, ...

    def raw(self, cmd: bytes, payload: bytes = b"") -> None:
        """Send one packet exactly as given: for malformed input that Postfix never sends."""
        self.sock.sendall(_packet(cmd, payload))

    def connect_cmd(self, client: tuple[str, int]) -> Reply | None:
        """The SMTP-connect command (its reply, unless negotiated away)."""
        host, port = client
        return self._step(b"C", _z("localhost") + b"4" + struct.pack(">H", port) + _z(host),
                          0x01, 0x1000)

    def macros(self, stage: bytes, values: dict[str, str]) -> None:
        payload = stage + b"".join(_z(k, v) for k, v in values.items())
        self.sock.sendall(_packet(b"D", payload))

    def message(self, client: tuple[str, int], helo: str, mail_from: str, rcpts: list[str],
                headers: list[tuple[str, str]], body: bytes,
                macros: dict[str, dict[str, str]] | None = None) -> Reply:
        """One whole message; returns the end-of-message reply with its actions."""
        self.start(client, mail_from, macros)
        return self.finish(rcpts, headers, body, macros)

    def start(self, client: tuple[str, int], mail_from: str,
              macros: dict[str, dict[str, str]] | None = None) -> None:
        """Connect and MAIL FROM: the message is in flight from here on."""
        m = macros or {}
        if "C" in m:
            self.macros(b"C", m["C"])
        self.connect_cmd(client)
        if "M" in m:
            self.macros(b"M", m["M"])
        self._step(b"M", _z(f"<{mail_from}>"), 0x04, 0x4000)

    def finish(self, rcpts: list[str], headers: list[tuple[str, str]], body: bytes,
               macros: dict[str, dict[str, str]] | None = None) -> Reply:
        """Recipients, headers, body and end of message; returns the eom reply."""
        m = macros or {}
        for r in rcpts:
            self._step(b"R", _z(f"<{r}>"), 0x08, 0x8000)
        for name, value in headers:
            self._step(b"L", _z(name, value), 0x20, 0x80)
        self._step(b"N", b"", 0x40, 0x40000)
        for i in range(0, len(body), 65535):
            self._step(b"B", body[i:i + 65535], 0x10, 0x80000)
        if "E" in m:
            self.macros(b"E", m["E"])
        self.sock.sendall(_packet(b"E"))
        reply = self._reply()
        self.sock.sendall(_packet(b"A"))  # abort: reset for the next message
        return reply


def handshake(address: str, timeout: float = 2.0) -> bool:
    """True when a milter answers a protocol negotiation on `address`."""
    try:
        with MilterClient(address, timeout) as c:
            c.negotiate()
            return True
    except OSError:
        return False
