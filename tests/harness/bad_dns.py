"""A scripted nameserver for DNS trouble: slow, SERVFAIL, truncated (forcing TCP), silent.

Knot serves the normal fixture zones; this one misbehaves on purpose, the way
dnspython's own tests run a nameserver in-process. Records are served from a dict
so a truncated UDP answer can be completed over TCP.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from harness import free_port


class BadDns:
    """mode: 'ok' | 'slow' | 'servfail' | 'truncate' | 'silent'; `delay` for slow."""

    def __init__(self, records: dict[tuple[str, str], list[str]] | None = None) -> None:
        self.port = free_port()
        self.mode = "ok"
        self.delay = 3.0
        self.records = {(n.lower().rstrip("."), t.upper()): v
                        for (n, t), v in (records or {}).items()}
        self.udp_queries = 0
        self.tcp_queries = 0
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                outer.udp_queries += 1
                reply = outer._answer(data, tcp=False)
                if reply is not None:
                    try:
                        sock.sendto(reply, self.client_address)
                    except OSError:  # the server was stopped while we slept
                        pass

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                raw = self.request.recv(2)
                if len(raw) < 2:
                    return
                (n,) = struct.unpack(">H", raw)
                data = b""
                while len(data) < n:
                    chunk = self.request.recv(n - len(data))
                    if not chunk:
                        return
                    data += chunk
                outer.tcp_queries += 1
                reply = outer._answer(data, tcp=True)
                if reply is not None:
                    try:
                        self.request.sendall(struct.pack(">H", len(reply)) + reply)
                    except OSError:
                        pass

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp)
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        self.udp.daemon_threads = self.tcp.daemon_threads = True
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True)
                        for s in (self.udp, self.tcp)]

    def _answer(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return None
        mode = self.mode
        if mode == "silent":
            return None
        if mode == "slow":
            time.sleep(self.delay)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        if mode == "servfail":
            r.set_rcode(dns.rcode.SERVFAIL)
            return r.to_wire()
        if mode == "truncate" and not tcp:
            r.flags |= dns.flags.TC
            return r.to_wire()
        question = q.question[0]
        name = question.name.to_text().lower().rstrip(".")
        rdtype = dns.rdatatype.to_text(question.rdtype)
        values = self.records.get((name, rdtype))
        if values is None:
            r.set_rcode(dns.rcode.NXDOMAIN if not any(k[0] == name for k in self.records)
                        else dns.rcode.NOERROR)
        else:
            r.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", rdtype, values))
        return r.to_wire()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        for s in (self.udp, self.tcp):
            s.shutdown()
            s.server_close()


def closed_port() -> int:
    """A loopback UDP port where nothing listens (queries there get no answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
