"""A message in flight across a SIGHUP is judged under one config, from MAIL FROM on.

The message starts (connect, MAIL FROM) under config A, the milter reloads config
B, then the message is finished. A classifies the client as internal and runs in
monitor mode; B classifies it as inbound and runs in enforce mode. The summary
line must show A for both: origin=internal (classified by A) and a would= key
(inspected in A's monitor mode). Classifying under A and inspecting under B would
log origin=internal without would=.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from harness.knot import DnsServer
from harness.milter_client import MilterClient
from harness.milterproc import MilterProcess

pytestmark = pytest.mark.e2e
CLIENT = ("192.0.2.80", 41000)
_n = itertools.count(1)


def settings(work: Path, dns: DnsServer, internal: bool) -> dict[str, Any]:
    return {
        "socket": f"unix:{work / 'pw.sock'}",
        "mode": "monitor" if internal else "enforce",
        "outbound": {"internal_networks": ["192.0.2.0/24"] if internal else ["127.0.0.0/8"]},
        "host": {"ips": ["192.0.2.25"], "hostname": "mail.example.com",
                 "domains": ["example.com"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 0.5,
                "message_budget": 1.0},
        "store": {"path": str(work / "state.db")},
        "log": {"target": "stderr"},
    }


def test_a_message_in_flight_across_sighup_sees_one_config(
        dns_server: DnsServer, e2e_base: Path) -> None:
    work = e2e_base / "reload-in-flight"
    proc = MilterProcess(work, work / "pw.sock", settings(work, dns_server, internal=True))
    proc.start()
    try:
        headers = [("From", " Alice <alice@example.com>"), ("To", " bob@example.net"),
                   ("Subject", " in flight"), ("Message-ID", " <flight@example.com>")]
        qid = f"RL{next(_n):08X}"
        macros = {"E": {"i": qid}}
        with MilterClient(f"unix:{proc.socket_path}", timeout=15) as c:
            c.negotiate()
            c.start(CLIENT, "alice@example.com", macros)
            proc.write_config(settings(work, dns_server, internal=False))
            proc.hup()
            proc.wait_line(r"reloaded: mode=enforce")
            reply = c.finish(["bob@example.net"], headers, b"Hello.\r\n", macros)
        assert reply.code in (b"a", b"c")
        s = proc.wait_summary(qid)
        assert s["origin"] == "internal"  # classified under A
        assert "would" in s  # and inspected under A (monitor), not B (enforce)

        qid2 = f"RL{next(_n):08X}"  # the next message is B's: inbound, not inspected
        with MilterClient(f"unix:{proc.socket_path}", timeout=15) as c:
            c.negotiate()
            c.message(CLIENT, "client.example.net", "alice@example.com",
                      ["bob@example.net"], headers, b"Hello.\r\n", {"E": {"i": qid2}})
        with MilterClient(f"unix:{proc.socket_path}", timeout=15) as c:  # a sync point
            c.negotiate()
        assert proc.summaries(qid2) == []
    finally:
        assert proc.stop() == 0
