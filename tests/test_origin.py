"""Origin classification: which mail is ours to inspect."""

from __future__ import annotations

import pytest

from postwarden.config import OutboundConfig
from postwarden.message import Origin
from postwarden.milter.origin import classify

CFG = OutboundConfig(internal_networks=["192.0.2.0/24", "2001:db8::/32"])


@pytest.mark.parametrize("addr, port, daemon, auth, expected", [
    ("127.0.0.1", 0, "mail.example.com", "", Origin.LOCAL),  # sendmail / pickup
    ("::1", 0, "mail.example.com", "", Origin.LOCAL),
    ("198.51.100.7", 41000, "smtpd", "alice", Origin.SUBMISSION),  # SASL anywhere
    ("198.51.100.7", 41000, "ORIGINATING", "", Origin.SUBMISSION),
    ("192.0.2.9", 41000, "smtpd", "", Origin.INTERNAL),
    ("2001:db8::5", 41000, "smtpd", "", Origin.INTERNAL),
    ("198.51.100.7", 41000, "smtpd", "", Origin.INBOUND),
    ("127.0.0.1", 41000, "smtpd", "", Origin.INBOUND),  # loopback TCP, not listed
    ("", 0, "", "", Origin.LOCAL),
    ("not-an-ip", 25, "smtpd", "", Origin.INBOUND),
])
def test_classify(addr: str, port: int, daemon: str, auth: str, expected: Origin) -> None:
    assert classify(CFG, addr, port, daemon, auth) is expected


def test_local_mail_can_be_declared_not_outbound() -> None:
    cfg = OutboundConfig(local_is_outbound=False)
    assert classify(cfg, "127.0.0.1", 0, "", "") is Origin.INBOUND
