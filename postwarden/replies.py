"""What receivers' SMTP replies mean, as data: pattern, class, meaning, advice.

One table, like postwarden.blocklists: the feedback reader classifies every
deferral and bounce Postfix logs with it, the self-check and `postwarden status`
count by its classes. The first entry whose pattern matches wins, so the specific
texts (a list cited, a Gmail code) come before the generic ones ("policy").
Entries from `[feedback] replies` are tried before these. Patterns are matched
case-insensitively against the whole reply text Postfix logged (multi-line replies
joined); a `(?P<zone>...)` group names the blocklist cited.

The texts are the ones receivers really send (2024-2026 wording); they change, so
the patterns match a stable part: the enhanced status code and a few words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from postwarden.blocklists import DEFAULT_LISTS

# Reply classes and the finding id each raises (None: counted, no finding).
CLASSES: dict[str, str | None] = {
    "blocklist": "feedback.blocklisted",
    "auth": "feedback.auth_rejected",
    "rdns": "feedback.rdns",
    "reputation": "feedback.reputation",
    "rate": "feedback.rate_limited",
    "content": "feedback.content",
    "unknown_recipient": "feedback.unknown_recipients",
    "mailbox_full": None,
    "tls": None,
    "policy": None,
    "other": None,
}


@dataclass(frozen=True)
class Reply:
    pattern: str
    cls: str
    meaning: str
    advice: str
    zone: str = ""  # the blocklist this text cites, when the pattern does not capture it

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.pattern)


_cache: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    rx = _cache.get(pattern)
    if rx is None:
        rx = _cache[pattern] = re.compile(pattern, re.I | re.S)
    return rx


_SPF_DKIM = ("Publish SPF for the envelope domain listing this host, sign with an aligned "
             "DKIM key, then run `postwarden selfcheck`.")
_LIST = ("Run `postwarden selfcheck` to confirm the listing, stop the source that sent the "
         "spam (see `postwarden status`), then follow the list's delisting advice.")

REPLIES: tuple[Reply, ...] = (
    # --- blocklist citations ------------------------------------------------------
    Reply(r"blocked\s+using\s+(?P<zone>[a-z0-9-]+(?:\.[a-z0-9-]+)+)", "blocklist",
          "the receiver rejected the sending IP because a DNSBL lists it", _LIST),
    Reply(r"listed\s+(?:in|on|at|by)\s+(?:the\s+)?(?P<zone>[a-z0-9-]+(?:\.[a-z0-9-]+)*\."
          r"(?:net|org|com|de|info|eu))\b", "blocklist",
          "the receiver rejected the sending IP because a DNSBL lists it", _LIST),
    Reply(r"spamhaus\.org/(?:query|sbl|xbl|pbl|css)", "blocklist",
          "the receiver cites Spamhaus for the sending IP", _LIST, zone="zen.spamhaus.org"),
    Reply(r"barracuda(?:central|networks)?", "blocklist",
          "the receiver cites the Barracuda reputation list", _LIST,
          zone="b.barracudacentral.org"),
    Reply(r"cloudmark|\bCSI\b", "blocklist",
          "the receiver cites Cloudmark Sender Intelligence for the sending IP",
          "Look the IP up at https://csi.cloudmark.com/ and request a reset after fixing "
          "the cause."),
    Reply(r"\bS3140\b|part of their network is on our block list", "blocklist",
          "Microsoft (Outlook/Hotmail) blocks the sending IP's network",
          "Fix the cause, then ask for mitigation at https://sender.office.com/ ; enrol in "
          "SNDS/JMRP to see the complaints."),
    Reply(r"\b5\.7\.(?:606|511)\b|banned\s+sending\s+IP", "blocklist",
          "Microsoft banned the sending IP",
          "Request delisting at https://sender.office.com/ after fixing the cause."),
    # --- authentication -------------------------------------------------------------
    Reply(r"\b5\.7\.26\b", "auth",
          "Gmail: the message is unauthenticated or fails the From domain's DMARC policy",
          _SPF_DKIM + " Gmail requires SPF or DKIM for all and DMARC alignment for bulk."),
    Reply(r"\b5\.7\.27\b", "auth", "Gmail: the envelope domain's SPF does not pass",
          "List this host in the envelope domain's SPF record."),
    Reply(r"\b5\.7\.515\b|does not meet the required authentication level", "auth",
          "Microsoft: the sending domain's SPF/DKIM/DMARC do not meet its requirements",
          _SPF_DKIM + " Microsoft requires SPF, DKIM and DMARC for bulk senders."),
    Reply(r"\b5\.7\.9\b.*policy reasons|not accepted for policy reasons", "auth",
          "Yahoo: the message failed its authentication or content policy",
          _SPF_DKIM + " Yahoo's 5.7.9 most often means DMARC failed."),
    Reply(r"\bDMARC\b", "auth", "the receiver says the message fails DMARC", _SPF_DKIM),
    Reply(r"\bSPF\b.{0,40}\b(?:fail|failed|failure|not\s+pass|rejected|softfail)"
          r"|(?:fail|failed)\b.{0,20}\bSPF\b", "auth",
          "the receiver says SPF fails for this host", "List this host in the SPF record."),
    Reply(r"\bDKIM\b.{0,40}\b(?:fail|failed|invalid|bad|missing|required)", "auth",
          "the receiver says the DKIM signature is missing or does not verify",
          "Sign with a published key of the From domain; check `postwarden selfcheck`."),
    Reply(r"\bunauthenticated\b", "auth", "the receiver requires authentication (SPF/DKIM)",
          _SPF_DKIM),
    # --- reverse DNS ------------------------------------------------------------------
    Reply(r"\b[45]\.7\.25\b|cannot find your (?:hostname|reverse)|reverse\s+DNS|PTR\s+record",
          "rdns", "the receiver rejects the sending IP for its missing or mismatched PTR",
          "Ask the IP's provider to set a PTR that resolves back to the IP "
          "(forward-confirmed), matching myhostname."),
    # --- reputation and rate ------------------------------------------------------------
    Reply(r"\b4\.7\.28\b|unusual rate of unsolicited", "reputation",
          "Gmail: an unusual rate of unsolicited mail from this IP or domain",
          "Stop the source (see `postwarden status`); check Google Postmaster Tools."),
    Reply(r"\b4\.7\.650\b|(?:rate limited|deferred) due to (?:IP )?reputation", "reputation",
          "Microsoft: throttled because of the sending IP's reputation",
          "Lower the volume, stop unwanted mail, enrol in SNDS."),
    Reply(r"\bTSS0[4-9]\b|user complaints", "reputation",
          "Yahoo: deferred because of complaints or unusual volume",
          "Stop the source of unwanted mail; check the Yahoo Sender Hub."),
    Reply(r"\brate[\s-]?limit|too many (?:messages|connections|recipients)"
          r"|\b4\.7\.0\b.{0,60}\b(?:rate|throttl)|\bthrottl", "rate",
          "the receiver limits how fast this host may send",
          "Lower smtp_destination_concurrency_limit / add a rate delay for that domain."),
    # --- content ------------------------------------------------------------------------
    Reply(r"likely unsolicited|\bspam\b|\bjunk\b", "content",
          "the receiver judged the message (content or sender) as spam",
          "Check what the source sends (form mail abused?), see `postwarden status`."),
    # --- recipients ---------------------------------------------------------------------
    Reply(r"\b5\.1\.[01]\b|does not exist|user unknown|no such (?:user|mailbox|recipient)"
          r"|recipient (?:address )?rejected|unknown (?:user|recipient)|invalid recipient",
          "unknown_recipient", "the recipient address does not exist",
          "Many of these from one source mean it sends to harvested or random addresses "
          "(an abused form): check the source in `postwarden status`."),
    Reply(r"\b[45]\.2\.2\b|mailbox (?:is )?full|over quota|quota exceeded", "mailbox_full",
          "the recipient's mailbox is full", "Nothing to fix here; the recipient must act."),
    Reply(r"\b5\.7\.10\b|STARTTLS|TLS (?:is )?required|encryption required", "tls",
          "the receiver requires TLS", "Set smtp_tls_security_level = may (or encrypt)."),
    Reply(r"\bpolicy\b|\b5\.7\.\d+\b", "policy", "rejected by the receiver's local policy",
          "Read the full reply; it usually names the rule and a help page."),
)


@dataclass(frozen=True)
class Classified:
    cls: str
    meaning: str
    advice: str
    zone: str = ""  # the DNSBL cited ("" when none or not a DNS list)


_KNOWN_ZONES = tuple(sorted((bl.zone for bl in DEFAULT_LISTS), key=len, reverse=True))


def classify(text: str, dsn: str = "", extra: Iterable[Reply] = ()) -> Classified:
    """The class of one remote reply; by its DSN code when no text matches."""
    for r in (*extra, *REPLIES):
        m = r.compiled().search(text)
        if m is None:
            continue
        zone = (m.groupdict().get("zone") or r.zone or "").lower().rstrip(".")
        if r.cls == "blocklist" and not zone:
            zone = next((z for z in _KNOWN_ZONES if z in text.lower()), "")
        return Classified(r.cls, r.meaning, r.advice, zone)
    if dsn.startswith(("5.1.", "4.1.")):
        return Classified("unknown_recipient", "the recipient address is not accepted",
                          "Check the address.")
    if dsn[2:4] == "7.":
        return Classified("policy", "rejected by the receiver's local policy",
                          "Read the full reply.")
    return Classified("other", "the receiver gave no recognised reason",
                      "Read the full reply in the mail log.")


def finding_id(cls: str) -> str | None:
    return CLASSES.get(cls)
