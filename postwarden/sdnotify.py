"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

With Type=notify systemd counts the service as started only on READY=1, so
units ordered after it (postfix@-.service) wait until the milter socket listens.
Outside systemd NOTIFY_SOCKET is unset and every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", ...); True if a manager got it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError:
        return False
    return True
