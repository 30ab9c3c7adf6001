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
from dataclasses import replace

from postwarden.config import LimitConfig
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.forms import (
    MEMO_SOURCE,
    Source,
    add_signal,
    body_text,
    clean_key,
    sasl_name,
    score,
)
from postwarden.milter.pipeline import CheckContext, RateTake
from postwarden.store import StoreError

SHORT_HALF_LIFE = 600.0  # "now" for burst detection
LONG_HALF_LIFE = 86400.0  # "usual" for burst detection
_HOST = socket.gethostname()  # queue IDs are unique per host only


def fingerprint(msg: Message, scan_bytes: int) -> str:
    """The body's text, case and whitespace folded: the same form spam hashes the same."""
    text = re.sub(rb"\s+", b" ", body_text(msg, scan_bytes).lower()).strip()
    return hashlib.sha256(text).hexdigest()[:16]


def history_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """`form.repeated_body` and `form.burst` for form mail (needs the store)."""
    cfg = ctx.services.config.forms
    source: Source | None = ctx.memo.get(MEMO_SOURCE)
    store = ctx.services.store
    if not cfg.enabled or source is None or not source.form or store is None:
        return []
    now = ctx.services.clock()
    health = ctx.services.health
    health.know(store, ctx.services.config.ratelimit.degraded_fraction)
    if health.skip_store(now):
        return []
    try:
        repeats = store.bump(f"fp:{source.key}:{fingerprint(msg, cfg.body_scan_bytes)}",
                             1, cfg.repeat_window, now)
        short = store.bump(f"short:{source.key}", 1, SHORT_HALF_LIFE, now)
        usual = store.bump(f"usual:{source.key}", 1, LONG_HALF_LIFE, now)
    except StoreError as e:
        health.failed(e, "form history", store, now,
                      ctx.services.config.ratelimit.degraded_fraction)
        return []
    health.ok(store, now)
    out = []
    # Decaying counts are a little under the raw count: round before comparing.
    if round(repeats) >= cfg.repeat_count:
        out.append(add_signal(ctx, "repeated_body",
                              f"same body {repeats:.0f} times recently from {source.shown}",
                              source))
    # A decaying count with half-life h approximates rate * h / ln 2.
    rate_now = short * math.log(2) / SHORT_HALF_LIFE
    rate_usual = usual * math.log(2) / LONG_HALF_LIFE
    if round(short) >= cfg.burst_min and rate_now >= cfg.burst_factor * rate_usual:
        out.append(add_signal(ctx, "burst",
                              f"{rate_now * 3600:.0f}/hour from {source.shown}, "
                              f"usually {rate_usual * 3600:.1f}/hour", source))
    return out


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


def limit_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """`ratelimit.exceeded` (key, count, limit) when a message does not fit its bucket."""
    cfg = ctx.services.config.ratelimit
    store = ctx.services.store
    if not cfg.enabled or store is None:
        return []
    source: Source | None = ctx.memo.get(MEMO_SOURCE)
    factor = cfg.suspicious_cost if score(ctx) >= cfg.costly_score else 1.0
    now = ctx.services.clock()
    once = message_identity(msg)
    health = ctx.services.health
    health.know(store, cfg.degraded_fraction)
    local = health.skip_store(now)
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
                    ctx.takes.clear()
                    return []
                local = True
                ctx.takes[:] = [replace(t, local=True) for t in ctx.takes]
            else:
                health.ok(store, now)
        if local:
            r = health.local_peek(key, cost, interval, limit.burst, now,
                                  cfg.degraded_fraction)
        ctx.takes.append(RateTake(key, cost, interval, limit.burst, once, local))
        if not r.allowed:
            where = " (local budget: shared store unavailable)" if local else ""
            shown = f"{r.burst:g}" if local else limit.burst
            text = (f"{key}: {r.used:.1f} of burst {shown} used{where}, this message "
                    f"costs {cost:g} {limit.count}; limit {limit.rate} per {limit.window}s")
            return [Finding("ratelimit.exceeded", Severity.WARNING, text, {
                "key": key, "limit": limit.name, "count": round(r.used, 2), "cost": cost,
                "rate": limit.rate, "window": limit.window, "burst": limit.burst,
                "retry_after": round(r.retry_after, 1), "degraded": local,
                "source": source.key if source else ""})]
    return []
