"""The one resolver: configured nameservers and port, bounded time, TTL cache.

Every DNS question postwarden asks goes through a Resolver built by `from_config`,
so tests point all of it at a local nameserver and the milter's hot path never
repeats a lookup it has a fresh answer for. Errors are states, not exceptions:
an answer is `ok`, `nxdomain`, `nodata` or `temperror` (timeout, SERVFAIL,
REFUSED, no server, budget spent).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from postwarden.config import DnsConfig
from postwarden.ttlcache import TtlCache

Status = Literal["ok", "nxdomain", "nodata", "temperror"]
NEGATIVE_TTL_CAP = 900
POSITIVE_TTL_CAP = 86400


@dataclass(frozen=True)
class Answer:
    status: Status
    records: tuple[str, ...] = ()
    ttl: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def exists(self) -> bool:
        """The name has no records of this type, definitively (not a failure)."""
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        return self.status == "temperror"


class Budget:
    """Time left for one message's DNS: lookups past it fail as temperror at once."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = clock() + seconds

    def remaining(self) -> float:
        return self._deadline - self._clock()


UNLIMITED: Budget | None = None


class Resolver:
    def __init__(
        self,
        nameservers: list[str] | None = None,
        port: int = 53,
        timeout: float = 2.0,
        cache_size: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nameservers:
            self._res = dns.resolver.Resolver(configure=False)
            self._res.nameservers = list(nameservers)
        else:
            self._res = dns.resolver.Resolver(configure=True)
        self._res.port = port
        self._res.cache = None
        self.timeout = timeout
        self._cache: TtlCache[tuple[str, str], Answer] = TtlCache(cache_size, clock)
        self.queries = 0  # answers fetched from the network (not the cache)

    @property
    def nameservers(self) -> list[str]:
        return [str(n) for n in self._res.nameservers]

    def query(self, name: str, rdtype: str, budget: Budget | None = None) -> Answer:
        key = (name.lower().rstrip("."), rdtype.upper())
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        lifetime = self.timeout
        if budget is not None:
            lifetime = min(lifetime, budget.remaining())
            if lifetime <= 0:
                return Answer("temperror", error="DNS budget for this message spent")
        answer = self._fetch(key[0], key[1], lifetime)
        if answer.status != "temperror":
            self._cache.put(key, answer, answer.ttl)
        return answer

    def _fetch(self, name: str, rdtype: str, lifetime: float) -> Answer:
        self.queries += 1
        try:
            ans = self._res.resolve(
                name, rdtype, lifetime=lifetime, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as e:
            response = e.response(e.qnames()[0])  # type: ignore[no-untyped-call]
            return Answer("nxdomain", ttl=_negative_ttl(response))
        except dns.resolver.LifetimeTimeout:
            return Answer("temperror", error=f"timeout after {lifetime:.1f}s")
        except dns.resolver.NoNameservers as e:
            return Answer("temperror", error=_servfail_text(e))
        except (dns.exception.DNSException, OSError, ValueError) as e:
            return Answer("temperror", error=f"{type(e).__name__}: {e}")
        if ans.rrset is None:
            return Answer("nodata", ttl=_negative_ttl(ans.response))
        records = tuple(_text(rd) for rd in ans.rrset)
        return Answer("ok", records, min(int(ans.rrset.ttl), POSITIVE_TTL_CAP))

    # Conveniences used by the checks.
    def txt(self, name: str, budget: Budget | None = None) -> Answer:
        return self.query(name, "TXT", budget)

    def addresses(self, name: str, budget: Budget | None = None) -> tuple[Answer, Answer]:
        return self.query(name, "A", budget), self.query(name, "AAAA", budget)

    def ptr(self, ip: str, budget: Budget | None = None) -> Answer:
        return self.query(dns.reversename.from_address(ip).to_text(), "PTR", budget)

    def clear(self) -> None:
        self._cache.clear()

    def ping(self, budget: Budget | None = None) -> dict[str, str]:
        """Does each nameserver answer at all? server -> "" (it answered, whatever the
        rcode: REFUSED or SERVFAIL is still an answer) or why not. Tells "the resolver
        is down" (one root cause) apart from "one list does not answer"."""
        lifetime = self.timeout if budget is None else min(self.timeout, budget.remaining())
        out = {}
        for ns in self.nameservers:
            out[ns] = self._ping(ns, max(lifetime, 0.05))
        return out

    def _ping(self, server: str, lifetime: float) -> str:
        import dns.query

        q = dns.message.make_query(".", "SOA")
        try:
            dns.query.udp(q, server, timeout=lifetime, port=self._res.port,
                          ignore_unexpected=True)
        except dns.exception.Timeout:
            return f"no answer within {lifetime:.1f}s"
        except (dns.exception.DNSException, OSError, ValueError) as e:
            return f"{type(e).__name__}: {e}"
        return ""

    @property
    def port(self) -> int:
        return int(self._res.port)


def _text(rd: object) -> str:
    """TXT strings joined (RFC 7208 3.3); names without the trailing dot."""
    strings = getattr(rd, "strings", None)
    if strings is not None:
        return b"".join(strings).decode("utf-8", "replace")
    text = rd.to_text()  # type: ignore[attr-defined]
    return str(text).rstrip(".")


def _negative_ttl(response: dns.message.Message | None) -> int:
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return min(int(rrset.ttl), int(rrset[0].minimum), NEGATIVE_TTL_CAP)
    return 60


def _servfail_text(e: dns.resolver.NoNameservers) -> str:
    errors = e.kwargs.get("errors") or []
    if errors:
        server, _tcp, _port, err, *_ = errors[0]
        return f"no usable answer from {server}: {err}"
    return "all nameservers failed"


def reverse_name(ip: str, zone: str) -> str:
    """`2.0.0.127.zone` for IPv4, 32 reversed nibbles for IPv6 (RFC 5782 2.4)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ".".join(reversed(str(addr).split("."))) + "." + zone
    nibbles = addr.exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + "." + zone


def from_config(cfg: DnsConfig, clock: Callable[[], float] = time.monotonic) -> Resolver:
    """The only place a Resolver is built from configuration."""
    return Resolver(cfg.nameservers, cfg.port, cfg.timeout, cfg.cache_size, clock)
