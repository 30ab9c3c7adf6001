"""Redis backend: several MTAs share one set of rate limits.

Every read-modify-write is one Lua script, so it is atomic across all milters on
all hosts. Time comes from the callers (`now`), never from Redis, so the
arithmetic is the same as SQLite's (`postwarden.store.base.gcra`). Connections are
lazy and never retried inside a call: with Redis down each call fails at once with
StoreError (the milter fails open), and the next call after Redis returns works.
The URL carries password and TLS: `rediss://:PASSWORD@host:6380/0?ssl_ca_certs=...`.

Nothing read back is trusted: a key of the wrong type or a value that is not a finite
number is reset inside the script (one `error:` line says so; the bucket starts
empty, so the limit goes on working), a malformed hold, event or self-check entry is
removed and skipped, and a reply of the wrong shape (a server that is not Redis, a
proxy in between) is a StoreError like any outage: fail open, never a crash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from postwarden.store.base import (
    AUDIT_RETENTION,
    EVENT_RETENTION,
    HOLD_RETENTION,
    SELFCHECK_KEEP,
    AuditRecord,
    BucketState,
    EventRecord,
    HoldRecord,
    RateResult,
    SelfcheckRun,
    Store,
    StoreError,
    bad_value,
)
from postwarden.store.feedback import OUTBOUND_RETENTION, DeliveryRecord, OutboundRecord

T = TypeVar("T")
MAX_EVENTS = 500_000  # a cap on top of the time-based retention

# A stored value that is not a finite number (or a key that is not a hash) is reset:
# the 4th reply element says so. Never a WRONGTYPE error that fails open for good.
_CHECK = """
local function finite(x) return x ~= nil and x == x and x < math.huge and x > -math.huge end
local function reset_unless_hash(key)
  local ty = redis.call('TYPE', key)
  ty = type(ty) == 'table' and ty.ok or ty
  if ty ~= 'none' and ty ~= 'hash' then redis.call('DEL', key); return 1 end
  return 0
end
"""

_PEEK = """
local ty = redis.call('TYPE', KEYS[1])
ty = type(ty) == 'table' and ty.ok or ty
if ty ~= 'hash' then return false end
return redis.call('HGET', KEYS[1], 't')
"""

_GCRA = _CHECK + """
local now, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
local interval, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local reset = reset_unless_hash(KEYS[1])
local raw = redis.call('HGET', KEYS[1], 't')
local tat = now
if raw then
  tat = tonumber(raw)
  -- a TAT beyond what any burst could reach is as broken as one that is not a number
  if not finite(tat) or tat - now > 1e9 then tat = now; reset = 1 end
end
local base = math.max(tat, now)
local new_tat = base + cost * interval
local over = new_tat - now - burst * interval
if over > 1e-9 then
  if reset == 1 then redis.call('DEL', KEYS[1]) end
  return {0, string.format('%.9f', (base - now) / interval), string.format('%.6f', over), reset}
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', new_tat), 'i', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil((new_tat - now) * 1000) + 1000)
return {1, string.format('%.9f', (new_tat - now) / interval), '0', reset}
"""

_BUMP = _CHECK + """
local now, amount, hl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local reset = reset_unless_hash(KEYS[1])
local cur = redis.call('HMGET', KEYS[1], 'v', 'u')
local value, updated = 0, now
if cur[1] then
  value, updated = tonumber(cur[1]), tonumber(cur[2])
  if not finite(value) or not finite(updated) or value < 0 then
    value, updated, reset = 0, now, 1
  end
  if now > updated then
    value = value * 0.5 ^ ((now - updated) / hl)
    updated = now
  end
end
value = value + amount
redis.call('HSET', KEYS[1], 'v', string.format('%.9f', value), 'u', string.format('%.6f', updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(hl * 20 * 1000))
return {string.format('%.9f', value), reset}
"""

# KEYS: zset, sequence. ARGV: score, payload, drop-below score, max members.
_APPEND = """
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[1], seq .. ' ' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
return seq
"""

# KEYS: all-deliveries zset, per-source zset, sequence. ARGV: score, payload, drop below.
_DELIVERY = """
local seq = redis.call('INCR', KEYS[3])
local member = seq .. ' ' .. ARGV[2]
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ARGV[1], member)
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[3])
end
redis.call('PEXPIRE', KEYS[2], math.ceil((tonumber(ARGV[1]) - tonumber(ARGV[3])) * 1000))
return seq
"""


class RedisStore(Store):
    def __init__(self, url: str, prefix: str = "postwarden:", timeout: float = 0.5) -> None:
        super().__init__()
        self.prefix = prefix
        try:
            self._r: Any = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
                health_check_interval=0)
        except (ValueError, redis.RedisError) as e:
            raise StoreError(f"redis URL {_safe_url(url)}: {e}") from None
        self._where = _safe_url(url)
        self._gcra = self._r.register_script(_GCRA)
        self._peek = self._r.register_script(_PEEK)
        self._bump = self._r.register_script(_BUMP)
        self._append = self._r.register_script(_APPEND)
        self._delivery = self._r.register_script(_DELIVERY)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (redis.RedisError, OSError) as e:
            raise StoreError(f"redis {self._where}: {e}") from None
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            # redis-py parsing a reply Redis would never send
            raise StoreError(f"redis {self._where}: unexpected reply "
                             f"({type(e).__name__}: {e})") from None

    def _parse(self, what: str, reply: Any, fn: Callable[[Any], T]) -> T:
        """A reply of the wrong shape is a StoreError (fail open), never a crash."""
        try:
            return fn(reply)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError,
                UnicodeDecodeError) as e:
            raise StoreError(f"redis {self._where}: unexpected reply to {what}: "
                             f"{_short(reply)} ({type(e).__name__})") from None

    def _drop_member(self, key: str, member: Any, why: str) -> None:
        bad_value(f"redis {self._where}", f"{key} entry {_short(member)}", why)
        try:
            self._r.zrem(key, member)
        except (redis.RedisError, OSError):
            pass

    # --- holds ------------------------------------------------------------------
    def record_hold(self, rec: HoldRecord) -> None:
        payload = json.dumps([rec.queue_id, rec.reason, rec.source, rec.sender])
        self._call(self._append, keys=[self._k("holds"), self._k("seq")],
                   args=[rec.when, payload, rec.when - HOLD_RETENTION, MAX_EVENTS])

    def holds(self, since: float = 0.0) -> list[HoldRecord]:
        key = self._k("holds")
        rows = self._call(self._r.zrevrangebyscore, key, "+inf", f"({since}", withscores=True)
        out = []
        for member, score in self._parse("ZREVRANGEBYSCORE", rows, _pairs):
            fields = _entry(member, 4)
            if fields is None or not _finite(score):
                self._drop_member(key, member, "not a hold record")
                continue
            out.append(HoldRecord(fields[0], float(score), fields[1], fields[2], fields[3]))
        return out

    # --- rate limits ------------------------------------------------------------
    def _rate_tat(self, key: str) -> float | None:
        # a script, not HGET: a key that is not a hash reads as empty (rate_take then
        # resets it), never a WRONGTYPE error that would fail the limit open for good
        raw = self._call(self._peek, keys=[self._k("rl", key)])
        try:
            return float(raw) if raw is not None else None
        except (TypeError, ValueError):
            return None  # not a number: rate_take resets it

    def rate_take(self, key: str, cost: float, interval: float, burst: float,
                  now: float) -> RateResult:
        reply = self._call(self._gcra, keys=[self._k("rl", key)],
                           args=[repr(now), repr(cost), repr(interval), repr(burst)])

        def parse(r: Any) -> tuple[bool, float, float, bool]:
            ok, used, retry, reset = r
            if ok not in (0, 1) or reset not in (0, 1):
                raise ValueError(r)
            return bool(ok), _number(used), _number(retry), bool(reset)

        ok, used, retry, reset = self._parse("the rate script", reply, parse)
        if reset:
            bad_value(f"redis {self._where}", f"bucket {key}",
                      "not a hash of finite numbers; reset to empty")
        return RateResult(ok, used, burst, retry)

    def buckets(self, now: float, limit: int = 50) -> list[BucketState]:
        pattern = _glob_escape(self._k("rl", "")) + "*"
        keys = list(self._call(lambda: list(self._r.scan_iter(match=pattern, count=1000))))
        if not keys:
            return []
        pipe = self._r.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, "t", "i", "b")
        rows = self._call(pipe.execute, raise_on_error=False)
        strip = len(self._k("rl", "").encode())
        out = []
        for k, row in zip(keys, rows, strict=True):
            name = k[strip:].decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
            try:
                tat, interval, b = (_number(v) for v in row)
                if interval <= 0 or b <= 0 or tat - now > 1e9:
                    raise ValueError(row)
            except (ValueError, TypeError):
                bad_value(f"redis {self._where}", f"bucket {name}",
                          f"{_short(row)} is not a bucket; deleted")
                try:
                    self._r.delete(k)
                except (redis.RedisError, OSError):
                    pass
                continue
            if tat <= now:
                continue
            out.append(BucketState(name, (tat - now) / interval, b, interval))
        out.sort(key=lambda s: s.used / s.burst if s.burst else 0.0, reverse=True)
        return out[:limit]

    def bump(self, key: str, amount: float, half_life: float, now: float) -> float:
        reply = self._call(self._bump, keys=[self._k("ctr", key)],
                           args=[repr(now), repr(amount), repr(half_life)])

        def parse(r: Any) -> tuple[float, bool]:
            value, reset = r
            if reset not in (0, 1):
                raise ValueError(r)
            return _number(value), bool(reset)

        value, reset = self._parse("the counter script", reply, parse)
        if reset:
            bad_value(f"redis {self._where}", f"counter {key}",
                      "not a hash of finite numbers; reset to zero")
        return value

    def rate_reset(self, key: str) -> bool:
        return bool(self._call(self._r.delete, self._k("rl", key)))

    # --- operator audit trail -----------------------------------------------------
    def record_audit(self, rec: AuditRecord) -> None:
        payload = json.dumps([rec.actor, rec.action, rec.target, rec.detail])
        self._call(self._append, keys=[self._k("audit"), self._k("seq")],
                   args=[rec.when, payload, rec.when - AUDIT_RETENTION, MAX_EVENTS])

    def audit(self, since: float = 0.0) -> list[AuditRecord]:
        rows = self._call(self._r.zrevrangebyscore, self._k("audit"), "+inf",
                          f"({since}", withscores=True)
        out = []
        for member, score in rows:
            actor, action, target, detail = json.loads(member.split(b" ", 1)[1])
            out.append(AuditRecord(float(score), actor, action, target, detail))
        return out

    # --- events -----------------------------------------------------------------
    def _write_events(self, batch: list[EventRecord]) -> None:
        pipe = self._r.pipeline(transaction=True)
        for e in batch:
            self._append(keys=[self._k("events"), self._k("seq")],
                         args=[e.when, json.dumps([e.kind, e.source, e.findings]),
                               e.when - EVENT_RETENTION, MAX_EVENTS], client=pipe)
        self._call(pipe.execute)

    def _read_events(self, since: float, limit: int) -> list[EventRecord]:
        key = self._k("events")
        rows = self._call(self._r.zrevrangebyscore, key, "+inf", f"({since}", start=0,
                          num=limit, withscores=True)
        out = []
        for member, score in self._parse("ZREVRANGEBYSCORE", rows, _pairs):
            fields = _entry(member, 3)
            if fields is None or not _finite(score):
                self._drop_member(key, member, "not an event record")
                continue
            out.append(EventRecord(float(score), fields[0], fields[1], fields[2]))
        return out

    # --- self-check history -----------------------------------------------------
    def record_selfcheck(self, when: float, report_json: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.lpush(self._k("selfcheck"), json.dumps([when, report_json]))
        pipe.ltrim(self._k("selfcheck"), 0, SELFCHECK_KEEP - 1)
        self._call(pipe.execute)

    def selfcheck_history(self, limit: int = 10) -> list[SelfcheckRun]:
        key = self._k("selfcheck")
        rows = self._call(self._r.lrange, key, 0, max(limit, 1) - 1)
        runs = []
        for r in self._parse("LRANGE", rows, list):
            try:
                when, report = json.loads(r)
                if not isinstance(report, str) or not _finite(when):
                    raise ValueError(r)
            except (ValueError, TypeError):
                bad_value(f"redis {self._where}", f"{key} entry {_short(r)}",
                          "not a self-check record; removed")
                try:
                    self._r.lrem(key, 0, r)
                except (redis.RedisError, OSError):
                    pass
                continue
            runs.append(SelfcheckRun(float(when), report))
        return sorted(runs, key=lambda r: r.when, reverse=True)[:limit]

    # --- named values -------------------------------------------------------------
    def put_meta(self, key: str, value: str) -> None:
        self._call(self._r.set, self._k("meta", key), value)

    def get_meta(self, key: str) -> str | None:
        v = self._call(self._r.get, self._k("meta", key))
        return None if v is None else bytes(v).decode("utf-8", "replace")

    # --- feedback ---------------------------------------------------------------
    # One key per queue ID that Redis expires by itself, and a time index for
    # outbound_since; deliveries in one zset plus one per source (the brake check
    # reads only its source's).
    def record_outbound(self, rec: OutboundRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        payload = json.dumps([rec.when, rec.source, rec.origin, rec.env_domain,
                              rec.from_domain, rec.signed, rec.dkim, rec.spf, rec.dmarc])
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._k("ob", rec.queue_id), payload, px=max(1, int(retention * 1000)))
        pipe.zadd(self._k("obidx"), {rec.queue_id: rec.when})
        pipe.zremrangebyscore(self._k("obidx"), "-inf", f"({rec.when - retention}")
        self._call(pipe.execute)

    def outbound(self, queue_id: str) -> OutboundRecord | None:
        raw = self._call(self._r.get, self._k("ob", queue_id))
        return None if raw is None else self._outbound(queue_id, raw)

    @staticmethod
    def _outbound(queue_id: str, raw: bytes) -> OutboundRecord:
        when, src, origin, env, frm, signed, dkim, spf, dmarc = json.loads(raw)
        return OutboundRecord(queue_id, float(when), src, origin, env, frm, bool(signed),
                              dkim, spf, dmarc)

    def outbound_since(self, since: float) -> list[OutboundRecord]:
        qids = self._call(self._r.zrevrangebyscore, self._k("obidx"), "+inf", f"({since}")
        if not qids:
            return []
        raws = self._call(self._r.mget, [self._k("ob", q.decode()) for q in qids])
        return [self._outbound(q.decode(), raw) for q, raw in zip(qids, raws, strict=True)
                if raw is not None]

    def record_delivery(self, rec: DeliveryRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        payload = json.dumps([rec.queue_id, rec.rcpt_domain, rec.relay, rec.status, rec.dsn,
                              rec.cls, rec.text, rec.source, rec.from_domain])
        self._call(self._delivery,
                   keys=[self._k("dl"), self._k("dlsrc", rec.source), self._k("seq")],
                   args=[rec.when, payload, rec.when - retention])

    def deliveries(self, since: float, source: str | None = None) -> list[DeliveryRecord]:
        key = self._k("dl") if source is None else self._k("dlsrc", source)
        rows = self._call(self._r.zrevrangebyscore, key, "+inf", f"({since}", withscores=True)
        out = []
        for member, score in rows:
            qid, rcpt, relay, status, dsn, cls, text, src, frm = json.loads(
                member.split(b" ", 1)[1])
            out.append(DeliveryRecord(qid, float(score), rcpt, relay, status, dsn, cls, text,
                                      src, frm))
        return out

    def claim_report(self, report_id: str, when: float, summary: str) -> bool:
        new = self._call(self._r.hsetnx, self._k("dmarc"), report_id,
                         json.dumps([when, summary]))
        if new:
            self._call(self._r.zadd, self._k("dmarcidx"), {report_id: when})
        return bool(new)

    def reports(self, since: float) -> list[tuple[str, float, str]]:
        ids = self._call(self._r.zrevrangebyscore, self._k("dmarcidx"), "+inf", f"({since}")
        if not ids:
            return []
        raws = self._call(self._r.hmget, self._k("dmarc"), ids)
        out = []
        for rid, raw in zip(ids, raws, strict=True):
            if raw is not None:
                when, summary = json.loads(raw)
                out.append((rid.decode("utf-8", "replace"), float(when), str(summary)))
        return out

    def close(self) -> None:
        try:
            self.flush_events()
        finally:
            self._call(self._r.close)


def _safe_url(url: str) -> str:
    """The URL without its password, for log lines."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def _short(value: Any) -> str:
    return repr(value)[:80]


def _number(value: Any) -> float:
    """A finite float from a reply element (bytes, str, int); ValueError otherwise."""
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(value)
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(value)
    return x


def _finite(value: Any) -> bool:
    try:
        _number(value)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _pairs(rows: Any) -> list[tuple[Any, Any]]:
    out = [(m, sc) for m, sc in rows]
    return out


def _entry(member: Any, n: int) -> list[str] | None:
    """`SEQ JSON-list-of-n-strings`, as _APPEND writes it; None if it is not."""
    try:
        seq, payload = member.split(b" ", 1)
        int(seq)
        fields = json.loads(payload)
    except (ValueError, TypeError, AttributeError):
        return None
    if not isinstance(fields, list) or len(fields) != n \
            or not all(isinstance(f, str) for f in fields):
        return None
    return fields


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)
