"""From rewrite fixer: a foreign From that fails DMARC becomes an address of ours.

The classic case is a web form: `From: visitor@gmail.com` sent by www-data on
this host can never pass DMARC, and receivers junk or reject it. As Mailman's
munge_from does, the From becomes `"<visitor's name or address> via <site>"
<configured address>` and the original From moves to Reply-To (an existing
Reply-To is kept), so replies still reach the visitor. Runs before the signer,
which signs the rewritten headers (it is handed the changes planned before it).
"""

from __future__ import annotations

from email.header import decode_header, make_header
from email.utils import formataddr, getaddresses

from postwarden.config import Config
from postwarden.findings import Finding
from postwarden.logsafe import angled, escape
from postwarden.message import Message, domain_of
from postwarden.milter.auth_results import is_ours
from postwarden.milter.context import NO_FIX, CheckContext, Fix, HeaderChange

MAX_NAME = 78


def _display(name: str, address: str) -> str:
    """The visitor's display name, decoded from RFC 2047; the address if none."""
    try:
        text = str(make_header(decode_header(name))) if name else ""
    except (UnicodeError, LookupError, ValueError):
        text = name
    text = " ".join(text.replace('"', "").split())
    return (text or address)[:MAX_NAME]


def rewritten_from(original: str, address: str, site: str) -> str:
    """`"Visitor via Site" <address>`, RFC 2047-encoded when not ASCII."""
    pairs = getaddresses([original])
    name, addr = pairs[0] if pairs else ("", "")
    display = f"{_display(name, addr)} via {site}".replace("\\", "").replace('"', "")
    if display.isascii():  # always quoted, as Mailman writes it
        return f'"{display}" <{address}>'
    return formataddr((display, address), charset="utf-8")


class FromRewriter:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        fr = cfg.from_rewrite
        self.site = fr.site_name or domain_of(fr.address)

    def __call__(self, msg: Message, ctx: CheckContext, findings: list[Finding],
                 before: tuple[HeaderChange, ...] = ()) -> Fix:
        fr = self.cfg.from_rewrite
        if not fr.enabled or msg.origin.value not in fr.origins:
            return NO_FIX
        values = msg.header_all("From")
        if len(values) != 1 or len(msg.from_addresses) != 1:
            return NO_FIX
        domain = msg.from_domain
        # dmarc.generations_differ whose stricter outcome fails: some receivers fail it
        failing = [f for f in findings if f.data.get("domain") == domain and (
            f.id == "dmarc.fail" or (f.id == "dmarc.generations_differ"
                                     and f.data.get("result") == "fail"))]
        if not failing or is_ours(self.cfg, domain):
            return NO_FIX
        new_from = rewritten_from(values[0], fr.address, self.site)
        changes = [HeaderChange("change", "From", " " + new_from, 1)]
        kept = msg.header("Reply-To") is not None
        if not kept:
            changes.append(HeaderChange("add", "Reply-To", " " + values[0].replace("\r\n", "\n")))
        policy = failing[0].data.get("policy", "?")
        where = "not copied, Reply-To exists" if kept else "moved to Reply-To"
        # the visitor's address and domain are the sender's bytes: escaped, one token
        note = (f"from rewritten: {angled(msg.header_from, 254)} -> {angled(fr.address)} "
                f"(DMARC p={escape(policy)} at {escape(domain, 253)}); original From {where}")
        return Fix(tuple(changes), (("from_rewritten", domain),), note, rewrites_from=True)
