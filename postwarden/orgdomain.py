"""Organizational domains and DMARC identifier alignment (RFC 7489 3.2, 3.1).

The Public Suffix List comes from the `publicsuffixlist` package, shipped offline:
no lookup at run time, so alignment is pure and costs no DNS. Shared by the milter
(DKIM/SPF/DMARC checks, From rewrite, signing) and the self-check.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Literal

from publicsuffixlist import PublicSuffixList

Mode = Literal["r", "s"]
_lock = threading.Lock()
_psl: PublicSuffixList | None = None


def _list() -> PublicSuffixList:
    """Built once per process (about 70 ms), shared by all threads."""
    global _psl
    with _lock:
        if _psl is None:
            _psl = PublicSuffixList()
        return _psl


@lru_cache(maxsize=4096)
def normalize(domain: str) -> str:
    """Lower case, no trailing dot, IDNs as A-labels when they can be encoded."""
    d = domain.strip().rstrip(".").lower()
    if d and not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return d


@lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organizational domain: the public suffix plus one label.

    A name that is itself a public suffix (`com`, `co.uk`, an unknown TLD) is its
    own organizational domain, so two different suffixes never align.
    """
    d = normalize(domain)
    if not d:
        return ""
    return str(_list().privatesuffix(d) or d)


def aligned(identifier: str, from_domain: str, mode: Mode | str = "r") -> bool:
    """Does a DKIM d= or SPF domain align with the RFC5322.From domain?

    Strict (`s`): the names are identical. Relaxed (`r`, the default and any
    unknown value, RFC 7489 6.3): same organizational domain.
    """
    a, b = normalize(identifier), normalize(from_domain)
    if not a or not b:
        return False
    if a == b:
        return True
    if mode == "s":
        return False
    return org_domain(a) == org_domain(b)
