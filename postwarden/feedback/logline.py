"""One Postfix delivery line -> a Delivery, or None.

    postfix/smtp[812]: 4F9D42A0B1: to=<a@gmail.test>, relay=mx.gmail.test[192.0.2.7]:25,
        delay=0.4, delays=0.1/0/0.2/0.1, dsn=5.7.26, status=bounced (host
        mx.gmail.test[192.0.2.7] said: 550-5.7.26 This mail ... (in reply to end of DATA
        command))

Debian's master.cf logs the relay transport as `postfix/relay`; it is the smtp client
too. The reply text is written by the remote server and the recipient by the sender, so
the whole line is hostile input: the pattern is anchored field by field, a line
that does not fit exactly is not a delivery line (the caller counts it), and the
values kept are bounded and stripped of anything that could split or forge a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 16384  # longer lines are skipped (Postfix's own line_length_limit is 2048)

_LINE = re.compile(
    r"(?:^|\s)(?P<service>[A-Za-z0-9._-]+/(?:smtp|lmtp|relay))\[(?P<pid>\d{1,10})\]: "
    r"(?P<qid>[0-9A-Za-z]{5,20}): to=<(?P<to>[^<>]{0,512})>, "
    r"(?:orig_to=<[^<>]{0,512}>, )?"
    r"relay=(?P<relay>[^\s,]{1,300}), "
    r"(?:conn_use=\d{1,6}, )?"
    r"delay=[\d.]{1,12}, delays=[\d./]{1,60}, "
    r"dsn=(?P<dsn>[245]\.\d{1,3}\.\d{1,3}), "
    r"status=(?P<status>sent|deferred|bounced|expired) \((?P<text>.{0,8000})\)\s*$"
)
# `host X said: REPLY (in reply to ... command)`: the REPLY part is the receiver's.
_SAID = re.compile(r"\bsaid:\s*(?P<reply>.*?)(?:\s*\(in reply to [^()]{1,80}\))?\s*$", re.S)


@dataclass(frozen=True)
class Delivery:
    queue_id: str
    rcpt_domain: str
    relay: str
    dsn: str
    status: str  # sent | deferred | bounced (expired counts as bounced)
    text: str  # the receiver's reply when it said one, else Postfix's own words
    remote: bool  # the text is the receiver's reply (not a local connect error)


def printable(text: str, limit: int) -> str:
    """Remote-controlled text made safe for one log line and the store: control and
    other non-printable characters become `?`, at most `limit` characters."""
    out = text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)
    return out[:limit]


def parse(line: str) -> Delivery | None:
    if len(line) > MAX_LINE:
        return None
    m = _LINE.search(line)
    if m is None:
        return None
    to = m.group("to")
    domain = to.rpartition("@")[2].lower().strip().rstrip(".")
    if not domain or not re.fullmatch(r"[a-z0-9.-]{1,253}|\[[0-9a-f:.]{2,45}\]", domain):
        domain = "?"
    text = m.group("text")
    said = _SAID.search(text)
    status = "bounced" if m.group("status") == "expired" else m.group("status")
    return Delivery(
        queue_id=m.group("qid"), rcpt_domain=domain,
        relay=printable(m.group("relay"), 300), dsn=m.group("dsn"), status=status,
        text=printable(said.group("reply") if said else text, 2000), remote=said is not None,
    )
