"""The far end of the private Postfix: an SMTP server that keeps every message."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

from harness import free_port


@dataclass
class Delivered:
    mail_from: str
    rcpts: list[str]
    data: bytes

    def header(self, name: str) -> str | None:
        import email
        import email.policy

        msg = email.message_from_bytes(self.data, policy=email.policy.compat32)
        v = msg.get(name)
        return None if v is None else str(v)


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.sink.cond:
            self.sink.messages.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos),
                                                bytes(envelope.original_content)))
            self.sink.cond.notify_all()
        return "250 2.0.0 Ok: stored"


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Delivered] = []
        self.cond = threading.Condition()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                     decode_data=False, data_size_limit=None,
                                     timeout=60)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def clear(self) -> None:
        with self.cond:
            self.messages.clear()

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Delivered]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"sink has {len(self.messages)} messages, waited for {n}")
                self.cond.wait(left)
            return list(self.messages)

    def find(self, marker: str) -> list[Delivered]:
        with self.cond:
            return [m for m in self.messages if marker.encode() in m.data]
