"""Loopback stand-ins for big receivers (aiosmtpd) that answer with their real replies.

Each Receiver serves one domain (gmail.test, outlook.test, ...). What it answers
depends on the recipient's local part: a rule maps a prefix to the reply given at
RCPT TO or at end of DATA, so one Postfix delivery gets exactly one known reply.
Multi-line replies are sent as such ("550-5.7.26 ...\\r\\n550 5.7.26 ..."), the way
Gmail sends them; Postfix joins them in its log line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from harness import free_port

GMAIL_UNAUTH_DMARC = (
    "550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's\r\n"
    "550-5.7.26 DMARC policy. Please contact the administrator of example.com domain if\r\n"
    "550 5.7.26 this was a legitimate mail. - gsmtp")
GMAIL_NO_USER = ("550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                 "550 5.1.1 Please try double-checking the recipient's email address - gsmtp")
OUTLOOK_REPUTATION = ("451 4.7.650 The mail server [192.0.2.25] has been temporarily rate "
                      "limited due to IP reputation.")
YAHOO_TSS04 = ("421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to "
               "unexpected volume or user complaints - 4.16.55.1")
UCEPROTECT_BLOCK = ("554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
                    "dnsbl-1.uceprotect.net; IP 192.0.2.25 is UCEPROTECT-Level 1 listed.")


@dataclass
class Rule:
    prefix: str  # recipient local part starts with this
    at: str  # "rcpt" | "data"
    reply: str


@dataclass
class Receiver:
    domain: str
    rules: list[Rule] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    accepted: list[str] = field(default_factory=list)  # recipients that got 250 at DATA
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Any = None

    def reply_for(self, rcpt: str, at: str) -> str | None:
        local = rcpt.rpartition("@")[0].lower()
        for r in self.rules:
            if r.at == at and local.startswith(r.prefix):
                return r.reply
        return None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.reply_for(address, "rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            reply = self.reply_for(rcpt, "data")
            if reply is not None:
                return reply
        with self.lock:
            self.accepted.extend(envelope.rcpt_tos)
        return "250 2.0.0 OK queued - gsmtp"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                     decode_data=False, data_size_limit=None, timeout=30)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


def standard() -> list[Receiver]:
    """gmail.test, outlook.test, yahoo.test and strict.test with their real replies."""
    return [
        Receiver("gmail.test", [Rule("nobody", "rcpt", GMAIL_NO_USER),
                                Rule("dmarc", "data", GMAIL_UNAUTH_DMARC)]),
        Receiver("outlook.test", [Rule("slow", "rcpt", OUTLOOK_REPUTATION)]),
        Receiver("yahoo.test", [Rule("tss", "rcpt", YAHOO_TSS04)]),
        Receiver("strict.test", [Rule("", "rcpt", UCEPROTECT_BLOCK)]),
    ]


def transport_map(receivers: list[Receiver]) -> str:
    """texthash transport_maps lines sending each domain to its receiver."""
    return "".join(f"{r.domain} smtp:[127.0.0.1]:{r.port}\n" for r in receivers)
