"""The authentication results' types, and the one rule of which domains are ours.

A message's results are evidence (postwarden.milter.evidence): computed once,
read by the DKIM, SPF and DMARC checks, the From rewrite and the signer alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwarden.config import Config
from postwarden.message import Message
from postwarden.orgdomain import aligned, normalize

MIN_RSA_BITS = 1024  # RFC 8301: verifiers must not accept smaller keys


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
