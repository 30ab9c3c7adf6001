"""Web-form and script mail: who really sent it, and does it look abused?

A compromised contact form is the fastest way onto UCEPROTECT L1, and the
envelope sender (www-data@host, or whatever `-f` says) does not name the culprit.
`identify` gives every outbound message a *source key* naming the script, local
user or account behind it; rate limits and the status report count by that key.

The source and the signals are evidence (Evidence.source, Evidence.signals): the
limits, the feedback brake and the listed-form check read the same ones.
`forms_check` reports the source (`form.detected` for form/script mail) and the
signals that need only this message; postwarden.milter.ratelimit adds the ones
that need history (repeated body, burst); `suspicion_check` adds up the weights
of all of them into `form.suspicious`. No DNS,
so nothing here has a temperror state; a body that cannot be parsed is scanned raw.
"""

from __future__ import annotations

import email
import email.policy
import pwd
import re
from dataclasses import dataclass
from email.utils import getaddresses
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from postwarden.config import Config, FormsConfig
from postwarden.findings import Finding, Severity
from postwarden.message import Message, Origin, domain_of
from postwarden.milter.auth_results import foreign
from postwarden.milter.context import CheckContext

if TYPE_CHECKING:
    from postwarden.milter.evidence import Evidence

_PHP_HEADER = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$", re.S)
_POSTFIX_RECEIVED = re.compile(
    r"\s*by\s+\S+\s+\(Postfix,\s+from\s+userid\s+(\d+)\)(?:\s+id\s+([0-9A-Za-z]+)\s*;)?")
_URL = re.compile(rb"(?i)\b(?:https?://|www\.)[^\s<>\"'()\[\]]+")
_BOUNDARY = re.compile(r'(?i)boundary\s*=\s*"?b1_')


@dataclass(frozen=True, slots=True)
class Source:
    """Who sent a message. `form` marks web-form/script mail (the abuse-prone kind).

    `key` is built only from what the sender cannot choose: the uid in Postfix's own
    Received header for local mail, the SASL login, the client IP. Rate limits,
    history and `status` count by it, so rotating a header or the envelope sender
    never opens a fresh bucket. `claimed` is what the message says about itself (the
    X-PHP-Originating-Script name, the PHPMailer/WordPress sender): shown next to the
    key as a lead for the admin, never used to count.
    """

    key: str
    kind: str  # uid | sasl | ip | local
    form: bool
    markers: tuple[str, ...] = ()
    claimed: str = ""

    @property
    def shown(self) -> str:
        return f"{self.key} (claims {self.claimed})" if self.claimed else self.key


def clean_key(text: str, limit: int = 200) -> str:
    """Source keys go into log lines and store keys: no spaces or control characters."""
    if text.isascii() and text.isprintable() and " " not in text:  # the usual case
        return text[:limit]
    return "".join(c if c.isprintable() and not c.isspace() else "_" for c in text)[:limit]


def sasl_name(user: str) -> str:
    """One key per account: SASL back ends (Dovecot, Cyrus) usually take `Alice` and
    `alice` as the same login, so case must not buy a second bucket."""
    return clean_key(user.strip().casefold())


@lru_cache(maxsize=256)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def markers(msg: Message) -> tuple[str, ...]:
    """PHPMailer and WordPress fingerprints (a form even when it talks SMTP)."""
    found: list[str] = []
    mailer = msg.header("X-Mailer") or ""
    ctype = msg.header("Content-Type") or ""
    if "phpmailer" in mailer.lower() or _BOUNDARY.search(ctype):
        found.append("phpmailer")
    senders = [msg.mail_from, *msg.from_addresses]
    if any(a.lower().startswith("wordpress@") for a in senders):
        found.append("wordpress")
    return tuple(found)


def postfix_uid(msg: Message) -> int | None:
    """The submitting uid from the Received header Postfix's pickup/cleanup put on top
    of local mail: `by HOST (Postfix, from userid N) id QUEUEID; DATE`.

    Only the first Received header counts (cleanup prepends its own above everything
    the sender wrote), and when both are known its `id` must be this queue ID: a
    sender can write a Received header of its own, but not above Postfix's, nor with
    a queue ID that does not exist yet.
    """
    received = msg.header_all("Received")
    if not received:
        return None
    m = _POSTFIX_RECEIVED.match(received[0])
    if not m:
        return None
    qid = m.group(2)
    if qid and msg.queue_id and msg.queue_id != "NOQUEUE" and qid != msg.queue_id:
        return None
    return int(m.group(1))


def identify(msg: Message, cfg: FormsConfig) -> Source:
    """The source key: uid:<n>, sasl:<login>, ip:<address> (local:unknown if Postfix's
    Received header is missing); `claimed` adds php:<script> or phpmailer:<sender>."""
    marks = markers(msg)
    php = _PHP_HEADER.match(msg.header("X-PHP-Originating-Script") or "")
    if php:
        claimed = f"php:{clean_key(php.group(1))}:{clean_key(php.group(2))}"
    elif marks:
        claimed = f"{marks[0]}:{clean_key(msg.mail_from.lower()) or '<>'}"
    else:
        claimed = ""
    script = bool(php) or bool(marks)
    if msg.auth_user:
        user = sasl_name(msg.auth_user)
        form_users = {sasl_name(u) for u in cfg.form_sasl_users}
        return Source(f"sasl:{user}", "sasl", user in form_users or script, marks, claimed)
    if msg.origin is Origin.LOCAL:
        local_part = msg.mail_from.rsplit("@", 1)[0].lower() if msg.mail_from else ""
        web_sender = local_part in cfg.web_users
        uid = postfix_uid(msg)
        if uid is not None:
            form = _user_name(uid) in cfg.web_users or web_sender or script
            return Source(f"uid:{uid}", "uid", form, marks, claimed)
        # Postfix 3.7 does not pass pickup's Received header to non_smtpd_milters, and
        # no macro names the uid: then nothing the sender cannot choose tells local
        # users apart, so all their mail shares one key rather than trusting a claim.
        return Source("local:unknown", "local", web_sender or script, marks, claimed)
    return Source(f"ip:{clean_key(msg.client_addr) or 'unknown'}", "ip", script, marks,
                  claimed)


def weights(cfg: FormsConfig) -> dict[str, int]:
    """Configured weights; signals the admin left out keep their default."""
    return {**FormsConfig().weights, **cfg.weights}


def body_text(msg: Message, limit: int) -> bytes:
    """The first text part, transfer-decoded, at most `limit` bytes."""
    raw = msg.raw_headers() + b"\r\n" + msg.body[: limit * 2]
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in parsed.walk():
            if part.get_content_maintype() == "text":
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    return payload[:limit]
    except Exception:  # a broken MIME structure is scanned raw  # noqa: S110
        pass
    return msg.body[:limit]


def signals(msg: Message, cfg: Config) -> dict[str, str]:
    """Stateless suspicion signals hit by this message: {signal: why}."""
    fc = cfg.forms
    hits: dict[str, str] = {}
    if len(msg.rcpts) > fc.max_rcpts:
        hits["many_rcpts"] = f"{len(msg.rcpts)} recipients (more than {fc.max_rcpts})"
    domains = {domain_of(r) for r in msg.rcpts} - {""}
    if len(domains) > fc.max_rcpt_domains:
        hits["many_domains"] = (f"{len(domains)} recipient domains "
                                f"(more than {fc.max_rcpt_domains})")
    from_domain = msg.from_domain
    # the one rule of which domains are ours (auth_results): what the envelope sender
    # says does not count, `-f visitor@gmail.com` makes gmail.com no more ours
    if from_domain and foreign(cfg, from_domain):
        hits["foreign_from"] = f"From domain {from_domain} is not ours"
    reply_to = {a.lower() for _, a in getaddresses(msg.header_all("Reply-To")) if a}
    if reply_to and reply_to != {a.lower() for a in msg.from_addresses}:
        hits["reply_to_differs"] = "Reply-To differs from From"
    urls = _URL.findall(body_text(msg, fc.body_scan_bytes))
    if len(urls) > fc.max_urls:
        hits["many_urls"] = f"{len(urls)} URLs in the body (more than {fc.max_urls})"
    shorteners = {s.lower() for s in fc.url_shorteners}
    short = sorted({h for h in (_host(u) for u in urls) if h in shorteners})
    if short:
        hits["url_shortener"] = f"URL shortener {', '.join(short)}"
    return hits


def _host(url: bytes) -> str:
    text = url.decode("ascii", "replace")
    if not text.lower().startswith("http"):
        text = "http://" + text
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


@dataclass(frozen=True, slots=True)
class Signal:
    """One suspicion signal a form message hit: its weight and why."""

    weight: int
    text: str


def signal(cfg: FormsConfig, name: str, text: str) -> Signal:
    return Signal(weights(cfg).get(name, 0), text)


def message_signals(ev: Evidence) -> dict[str, Signal]:
    """The signals of this message alone (form mail only; history adds its own)."""
    cfg = ev.services.config
    if not cfg.forms.enabled or not ev.source().form:
        return {}
    return {name: signal(cfg.forms, name, why) for name, why in signals(ev.msg, cfg).items()}


def signal_finding(name: str, sig: Signal, source: Source) -> Finding:
    return Finding(f"form.{name}", Severity.INFO, sig.text,
                   {"source": source.key, "weight": sig.weight})


def forms_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """`form.detected` and this message's own signals, for form mail."""
    ev = ctx.evidence(msg)
    cfg = ctx.services.config
    source = ev.source()
    if not cfg.forms.enabled or not source.form:
        return []
    out = [Finding("form.detected", Severity.INFO, f"form/script mail from {source.shown}",
                   {"source": source.key, "kind": source.kind, "markers": list(source.markers),
                    "claimed": source.claimed})]
    out += [signal_finding(name, sig, source) for name, sig in message_signals(ev).items()]
    return out


def suspicion_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """Adds up the signal weights; at `suspicious_score` or more: `form.suspicious`."""
    cfg = ctx.services.config.forms
    ev = ctx.evidence(msg)
    if not cfg.enabled or not ev.source().form:
        return []
    hit = ev.signals()
    score = ev.score()
    if score < cfg.suspicious_score:
        return []
    source = ev.source()
    names = ",".join(sorted(hit))
    return [Finding("form.suspicious", Severity.WARNING,
                    f"form mail from {source.shown} scores {score} "
                    f"(threshold {cfg.suspicious_score}): {names}",
                    {"source": source.key, "score": score, "signals": sorted(hit)})]
