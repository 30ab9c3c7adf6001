"""A scripted server that speaks RESP but is not Redis: it answers every command with
one fixed reply (`:1` by default), the way a misconfigured proxy or another service on
the Redis port would. postwarden must fail open against it, never crash."""

from __future__ import annotations

import socket
import threading

from harness import free_port


def _commands(buf: bytearray) -> int:
    """Complete RESP commands at the front of `buf` (removed); inline commands too."""
    n = 0
    while buf:
        if buf[:1] != b"*":  # inline command: one line
            end = buf.find(b"\r\n")
            if end < 0:
                return n
            del buf[:end + 2]
            n += 1
            continue
        pos = buf.find(b"\r\n")
        if pos < 0:
            return n
        count, i = int(buf[1:pos]), pos + 2
        for _ in range(count):
            end = buf.find(b"\r\n", i)
            if end < 0 or buf[i:i + 1] != b"$":
                return n
            size = int(buf[i + 1:end])
            i = end + 2 + size + 2
            if i > len(buf):
                return n
        del buf[:i]
        n += 1
    return n


class FakeRedis:
    def __init__(self, reply: bytes = b":1\r\n") -> None:
        self.reply = reply
        self.port = free_port()
        self.commands = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FakeRedis:
        self._thread.start()
        return self

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        buf = bytearray()
        conn.settimeout(0.5)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                n = _commands(buf)
                self.commands += n
                if n:
                    try:
                        conn.sendall(self.reply * n)
                    except OSError:
                        return

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)
