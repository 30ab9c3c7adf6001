"""A loopback DNS forwarder that never answers for some zones: "a list that times out".

Queries for names under `silent` zones are swallowed; everything else is relayed
to the fixture Knot server and its answer returned. The resolver under test
points here, so one blocklist is really unreachable while the rest answer.
"""

from __future__ import annotations

import socket
import socketserver
import threading

import dns.message
import dns.rdatatype

from harness import free_port


class DnsDropper:
    def __init__(self, upstream_port: int, silent: tuple[str, ...]) -> None:
        self.port = free_port()
        self.silent = tuple(z.lower().rstrip(".") for z in silent)
        self.dropped = 0
        self.seen: list[str] = []  # every "NAME TYPE" asked, in order (a counting forwarder)
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                try:
                    q = dns.message.from_wire(data).question[0]
                    name = q.name.to_text().lower()
                except Exception:
                    return
                name = name.rstrip(".")
                outer.seen.append(f"{name} {dns.rdatatype.to_text(q.rdtype)}")
                if any(name == z or name.endswith("." + z) for z in outer.silent):
                    outer.dropped += 1
                    return
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                    up.settimeout(5)
                    up.sendto(data, ("127.0.0.1", upstream_port))
                    try:
                        reply, _ = up.recvfrom(65535)
                    except OSError:
                        return
                sock.sendto(reply, self.client_address)

        self.server = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
