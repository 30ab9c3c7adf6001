"""A milter that answers 451 (tempfail) at end of message the first time it sees a
Message-ID, and accepts it the next time: a later milter, or a relay's cleanup,
failing after postwarden already counted the message, so the client retries.

Run: `python tests/harness/tempfail_milter.py unix:/path/tempfail.sock`.
"""

from __future__ import annotations

import os
import sys
import threading

import Milter

_seen: set[str] = set()
_lock = threading.Lock()


class TempfailOnce(Milter.Base):
    def __init__(self) -> None:
        self.mid = ""

    def header(self, name: str, value: str) -> int:
        if name.lower() == "message-id":
            self.mid = value.strip()
        return Milter.CONTINUE

    def eom(self) -> int:
        with _lock:
            first = self.mid not in _seen
            _seen.add(self.mid)
        if first:
            self.setreply("451", "4.3.0", "tempfail_milter: try again")
            return Milter.TEMPFAIL
        return Milter.ACCEPT


def main() -> None:
    os.umask(0o000)  # Postfix's smtpd (user postfix) must reach the socket
    Milter.factory = TempfailOnce
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Milter.runmilter("tempfail", sys.argv[1], 60)


if __name__ == "__main__":
    main()
