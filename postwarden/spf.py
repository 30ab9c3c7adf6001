"""pyspf with its DNS through postwarden's Resolver: the one SPF evaluator.

The milter (its per-message SPF check) and the self-check (checks/records.py)
both evaluate SPF here, so they cannot disagree about the same domain. pyspf
does the RFC 7208 evaluation; this adapter replaces only its DNS layer:

- Every DNS query pyspf makes goes to the Resolver (configured nameservers,
  the message's time budget, the TTL cache). Nothing is kept per query: the
  resolver's cache is the only DNS cache.
- Every query counts towards the void-lookup limit (RFC 7208 4.6.4), including
  a repeated one the cache answers: `a:nx a:nx a:nx` is three void lookups and
  so permerror, whatever was asked before.
- A DNS error inside the `ptr` mechanism or the %{p} macro does not end the
  evaluation (RFC 7208 5.5, 7.3): an error on the PTR lookup means no
  validated name, an error on a name's address lookup skips that name. pyspf
  2.0.14 turns both into temperror. Running out of postwarden's own per-message
  budget is not a DNS answer and still ends in temperror.
- A `redirect=` in a record with an `all` mechanism is ignored (RFC 7208 6.1),
  so it costs no lookup; pyspf 2.0.14 counts it while parsing the record, which
  makes a record with 10 lookups, `-all` and a `redirect=` a permerror.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import spf

from postwarden.dns import Budget, Resolver
from postwarden.ttlcache import TtlCache

RESULT_CACHE_SIZE = 4096

# Evaluations ask pyspf for results no older than this, whatever the TTLs.
MAX_RESULT_TTL = 3600
# Macros that depend on the sender's local part, the full sender or the HELO
# name: a result computed with them holds for that sender only.
_SENDER_MACRO = re.compile(r"%\{[lsh]", re.IGNORECASE)
_MAX_NAME = 253


class BudgetSpent(spf.TempError):  # type: ignore[misc]
    """postwarden's time for this message is used up: not an answer from DNS."""


@dataclass(frozen=True)
class Evaluation:
    result: str        # pass fail softfail neutral none permerror temperror
    explanation: str
    ttl: int           # shortest TTL among the answers the result rests on
    sender_dependent: bool = False
    skipped: tuple[str, ...] = ()  # DNS errors RFC 7208 5.5 says to step over

    @property
    def reusable(self) -> bool:
        """May stand for later messages of the same domain and IP until `ttl`."""
        return self.result != "temperror" and not self.sender_dependent and not self.skipped


class Query(spf.query):  # type: ignore[misc]
    """pyspf's evaluator; one per evaluation (no state shared between threads)."""

    def __init__(self, ip: str, sender: str, helo: str, resolver: Resolver,
                 budget: Budget | None = None) -> None:
        # strict: RFC 7208 processing limits are errors, not warnings; querytime=0:
        # time is bounded by the resolver's timeout and the message's budget.
        super().__init__(i=ip, s=sender, h=helo, strict=True, querytime=0)
        self._resolver = resolver
        self._budget = budget
        self.min_ttl = MAX_RESULT_TTL
        self.sender_dependent = False
        self.skipped: list[str] = []

    def dns(self, name: str, qtype: str, cnames: Any = None,
            ignore_void: bool = False) -> list[Any]:
        """One DNS query, in the shapes pyspf expects; the resolver follows CNAMEs."""
        if not name:
            raise spf.PermError("empty DNS name")
        name = str(name)
        if name.endswith("."):
            name = name[:-1]
        name = name.lower()
        if len(name) > _MAX_NAME or not all(0 < len(lb) < 64 for lb in name.split(".")):
            return []  # not a name DNS can hold: nothing to ask (as pyspf does)
        answer = self._resolver.query(name, qtype, self._budget)
        if answer.failed:
            if self._budget is not None and self._budget.remaining() <= 0:
                raise BudgetSpent(f"DNS {qtype} {name}: {answer.error}")
            raise spf.TempError(f"DNS {qtype} {name}: {answer.error}")
        self.min_ttl = min(self.min_ttl, max(answer.ttl, 0))
        result: list[Any] = []
        for rec in answer.records:
            if qtype in ("TXT", "SPF"):
                if _SENDER_MACRO.search(rec):
                    self.sender_dependent = True
                result.append((rec.encode("utf-8"),))
            elif qtype == "MX":
                pref, _, host = rec.partition(" ")
                result.append((int(pref), host.rstrip(".")))
            else:
                result.append(rec.rstrip("."))
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def check0(self, spf_record: str, recursion: int) -> Any:
        """pyspf's evaluation of one record, without counting an ignored redirect=."""
        if spf_record and _ignored_redirect(spf_record):
            self.lookups -= 1  # pyspf's check_lookups() for it comes while parsing
        return super().check0(spf_record, recursion)

    def validated_ptrs(self) -> list[str]:
        """RFC 7208 5.5: names of the PTR records whose addresses include the client IP."""
        try:
            names = self.dns_ptr(self.i)
        except BudgetSpent:
            raise
        except spf.TempError as e:
            self.skipped.append(str(e))
            return []  # "If a DNS error occurs while doing the PTR RR lookup ... fails to match"
        validated = []
        for ptr in names[:spf.MAX_PTR]:
            try:
                addresses = self.dns_a(ptr, self.A)
            except BudgetSpent:
                raise
            except spf.TempError as e:
                self.skipped.append(str(e))
                continue  # "that domain name is skipped and the search continues"
            if self.cidrmatch(addresses, self.cidrmax):
                validated.append(ptr)
        return validated


def _ignored_redirect(record: str) -> bool:
    """Whether pyspf will count a redirect= that an all mechanism makes ignored."""
    terms = [t for t in record.split(" ") if t]
    if not terms or terms[0].lower() != "v=spf1":
        return False
    has_all = redirect = False
    for term in terms[1:]:
        modifier = spf.RE_MODIFIER.split(term)[1:]
        if len(modifier) == 2:
            redirect = redirect or modifier[0] == "redirect"  # pyspf's own test for it
            continue
        name = term.lstrip("+-?~").split(":", 1)[0].split("/", 1)[0].lower()
        has_all = has_all or name == "all"
    return has_all and redirect


def evaluate(ip: str, sender: str, helo: str, resolver: Resolver,
             budget: Budget | None = None) -> Evaluation:
    """check_host() for `ip` sending as `sender` (empty: the HELO identity) after `helo`."""
    q = Query(ip, sender, helo, resolver, budget)
    result, _code, explanation = q.check()
    return Evaluation(str(result), str(explanation), q.min_ttl, q.sender_dependent,
                      tuple(q.skipped))


class SpfResults:
    """(domain, identity, IP) -> Evaluation while every answer behind it is fresh.

    Re-running pyspf for every message of one sender domain would cost about as
    much as the rest of the message's checks; a result is kept for the shortest TTL
    seen while evaluating it (never one that depends on the sender's local part).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 size: int = RESULT_CACHE_SIZE) -> None:
        self.cache: TtlCache[tuple[str, str, str], Evaluation] = TtlCache(size, clock)
        self.evaluations = 0

    def evaluate(self, domain: str, identity: str, ip: str, sender: str, helo: str,
                 resolver: Resolver, budget: Budget | None) -> Evaluation:
        key = (domain, identity, ip)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        self.evaluations += 1
        ev = evaluate(ip, sender, helo, resolver, budget)
        if ev.reusable:
            self.cache.put(key, ev, min(ev.ttl, MAX_RESULT_TTL))
        return ev
