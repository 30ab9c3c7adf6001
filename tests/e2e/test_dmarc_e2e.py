"""DMARC discovery through the private Postfix: an unusable record at the From domain.

RFC 7489 6.6.3: the organizational domain's record is asked only when the From
domain's _dmarc answer holds no v=DMARC1 record at all. mail.example.test publishes
an unusable record (no valid p=, no rua=) under example.test's p=reject: receivers
apply no DMARC to it, so postwarden must not say dmarc.fail, must not hold it in
enforce mode, and must say why. Two v=DMARC1 records split the generations (RFC 7489:
no DMARC; RFC 9989 discards both and walks on to example.test), which is one
dmarc.generations_differ, never dmarc.fail. A subdomain with no record at all still
inherits p=reject and is held. Local mail (sendmail), enforce mode.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from harness.knot import DnsServer
from harness.milterproc import MilterProcess
from harness.postfix import Postfix
from harness.sink import Sink

pytestmark = pytest.mark.e2e

ZONE = """\
@ TXT "v=spf1 ip4:198.51.100.1 -all"
_dmarc TXT "v=DMARC1; p=reject"
mail A 192.0.2.10
_dmarc.mail TXT "v=DMARC1; p=rejected"
lists A 192.0.2.11
_dmarc.lists TXT "v=DMARC1; p=none"
_dmarc.lists TXT "v=DMARC1; p=quarantine"
news A 192.0.2.12
"""


def _mail(from_: str) -> tuple[str, bytes]:
    mid = f"{uuid.uuid4().hex}@dmarc-e2e.test"
    return mid, (f"From: {from_}\nTo: <bob@example.org>\nSubject: dmarc discovery\n"
                 f"Date: Tue, 01 Dec 2026 12:00:00 +0000\nMessage-ID: <{mid}>\n\n"
                 "Hello.\n").encode()


def _findings(summary: dict[str, str]) -> set[str]:
    return set(summary["findings"].split(",")) - {"none"}


def test_unusable_from_domain_record_is_not_the_parents_reject(
        postfix: Postfix, dns_server: DnsServer, sink: Sink,
        start_milter: Callable[..., MilterProcess]) -> None:
    dns_server.zone("example.test", ZONE)
    m = start_milter({"mode": "enforce", "host": {"domains": ["example.com"]}})
    sent = {}
    for who in ("mail", "lists", "news"):
        mid, data = _mail(f"Web <web@{who}.example.test>")
        postfix.sendmail(data, "www-data@example.test", ["bob@example.org"])
        sent[who] = postfix.queue_id_for(mid)
    sink.wait_for(2)

    s = m.wait_summary(sent["mail"])
    assert "dmarc.fail" not in _findings(s) and "dmarc.none" in _findings(s)
    assert (s["dmarc"], s["dmarc_gen"], s["action"]) == ("none", "both", "accept")
    line = m.wait_line(rf"\]: {sent['mail']}: warning: dmarc.none: ")
    assert "no usable DMARC record for the From domain mail.example.test" in line
    assert "_dmarc.mail.example.test is unusable: p=rejected" in line
    assert "will be rejected" not in line

    s = m.wait_summary(sent["lists"])
    assert "dmarc.fail" not in _findings(s)
    assert "dmarc.generations_differ" in _findings(s)
    assert (s["dmarc"], s["dmarc_gen"], s["action"]) == ("fail", "9989", "accept")
    line = m.wait_line(rf"\]: {sent['lists']}: warning: dmarc.generations_differ: ")
    assert "RFC 7489 no DMARC (2 DMARC records at _dmarc.lists.example.test" in line
    assert "do not fall back to example.test" in line
    assert "RFC 9989 fails p=reject of example.test" in line

    # control: no record of its own, so example.test's p=reject applies and enforce holds
    s = m.wait_summary(sent["news"])
    assert "dmarc.fail" in _findings(s) and s["action"] == "hold"
    delivered = b"".join(d.data for d in sink.messages)
    assert b"web@mail.example.test" in delivered and b"web@lists.example.test" in delivered
    assert sent["news"] in postfix.held()
    postfix.postsuper("-d", sent["news"])
