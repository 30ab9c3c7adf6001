"""Rate limits and the suspicion signals that need history.

`history_check` (form mail only) counts, per source, how often this body was seen
(`form.repeated_body`) and whether the source sends far above its usual rate
(`form.burst`). `limit_check` asks each matching limit's GCRA bucket whether the
message's cost fits (a read-only peek); a message that does not fit gets
`ratelimit.exceeded` with the key, the bucket's count and the limit. Limits are
tried in config order and the first one exceeded stops the rest. The units are
taken by postwarden.milter.effects, and only when the decision keeps the message
(delivered or held): a rejected or tempfailed message uses up no budget.

Store failures fail open: the message goes on unlimited, ONE `error:` line per
repeat interval says so, and one `info` line says when counting resumed. A shared
store's outage is degraded mode instead (postwarden.milter.storehealth): each limit
is peeked and later taken in this relay's memory at a fraction of it. The clock
is `ctx.services.clock`, so tests simulate hours without sleeping.
"""

from __future__ import annotations

import hashlib
import math
import re
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from postwarden.config import LimitConfig
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.context import CheckContext, CounterBump, RateTake
from postwarden.milter.forms import (
    Signal,
    Source,
    body_text,
    clean_key,
    sasl_name,
    signal,
    signal_finding,
)
from postwarden.store import StoreError
from postwarden.store.base import RateResult

if TYPE_CHECKING:
    from postwarden.milter.evidence import Evidence

SHORT_HALF_LIFE = 600.0  # "now" for burst detection
LONG_HALF_LIFE = 86400.0  # "usual" for burst detection
_HOST = socket.gethostname()  # queue IDs are unique per host only


def fingerprint(msg: Message, scan_bytes: int) -> str:
    """The body's text, case and whitespace folded: the same form spam hashes the same."""
    text = re.sub(rb"\s+", b" ", body_text(msg, scan_bytes).lower()).strip()
    return hashlib.sha256(text).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class History:
    """A form source's counters as this message would leave them (read, not written:
    `bumps` are added by the effects stage if the decision keeps the message)."""

    signals: dict[str, Signal]
    bumps: tuple[CounterBump, ...]


def read_history(ev: Evidence) -> History | None:
    """`repeated_body` and `burst` for form mail; None without a store or while the
    shared store is known away (degraded mode: history waits)."""
    services = ev.services
    cfg = services.config.forms
    source, store = ev.source(), services.store
    if not cfg.enabled or not source.form or store is None:
        return None
    now = services.clock()
    health = services.health
    fraction = services.config.ratelimit.degraded_fraction
    health.know(store, fraction)
    if health.skip_store(now):
        return None
    bumps = (CounterBump(f"fp:{source.key}:{fingerprint(ev.msg, cfg.body_scan_bytes)}", 1,
                         cfg.repeat_window),
             CounterBump(f"short:{source.key}", 1, SHORT_HALF_LIFE),
             CounterBump(f"usual:{source.key}", 1, LONG_HALF_LIFE))
    try:  # each count with this message in it, as the bump will leave it
        repeats, short, usual = (store.counter(b.key, b.half_life, now) + b.amount
                                 for b in bumps)
    except StoreError as e:
        health.failed(e, "form history", store, now, fraction)
        return None
    health.ok(store, now)
    found: dict[str, Signal] = {}
    # Decaying counts are a little under the raw count: round before comparing.
    if round(repeats) >= cfg.repeat_count:
        found["repeated_body"] = signal(
            cfg, "repeated_body", f"same body {repeats:.0f} times recently from {source.shown}")
    # A decaying count with half-life h approximates rate * h / ln 2.
    rate_now = short * math.log(2) / SHORT_HALF_LIFE
    rate_usual = usual * math.log(2) / LONG_HALF_LIFE
    if round(short) >= cfg.burst_min and rate_now >= cfg.burst_factor * rate_usual:
        found["burst"] = signal(cfg, "burst", f"{rate_now * 3600:.0f}/hour from "
                                f"{source.shown}, usually {rate_usual * 3600:.1f}/hour")
    return History(found, bumps)


def history_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """`form.repeated_body` and `form.burst` for form mail (needs the store)."""
    ev = ctx.evidence(msg)
    history = ev.history()
    if history is None:
        return []
    return [signal_finding(name, sig, ev.source()) for name, sig in history.signals.items()]


def key_for(limit: LimitConfig, msg: Message, source: Source | None) -> str:
    """The bucket key of `limit` for this message; '' when the limit does not apply."""
    if str(msg.origin) not in limit.origins:
        return ""
    if limit.forms_only and (source is None or not source.form):
        return ""
    if limit.key == "source":
        value = source.key if source else ""
    elif limit.key == "sasl_user":
        value = sasl_name(msg.auth_user) if msg.auth_user else ""
    elif limit.key == "sender":
        value = msg.mail_from.lower() or "<>"
    elif limit.key == "client_ip":
        value = msg.client_addr
    else:
        value = msg.from_domain
    # Keys come from headers too (From domain): keep them printable, valid Unicode.
    return f"{limit.name}:{clean_key(value)}" if value else ""


def message_identity(msg: Message) -> str:
    """Who this message is across deliveries of it to the milter: Postfix retrying a
    tempfailed SMTP session sends the same Message-ID from the same client with the
    same envelope under a new queue ID; without a Message-ID the queue ID on this
    host is the best there is. '' (count it) when neither is known."""
    mid = (msg.header("Message-ID") or "").strip()
    if mid:
        parts = ["mid", mid, msg.client_addr, msg.auth_user, msg.mail_from.lower(),
                 *sorted(r.lower() for r in msg.rcpts)]
    elif msg.queue_id and msg.queue_id != "NOQUEUE":
        parts = ["qid", _HOST, msg.queue_id]
    else:
        return ""
    # A digest: the parts are sender bytes (any code point, surrogates included) and
    # every backend stores it as plain ASCII.
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Limits:
    """What the matching rate limits say of one message, peeked: the units it would
    take (effects takes them if the decision keeps it) and the first limit it
    exceeds, as a finding."""

    takes: tuple[RateTake, ...] = ()
    exceeded: Finding | None = None


def peek_limits(ev: Evidence) -> Limits:
    """Ask each matching limit's bucket; the first one exceeded stops the rest."""
    services, msg = ev.services, ev.msg
    cfg = services.config.ratelimit
    store = services.store
    if not cfg.enabled or store is None:
        return Limits()
    source = ev.source()
    factor = cfg.suspicious_cost if ev.score() >= cfg.costly_score else 1.0
    now = services.clock()
    once = message_identity(msg)
    health = services.health
    health.know(store, cfg.degraded_fraction)
    local = health.skip_store(now)
    takes: list[RateTake] = []
    for limit in cfg.limits:
        key = key_for(limit, msg, source)
        if not key:
            continue
        units = len(msg.rcpts) if limit.count == "recipients" else 1
        cost = max(units, 1) * factor
        interval = limit.window / limit.rate
        if not local:
            try:
                r = store.rate_peek(key, cost, interval, limit.burst, now, once=once)
            except StoreError as e:
                health.failed(e, "rate limits", store, now, cfg.degraded_fraction)
                if not health.degraded:
                    return Limits()  # fail open: nothing limited, nothing taken
                local = True
                takes = [replace(t, local=True) for t in takes]
            else:
                health.ok(store, now)
        if local:
            r = health.local_peek(key, cost, interval, limit.burst, now,
                                  cfg.degraded_fraction)
        takes.append(RateTake(key, cost, interval, limit.burst, once, local, limit,
                              source.key))
        if not r.allowed:
            return Limits(tuple(takes), exceeded(takes[-1], r))
    return Limits(tuple(takes))


def exceeded(take: RateTake, r: RateResult) -> Finding:
    """`ratelimit.exceeded` for the bucket of `take`, which refused its units."""
    limit, local = take.limit, take.local
    assert limit is not None
    where = " (local budget: shared store unavailable)" if local else ""
    shown = f"{r.burst:g}" if local else limit.burst
    text = (f"{take.key}: {r.used:.1f} of burst {shown} used{where}, this message "
            f"costs {take.cost:g} {limit.count}; limit {limit.rate} per {limit.window}s")
    return Finding("ratelimit.exceeded", Severity.WARNING, text, {
        "key": take.key, "limit": limit.name, "count": round(r.used, 2), "cost": take.cost,
        "rate": limit.rate, "window": limit.window, "burst": limit.burst,
        "retry_after": round(r.retry_after, 1), "degraded": local, "source": take.source})


def limit_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """`ratelimit.exceeded` (key, count, limit) when a message does not fit its bucket."""
    exceeded = ctx.evidence(msg).limits().exceeded
    return [exceeded] if exceeded is not None else []
