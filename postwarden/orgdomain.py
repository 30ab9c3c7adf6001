"""Domain names as DNS sees them, organizational domains and alignment (RFC 7489 3.1, 3.2).

`name()` is the one place a domain is normalised: lower case, no trailing dot, and
internationalised labels as IDNA2008 A-labels after the UTS #46 mapping (RFC 5891,
RFC 8616), so `faß.de` is `xn--fa-hia.de` and not IDNA2003's `fass.de`, a
different registrant's domain. A name that is not a valid domain is a state
(`Name.error`), never an exception.

The Public Suffix List comes from the `publicsuffixlist` package, shipped offline:
no lookup at run time, so the RFC 7489 organizational domain and alignment are pure
and cost no DNS. RFC 9989's DNS tree walk lives in postwarden.dmarc_discovery.
Shared by the milter (DKIM/SPF/DMARC checks, From rewrite, signing) and the self-check.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import idna
from publicsuffixlist import PublicSuffixList

Mode = Literal["r", "s"]
_lock = threading.Lock()
_psl: PublicSuffixList | None = None
# DNS labels as mail uses them: letters, digits, hyphen; underscore for service
# names such as _dmarc or _domainkey selectors.
_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")


def _list() -> PublicSuffixList:
    """Built once per process (about 70 ms), shared by all threads."""
    global _psl
    with _lock:
        if _psl is None:
            _psl = PublicSuffixList()
        return _psl


@dataclass(frozen=True)
class Name:
    """A domain in A-label form; `ascii` is "" and `error` says why when invalid."""

    ascii: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.ascii)


def _ascii_label(label: str) -> str:
    """'' when `label` is a usable ASCII label, else the reason."""
    if not label:
        return "empty label"
    if len(label) > 63:
        return f"label {label[:20]}... longer than 63 octets"
    if not _ASCII_LABEL.fullmatch(label):
        return f"label {label!r} is not letters, digits and hyphens"
    if label.startswith("xn--"):
        try:
            idna.decode(label)  # an A-label must decode to a valid IDNA2008 U-label
        except (idna.IDNAError, UnicodeError) as e:
            return f"label {label!r} is not a valid A-label ({e})"
    return ""


@lru_cache(maxsize=8192)
def name(domain: str) -> Name:
    """The one normalisation of a domain name (IDNA2008 with UTS #46 mapping)."""
    d = domain.strip()
    if not d:
        return Name("", "no domain")
    if not d.isascii():
        try:
            d = idna.uts46_remap(d, std3_rules=False, transitional=False)
        except (idna.IDNAError, UnicodeError) as e:
            return Name("", f"{e}")
    d = d.lower()
    if d.endswith("."):
        d = d[:-1]
    labels = d.split(".")
    out = []
    for label in labels:
        if label.isascii():
            problem = _ascii_label(label)
            if problem:
                return Name("", problem)
            out.append(label)
            continue
        try:
            out.append(idna.alabel(label).decode("ascii"))
        except (idna.IDNAError, UnicodeError) as e:
            return Name("", f"label {label!r} is not valid in IDNA2008 ({e})")
    a = ".".join(out)
    if len(a) > 253:
        return Name("", "name longer than 253 octets")
    return Name(a)


@lru_cache(maxsize=8192)
def normalize(domain: str) -> str:
    """The A-label form of `domain`; "" when it is not a valid domain name."""
    return name(domain).ascii


@lru_cache(maxsize=4096)
def registered_domain(domain: str) -> str | None:
    """The public suffix plus one label (RFC 7489 3.2), None for a public suffix.

    None also for a name that is not a valid domain (a clear state, not an error).
    """
    d = normalize(domain)
    if not d:
        return None
    found = _list().privatesuffix(d)
    return str(found) if found else None


@lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organizational domain by the Public Suffix List (RFC 7489 3.2).

    A name that is itself a public suffix (`com`, `co.uk`, an unknown TLD) is its
    own organizational domain, so two different suffixes never align. "" for a
    name that is not a valid domain.
    """
    return registered_domain(domain) or normalize(domain)


def aligned(identifier: str, from_domain: str, mode: Mode | str = "r") -> bool:
    """Does a DKIM d= or SPF domain align with the RFC5322.From domain (RFC 7489)?

    Strict (`s`): the names are identical. Relaxed (`r`, the default and any
    unknown value, RFC 7489 6.3): same organizational domain by the PSL.
    """
    return bool(aligned_by(identifier, from_domain, mode, org_domain))


def aligned_by(identifier: str, from_domain: str, mode: str,
               org: Callable[[str], str | None]) -> bool | None:
    """Alignment with the organizational domain rule `org` (the PSL for RFC 7489, the
    DNS tree walk for RFC 9989); None when `org` could not tell (it returned None)."""
    a, b = normalize(identifier), normalize(from_domain)
    if not a or not b:
        return False
    if a == b:
        return True
    if mode == "s":
        return False
    oa, ob = org(a), org(b)
    if oa is None or ob is None:
        return None
    return oa == ob
