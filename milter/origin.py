"""Whose mail is this? Only outbound mail (local, submission, internal) is inspected."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from postwarden.config import OutboundConfig
from postwarden.message import Origin

_LOOPBACK = ("127.0.0.1", "::1")


@lru_cache(maxsize=64)
def _networks(
    nets: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in nets)


def classify(
    cfg: OutboundConfig,
    client_addr: str,
    client_port: int,
    daemon_name: str,
    auth_user: str,
) -> Origin:
    """Classify one message.

    Postfix presents sendmail/pickup mail as a simulated session from 127.0.0.1 (or
    ::1) port 0; a real TCP client never has port 0. SASL authentication or a
    daemon name marked as submission (`-o milter_macro_daemon_name=ORIGINATING`)
    means submission, whatever the client address.
    """
    if auth_user or (daemon_name and daemon_name in cfg.submission_daemon_names):
        return Origin.SUBMISSION
    if client_port == 0 and (client_addr in _LOOPBACK or client_addr == ""):
        return Origin.LOCAL if cfg.local_is_outbound else Origin.INBOUND
    if _is_internal(client_addr, tuple(cfg.internal_networks)):
        return Origin.INTERNAL
    return Origin.INBOUND


@lru_cache(maxsize=4096)
def _is_internal(client_addr: str, nets: tuple[str, ...]) -> bool:
    """Per address and network list: parsing the address cost more than the rest of
    classify (the same web servers and relays connect again and again)."""
    try:
        addr = ipaddress.ip_address(client_addr)
    except ValueError:
        return False
    return any(addr in net for net in _networks(nets))
