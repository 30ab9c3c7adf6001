"""A pymilter milter that accepts everything: the floor of pymilter itself.

It negotiates only end-of-message (every other callback is @nocallback, so
Postfix skips those round trips), which is the best any pymilter milter can do.
With --collect it receives what postwarden must receive to inspect a message
(connect, envelope, every header, the body; all no-reply, headers with their
leading space) and only keeps it: the floor of any pymilter milter that looks at
the content, to tell the protocol's cost from postwarden's own.
Run: `.venv/bin/python bench/noop_milter.py [--collect] unix:/path/noop.sock`.
"""

from __future__ import annotations

import os
import sys

import Milter


class NoopMilter(Milter.Base):
    @Milter.nocallback
    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def hello(self, hostname: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def envfrom(self, mailfrom: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def envrcpt(self, rcpt: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def header(self, name: str, value: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def eoh(self) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def body(self, chunk: bytes) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def unknown(self, cmd: str) -> int:
        return Milter.CONTINUE

    def eom(self) -> int:
        return Milter.ACCEPT


@Milter.header_leading_space
class CollectMilter(NoopMilter):
    def __init__(self) -> None:
        super().__init__()
        self.peer: tuple[str, object] = ("", None)
        self.envelope: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []

    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        self.peer = (hostname, hostaddr)
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.envelope, self.headers, self.chunks = [mailfrom], [], []
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, rcpt: str, *params: str) -> int:
        self.envelope.append(rcpt)
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        b"".join(self.chunks)
        return Milter.ACCEPT


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "--collect"]
    if len(args) != 1:
        print("usage: noop_milter.py [--collect] unix:/path/to/socket", file=sys.stderr)
        return 2
    Milter.factory = CollectMilter if "--collect" in argv else NoopMilter
    os.umask(0o011)  # Postfix (user postfix) must be able to connect
    Milter.set_flags(0)  # no header/body modifications requested
    Milter.runmilter("noop", args[0], 600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
