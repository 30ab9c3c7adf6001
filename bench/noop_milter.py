"""A pymilter milter that accepts everything: the floor of pymilter itself.

It negotiates only end-of-message (every other callback is @nocallback, so
Postfix skips those round trips), which is the best any pymilter milter can do.
Run: `.venv/bin/python bench/noop_milter.py unix:/path/noop.sock`.
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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: noop_milter.py unix:/path/to/socket", file=sys.stderr)
        return 2
    Milter.factory = NoopMilter
    os.umask(0o011)  # Postfix (user postfix) must be able to connect
    Milter.set_flags(0)  # no header/body modifications requested
    Milter.runmilter("noop", argv[1], 600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
