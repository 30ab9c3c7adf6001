"""A loopback DNS forwarder that never answers some questions: "a server that times out".

Queries for names under `silent` zones, or for which `silence(name, type)` is
true, are swallowed; everything else is relayed to the fixture Knot server
(UDP to UDP, TCP to TCP, so a truncated answer is completed as usual) and its
answer returned. The resolver under test points here, so one blocklist (or one
record type of one name) is really unreachable while the rest answer.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Callable

import dns.message
import dns.rdatatype

from harness import free_port


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


class DnsDropper:
    def __init__(self, upstream_port: int, silent: tuple[str, ...] = (),
                 silence: Callable[[str, str], bool] | None = None) -> None:
        self.port = free_port()
        self.silent = tuple(z.lower().rstrip(".") for z in silent)
        self.silence = silence  # (lowercased name without the dot, "TXT") -> drop it
        self.dropped = 0
        self.forwarded = 0  # queries relayed to the fixture server
        self.seen: list[str] = []  # every "NAME TYPE" asked, in order (a counting forwarder)
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                if outer._drops(data):
                    return
                outer.forwarded += 1
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                    up.settimeout(5)
                    up.sendto(data, ("127.0.0.1", upstream_port))
                    try:
                        reply, _ = up.recvfrom(65535)
                    except OSError:
                        return
                sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = _recv_exact(self.request, 2)
                if not head:
                    return
                data = _recv_exact(self.request, struct.unpack(">H", head)[0])
                if not data or outer._drops(data):
                    return
                try:
                    with socket.create_connection(("127.0.0.1", upstream_port), 5) as up:
                        up.sendall(head + data)
                        rhead = _recv_exact(up, 2)
                        reply = _recv_exact(up, struct.unpack(">H", rhead)[0]) if rhead else b""
                    if reply:
                        self.request.sendall(rhead + reply)
                except OSError:
                    return

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp)
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        self.server.daemon_threads = self.tcp.daemon_threads = True
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True)
                        for s in (self.server, self.tcp)]

    def _drops(self, data: bytes) -> bool:
        try:
            question = dns.message.from_wire(data).question[0]
        except Exception:
            return True
        # the labels as sent (to_text() would escape spaces, quotes, ...)
        name = ".".join(lb.decode("utf-8", "surrogateescape")
                        for lb in question.name.labels if lb).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.seen.append(f"{name} {rdtype}")
        drop = any(name == z or name.endswith("." + z) for z in self.silent) or (
            self.silence is not None and self.silence(name, rdtype))
        if drop:
            self.dropped += 1
        return drop

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        for s in (self.server, self.tcp):
            s.shutdown()
            s.server_close()
