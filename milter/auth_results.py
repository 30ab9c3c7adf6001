"""Per-message authentication results, shared between checks through `ctx.memo`.

The DKIM and SPF checks store what they found here; the DMARC check, the From
rewrite and the signer read it, so nothing is evaluated twice for one message.
The From domain's DMARC policy (both generations, postwarden.dmarc_discovery) is
discovered once per message (`dmarc_for`) even though DKIM (adkim), SPF (aspf) and
DMARC all need it; RFC 9989 Organizational Domains (`org_domain_9989`) are walked
only when relaxed alignment of two different names needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from postwarden.config import Config
from postwarden.dmarc_discovery import DmarcLookup, discover, org_domain_9989
from postwarden.message import Message
from postwarden.orgdomain import aligned, normalize

if TYPE_CHECKING:
    from postwarden.milter.pipeline import CheckContext

DKIM = "auth.dkim"  # list[DkimSignature], in header order
SPF = "auth.spf"  # SpfOutcome
DMARC_RECORDS = "auth.dmarc"  # dict[domain, DmarcLookup]
ORG_9989 = "auth.org9989"  # dict[domain, (org domain, error)]
CHANGES = "fix.changes"  # list[HeaderChange] made by fixers so far (the signer reads it)
MIN_RSA_BITS = 1024  # RFC 8301: verifiers must not accept smaller keys


@dataclass(frozen=True)
class DkimSignature:
    """One DKIM-Signature header and what verifying it gave.

    status: pass | fail | permerror | temperror | unverified (verification off).
    """

    domain: str
    selector: str
    algorithm: str
    status: str
    key_type: str = ""  # rsa | ed25519 | "" (key not fetched)
    key_bits: int = 0
    error: str = ""
    fix: str = ""  # what to do, when it is not "check the key and the message"

    @property
    def counts(self) -> bool:
        """Would a receiver take this signature as a DKIM pass?"""
        if self.key_type == "rsa" and 0 < self.key_bits < MIN_RSA_BITS:
            return False
        return self.status in ("pass", "unverified")


@dataclass(frozen=True)
class SpfOutcome:
    """SPF as receivers will see it, for every configured sending IP.

    result is the worst over the IPs (a receiver may see any of them);
    identity is `mailfrom`, or `helo` for the null sender.
    """

    domain: str
    identity: str
    result: str
    per_ip: tuple[tuple[str, str], ...] = ()
    explanation: str = ""


def from_domains(msg: Message) -> list[str]:
    """Distinct domains of all From addresses, in order (RFC 7489 6.6.1)."""
    out = list(msg.from_domains)  # parsed once per message (message.py)
    if len(out) > 1:  # faß.de and xn--fa-hia.de are one domain
        keys = [normalize(d) or d for d in out]
        out = [d for i, d in enumerate(out) if keys[i] not in keys[:i]]
    return out


def our_domains(cfg: Config) -> set[str]:
    """Domains this host sends for: [host] domains and the [[dkim.keys]] domains."""
    return {normalize(d) for d in cfg.host.domains} | {normalize(k.domain)
                                                       for k in cfg.dkim.keys}


def is_ours(cfg: Config, domain: str) -> bool:
    """Same organizational domain as one of ours (relaxed alignment)."""
    return any(aligned(domain, d) for d in our_domains(cfg))


def foreign(cfg: Config, domain: str) -> bool:
    """Known not to be ours: our domains are configured and this is none of them."""
    return bool(our_domains(cfg)) and not is_ours(cfg, domain)


FOREIGN_FIX = ("use a From address of your own domain ([from_rewrite] does it) and put the "
               "visitor's address in Reply-To")


def dmarc_for(ctx: CheckContext, domain: str) -> DmarcLookup:
    """The DMARC policy for `domain`, discovered at most once per message."""
    cache: dict[str, DmarcLookup] = ctx.memo.setdefault(DMARC_RECORDS, {})
    found = cache.get(domain)
    if found is None:
        found = discover(ctx.services.resolver, domain, ctx.budget)
        cache[domain] = found
    return found


def org_9989(ctx: CheckContext, domain: str) -> tuple[str, str]:
    """RFC 9989 Organizational Domain of `domain` ("", why) when unknown; per message."""
    cache: dict[str, tuple[str, str]] = ctx.memo.setdefault(ORG_9989, {})
    found = cache.get(domain)
    if found is None:
        found = org_domain_9989(ctx.services.resolver, domain, ctx.budget)
        cache[domain] = found
    return found


def aligned_9989(ctx: CheckContext, identifier: str, from_domain: str,
                 mode: str) -> bool | None:
    """Alignment as an RFC 9989 receiver sees it; None when the tree walk failed."""
    a, b = normalize(identifier), normalize(from_domain)
    if not a or not b:
        return False
    if a == b:
        return True
    if mode == "s":
        return False
    (oa, ea), (ob, eb) = org_9989(ctx, a), org_9989(ctx, b)
    if ea or eb:
        return None
    return oa == ob


def alignment_mode(ctx: CheckContext, domain: str, tag: str) -> str:
    """`adkim`/`aspf` of the domain's DMARC record; relaxed when unknown."""
    rec = dmarc_for(ctx, domain).record
    if rec is None:
        return "r"
    return rec.adkim if tag == "adkim" else rec.aspf
