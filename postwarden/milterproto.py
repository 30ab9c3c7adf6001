"""A minimal milter-protocol client: connect and complete the option negotiation.

Postfix opens every milter connection with SMFIC_OPTNEG; a milter that answers it
is alive and speaks the protocol. `selfcheck` (milter.reachable) and `status` ask
the socket exactly that, then say goodbye (SMFIC_QUIT), so the daemon sees an
ordinary short connection and no message.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

MILTER_VERSION = 6
SMFIF_ALL = 0x1FF
SMFIP_ALL = 0x1FFFFF
NEGOTIATE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Negotiation:
    ok: bool
    error: str = ""
    errno: int = 0
    version: int = 0
    actions: int = 0
    protocol: int = 0


def _packet(cmd: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload) + 1) + cmd + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the milter closed the connection during negotiation")
        buf += chunk
    return buf


def negotiate(address: str, timeout: float = NEGOTIATE_TIMEOUT) -> Negotiation:
    """Connect and complete SMFIC_OPTNEG, then say goodbye (SMFIC_QUIT)."""
    try:
        if address.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address[5:])
            except OSError:
                sock.close()
                raise
        else:
            rest = address.split(":", 1)[1]
            if "@" in rest:  # Sendmail-style inet:port@host
                port, _, host = rest.partition("@")
            else:
                host, _, port = rest.rpartition(":")
            sock = socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                            timeout)
    except (OSError, ValueError) as e:
        return Negotiation(False, _why(e), getattr(e, "errno", 0) or 0)
    try:
        sock.sendall(_packet(b"O", struct.pack(">III", MILTER_VERSION, SMFIF_ALL, SMFIP_ALL)))
        (length,) = struct.unpack(">I", _recv_exact(sock, 4))
        if not 13 <= length <= 65536:
            return Negotiation(False, f"bad negotiation reply length {length}")
        pkt = _recv_exact(sock, length)
        if pkt[:1] != b"O":
            return Negotiation(False, f"negotiation answered {pkt[:1]!r}, not OPTNEG")
        version, actions, protocol = struct.unpack(">III", pkt[1:13])
        try:
            sock.sendall(_packet(b"Q"))
        except OSError:
            pass
        return Negotiation(True, version=version, actions=actions, protocol=protocol)
    except (OSError, struct.error) as e:
        return Negotiation(False, f"negotiation failed: {_why(e)}", getattr(e, "errno", 0) or 0)
    finally:
        sock.close()


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return "no answer (timeout)"
    strerror = getattr(e, "strerror", None)
    return str(strerror or e) or type(e).__name__
