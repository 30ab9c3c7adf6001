"""SPF as the receiver will see it: our public sending IP(s), not the client.

For local mail the client is 127.0.0.1, which tells nothing: a receiver checks
the address our Postfix connects from, so the envelope sender's domain (the
HELO name, `[host] hostname`, for the null sender) is evaluated for every IP in
`[host] ips`. pyspf does the evaluation; its DNS goes through our Resolver (a
`spf.query` subclass), so the message budget and the TTL cache apply. Results
are cached per (domain, IP) for the shortest TTL seen while evaluating, so the
hot path does not re-evaluate SPF for every message of one sender domain.

Findings: spf.fail, spf.softfail, spf.neutral, spf.none, spf.permerror,
spf.temperror (DNS failure or budget spent: not cached, mail goes on), and
spf.unaligned (MAIL FROM organizational domain differs from the From domain;
exact domain when the From domain's DMARC record says aspf=s).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import spf

from postwarden.config import Config
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.auth_results import (
    DKIM,
    FOREIGN_FIX,
    SPF,
    DkimSignature,
    SpfOutcome,
    alignment_mode,
    foreign,
    from_domains,
)
from postwarden.milter.pipeline import CheckContext
from postwarden.orgdomain import aligned

CACHE_SIZE = 4096
MAX_CACHE_TTL = 3600
# Worst first: the outcome over several IPs is the worst one a receiver may see.
_WORST = ("permerror", "fail", "temperror", "softfail", "neutral", "none", "pass")
# Macros that depend on the sender's local part or the HELO: such results are
# not cached per (domain, IP).
_SENDER_MACRO = re.compile(r"%\{[lsh]", re.IGNORECASE)


class _Query(spf.query):  # type: ignore[misc]
    """pyspf's evaluator with its DNS through our Resolver (thread-safe: no globals)."""

    def __init__(self, ip: str, sender: str, helo: str, resolver: Resolver,
                 budget: Budget | None) -> None:
        super().__init__(i=ip, s=sender, h=helo, strict=True, querytime=0)
        self._resolver = resolver
        self._budget = budget
        self.min_ttl = MAX_CACHE_TTL
        self.sender_dependent = False

    def dns(self, name: str, qtype: str, cnames: Any = None,
            ignore_void: bool = False) -> list[Any]:
        """Answers in pyspf's shapes; CNAMEs are followed by the resolver."""
        if not name:
            raise spf.PermError("empty DNS name")
        name = str(name).rstrip(".").lower()
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key in self.cache:
            return list(self.cache[key])
        answer = self._resolver.query(name, qtype, self._budget)
        if answer.failed:
            raise spf.TempError(f"DNS {qtype} {name}: {answer.error}")
        self.min_ttl = min(self.min_ttl, max(answer.ttl, 0))
        result: list[Any] = []
        for rec in answer.records if answer.ok else ():
            if qtype in ("TXT", "SPF"):
                if _SENDER_MACRO.search(rec):
                    self.sender_dependent = True
                result.append((rec.encode("utf-8", "surrogateescape"),))
            elif qtype == "MX":
                pref, _, host = rec.partition(" ")
                result.append((int(pref), host.rstrip(".")))
            else:
                result.append(rec.rstrip("."))
        self.cache[key] = result
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def evaluate_ip(ip: str, sender: str, helo: str, resolver: Resolver,
                budget: Budget | None) -> tuple[str, str, int, bool]:
    """(result, explanation, ttl, sender_dependent) for one IP."""
    q = _Query(ip, sender, helo, resolver, budget)
    result, _code, explanation = q.check()
    return str(result), str(explanation), q.min_ttl, q.sender_dependent


class SpfCache:
    """(domain, identity, IP) -> result until the shortest TTL involved runs out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 size: int = CACHE_SIZE) -> None:
        self._clock, self._size = clock, size
        self._data: OrderedDict[tuple[str, str, str], tuple[float, str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.evaluations = 0

    def get(self, key: tuple[str, str, str]) -> tuple[str, str] | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1], hit[2]

    def put(self, key: tuple[str, str, str], ttl: int, result: str, expl: str) -> None:
        with self._lock:
            self._data[key] = (self._clock() + min(ttl, MAX_CACHE_TTL), result, expl)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def outcome(msg: Message, cfg: Config, resolver: Resolver, budget: Budget | None,
            cache: SpfCache) -> SpfOutcome | None:
    """SPF for this message at the receiver; None when no sending IP is configured."""
    ips = cfg.host.ips
    if not ips:
        return None
    helo = cfg.host.hostname
    domain = msg.mail_from_domain
    identity, sender = "mailfrom", msg.mail_from
    if not msg.mail_from or not domain:
        identity, domain, sender = "helo", helo.lower().rstrip("."), ""
    if not domain:
        return SpfOutcome("", identity, "none", explanation="no domain to check")
    per_ip: list[tuple[str, str]] = []
    explanation = ""
    for ip in ips:
        key = (domain, identity, ip)
        hit = cache.get(key)
        if hit is None:
            cache.evaluations += 1
            result, expl, ttl, dependent = evaluate_ip(ip, sender, helo, resolver, budget)
            if result != "temperror" and not dependent:
                cache.put(key, ttl, result, expl)
        else:
            result, expl = hit
        per_ip.append((ip, result))
        explanation = explanation or (expl if result != "pass" else "")
    worst = min((r for _, r in per_ip), key=_WORST.index)
    return SpfOutcome(domain, identity, worst, tuple(per_ip), explanation)


_SEVERITY = {"fail": Severity.ERROR, "permerror": Severity.ERROR,
             "softfail": Severity.WARNING, "neutral": Severity.WARNING,
             "none": Severity.WARNING, "temperror": Severity.WARNING}


def _text(o: SpfOutcome) -> str:
    ips = " ".join(ip for ip, r in o.per_ip if r != "pass") or "our IPs"
    who = f"HELO name {o.domain}" if o.identity == "helo" else f"envelope sender domain {o.domain}"
    mech = " ".join(f"ip{'6' if ':' in ip else '4'}:{ip}" for ip, r in o.per_ip if r != "pass")
    if o.result == "none":
        return f"{who} publishes no SPF record; publish \"v=spf1 {mech} -all\" at {o.domain}"
    if o.result == "permerror":
        return (f"SPF record of {who} is broken ({o.explanation}); receivers treat it as "
                f"a failure: fix the record (at most 10 DNS-querying terms) and include {mech}")
    if o.result == "temperror":
        return (f"SPF of {who} could not be evaluated ({o.explanation}); check the DNS "
                "resolver postwarden uses ([dns] nameservers)")
    return (f"SPF {o.result} for {who} from {ips}: receivers will see this host as "
            f"{'not allowed' if o.result in ('fail', 'softfail') else 'not authorised'}; "
            f"add {mech} to the SPF record of {o.domain}")


def check_spf(msg: Message, ctx: CheckContext, cache: SpfCache) -> list[Finding]:
    o = outcome(msg, ctx.services.config, ctx.services.resolver, ctx.budget, cache)
    if o is None:
        ctx.summary["spf"] = "unknown"
        return []
    ctx.memo[SPF] = o
    ctx.summary["spf"] = o.result
    out: list[Finding] = []
    if o.result != "pass":
        out.append(Finding(f"spf.{o.result}", _SEVERITY.get(o.result, Severity.WARNING),
                           _text(o), {"domain": o.domain, "identity": o.identity,
                                      "ips": dict(o.per_ip), "explanation": o.explanation}))
    for dom in from_domains(msg):
        mode = alignment_mode(ctx, dom, "aspf")
        if o.domain and not aligned(o.domain, dom, mode):
            sigs: list[DkimSignature] = ctx.memo.get(DKIM, [])
            dkim_ok = any(s.counts and aligned(s.domain, dom, alignment_mode(ctx, dom, "adkim"))
                          for s in sigs)
            exact = " (its DMARC record asks aspf=s: exact domain)" if mode == "s" else ""
            if foreign(ctx.services.config, dom):
                fix = f"{dom} is not one of this host's domains: {FOREIGN_FIX}"
            else:
                fix = (f"send with an envelope sender in {dom} (sendmail -f, PHP mail() fifth "
                       f"argument) or sign with a key of {dom}")
            out.append(Finding(
                "spf.unaligned", Severity.INFO if dkim_ok else Severity.WARNING,
                f"envelope sender domain {o.domain} does not align with the From domain "
                f"{dom}{exact}, so SPF cannot make DMARC pass"
                f"{'; DKIM does' if dkim_ok else ''}; {fix}",
                {"mail_from_domain": o.domain, "from_domain": dom, "aspf": mode}))
            break
    return out


class SpfCheck:
    """The pipeline's SPF check; owns the per-process (domain, IP) result cache."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = SpfCache(clock)

    def __call__(self, msg: Message, ctx: CheckContext) -> list[Finding]:
        return check_spf(msg, ctx, self.cache)
