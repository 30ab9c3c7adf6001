"""Rate limits and the suspicion signals that need history.

`history_check` (form mail only) counts, per source, how often this body was seen
(`form.repeated_body`) and whether the source sends far above its usual rate
(`form.burst`). `limit_check` takes each matching limit's cost from its GCRA
bucket; a message that does not fit gets `ratelimit.exceeded` with the key, the
bucket's count and the limit. Limits are tried in config order and the first one
exceeded stops the rest (units already taken from earlier limits stay taken).

Store failures fail open: the message goes on unlimited, ONE `error:` line per
repeat interval says so, and one `info` line says when counting resumed. The clock
is `ctx.services.clock`, so tests simulate hours without sleeping.
"""

from __future__ import annotations

import hashlib
import math
import re
import socket
import threading
import time

from postwarden.config import LimitConfig
from postwarden.findings import Finding, Severity
from postwarden.log import log
from postwarden.message import Message
from postwarden.metrics import metrics
from postwarden.milter.forms import (
    MEMO_SOURCE,
    Source,
    add_signal,
    body_text,
    clean_key,
    sasl_name,
    score,
)
from postwarden.milter.pipeline import CheckContext
from postwarden.store import Store, StoreError
from postwarden.store.base import MAX_PENDING, HoldRecord, RateResult, gcra

SHORT_HALF_LIFE = 600.0  # "now" for burst detection
LONG_HALF_LIFE = 86400.0  # "usual" for burst detection
_LOG_KEY = "store.unavailable"
_HOST = socket.gethostname()  # queue IDs are unique per host only


class StoreHealth:
    """Remembers that the store failed, so its return is logged once.

    With a shared store (Redis) an outage is degraded mode: each relay enforces every
    rate limit alone, in memory, at `degraded_fraction` of it (several relays each
    taking their own share must not add up to more than the shared limit by much),
    and says so: one `warning:` line when it starts, one when it ends with the count
    of messages passed and held meanwhile, and a store notice `postwarden status`
    shows. The local budgets are dropped on recovery and nothing is replayed into the
    shared buckets, so no message is counted twice.
    """

    LOCAL_KEYS = 10000  # local budgets kept; the emptiest are dropped past this
    # A cluster with one node gone answers for some keys and not others: degraded mode
    # ends only after this many seconds without a failure, or it would flap (a line
    # pair per message) while the history keys' nodes answer and the limit's does not.
    RECOVER_AFTER = 5.0
    # While degraded, one message per second asks the store (a cluster that lost a
    # node can take a second per command to say so); the others go local at once.
    PROBE_EVERY = 1.0

    def __init__(self) -> None:
        self._down = False
        self._degraded = False
        self._lock = threading.Lock()
        self.since = 0.0
        self.passed = 0
        self.held = 0
        self.periods = 0
        self._local: dict[str, float] = {}
        self._last_failure = 0.0
        self._last_probe = 0.0
        self._holds: list[HoldRecord] = []
        self._known: tuple[Store | None, float] = (None, 0.0)

    def know(self, store: Store, fraction: float) -> None:
        """The store and degraded_fraction in use, for failures reported without them
        (the flush timer), so an outage it sees first starts degraded mode too."""
        self._known = (store, fraction)

    @property
    def degraded(self) -> bool:
        return self._degraded

    def failed(self, e: StoreError, what: str, store: Store | None = None,
               now: float | None = None, fraction: float = 0.0) -> None:
        """`store` and `fraction` > 0: a shared store's outage starts degraded mode."""
        metrics.store_errors.inc()
        if store is None:  # the flush timer: what the limits' own calls said
            store, fraction = self._known
        shared = store is not None and store.shared and fraction > 0
        with self._lock:
            self._down = True
            if now is not None:
                self._last_failure = now
            entering = shared and not self._degraded
            if entering:
                self._degraded = True
                self.since = time.time() if now is None else now
                self._last_probe = self.since
                self.passed = self.held = 0
                self._local.clear()
                self.periods += 1
            degraded = self._degraded
        if entering:
            log.warning(f"store unavailable: {e}; degraded mode: each rate limit is "
                        f"enforced by this relay alone at {fraction:.0%} of it, form history "
                        "and activity wait, until the store returns")
            return
        if degraded:
            return  # one line per outage, whatever else fails during it
        # One line per condition (locked, full, read-only, gone), not one per message.
        cause = re.sub(r"[\d.:/]+", "", str(e))[-60:]
        log.limited(f"{_LOG_KEY}|{cause}", "error", f"store unavailable: {e}; {what} not "
                    "enforced (fail open) until it returns")

    def ok(self, store: Store | None = None, now: float | None = None) -> None:
        """The store answered. Callers that only queued (activity, the flush timer
        with nothing to write) pass no store: they cannot end degraded mode."""
        if not self._down:
            return
        if self._degraded and (store is None or now is None
                               or now - self._last_failure < self.RECOVER_AFTER):
            return  # only the limits' own round trips, and only once they keep working
        with self._lock:
            was = self._clear_down()
            degraded, self._degraded = self._degraded, False
            passed, held, since = self.passed, self.held, self.since
            self._local.clear()
        if not was:
            return  # another thread saw the return first
        if not degraded:
            log.info("store reachable again: rate limits and history resumed")
            return
        end = time.time() if now is None else now
        text = (f"degraded mode for {max(end - since, 0):.0f}s from "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} on {_HOST}: "
                f"store unreachable; {passed} messages passed and {held} held on local "
                "budgets")
        log.warning(f"store reachable again: {text}; shared rate limits resumed")
        if store is not None:
            with self._lock:
                holds, self._holds = self._holds, []
            try:
                store.record_notice(end, text)
                for rec in holds:
                    store.record_hold(rec)
            except StoreError:
                pass  # the next outage began already; the hold lines are in the log

    def record_hold(self, store: Store, rec: HoldRecord) -> None:
        """Keep why a message was held. While degraded the reasons wait in memory (like
        activity events) and are written when the store returns: a held message must
        not wait for a store that is known to be away."""
        with self._lock:
            if self._degraded:
                if len(self._holds) < MAX_PENDING:
                    self._holds.append(rec)
                return
        store.record_hold(rec)

    def skip_store(self, now: float) -> bool:
        """Degraded and this is not the second's probe: do not wait for the store."""
        with self._lock:
            if not self._degraded:
                return False
            if now - self._last_probe >= self.PROBE_EVERY or now < self._last_probe:
                self._last_probe = now
                return False
            return True

    def _clear_down(self) -> bool:
        was, self._down = self._down, False
        return was

    def local_take(self, key: str, cost: float, interval: float, burst: float,
                   now: float, fraction: float) -> RateResult:
        """The degraded-mode budget: gcra() in memory at `fraction` of the limit."""
        with self._lock:
            if len(self._local) >= self.LOCAL_KEYS:
                for k in [k for k, tat in self._local.items() if tat <= now]:
                    del self._local[k]
                while len(self._local) >= self.LOCAL_KEYS:
                    del self._local[min(self._local, key=self._local.__getitem__)]
            tat, r = gcra(self._local.get(key, now), now, cost, interval / fraction,
                          burst * fraction)
            self._local[key] = tat
            return r

    def count(self, held: bool) -> None:
        with self._lock:
            if self._degraded:
                self.held += held
                self.passed += not held

    def state(self) -> dict[str, object]:
        """For metrics and the daemon's own status: degraded now, since when, counts."""
        with self._lock:
            return {"degraded": self._degraded, "since": self.since if self._degraded else 0.0,
                    "passed": self.passed, "held": self.held, "periods": self.periods}


health = StoreHealth()


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
                r = store.rate_take(key, cost, interval, limit.burst, now, once=once)
            except StoreError as e:
                health.failed(e, "rate limits", store, now, cfg.degraded_fraction)
                if not health.degraded:
                    return []
                local = True
            else:
                health.ok(store, now)
        if local:
            r = health.local_take(key, cost, interval, limit.burst, now,
                                  cfg.degraded_fraction)
        if not r.allowed:
            if local:
                health.count(held=True)
            where = " (local budget: shared store unavailable)" if local else ""
            shown = f"{r.burst:g}" if local else limit.burst
            text = (f"{key}: {r.used:.1f} of burst {shown} used{where}, this message "
                    f"costs {cost:g} {limit.count}; limit {limit.rate} per {limit.window}s")
            return [Finding("ratelimit.exceeded", Severity.WARNING, text, {
                "key": key, "limit": limit.name, "count": round(r.used, 2), "cost": cost,
                "rate": limit.rate, "window": limit.window, "burst": limit.burst,
                "retry_after": round(r.retry_after, 1), "degraded": local,
                "source": source.key if source else ""})]
    if local:
        health.count(held=False)
    return []
