"""Redis backend: several MTAs share one set of rate limits.

Every read-modify-write is one Lua script, so it is atomic across all milters on
all hosts. Every script touches the keys of ONE hash slot (see `slot_key`), so the
same code runs on one Redis, on a Redis Cluster and on a Sentinel-managed primary.
The rate arithmetic is SQLite's (`postwarden.store.base.gcra`) but, by default, on
the server's clock (`TIME` inside the script; Redis 7 replicates a script's
effects, not the script, so replicas agree): relays whose clocks differ by minutes
enforce the same limit. Connections are lazy and never retried inside a call on a
single server: with Redis down each call fails at once with StoreError (the milter
fails open), and the next call after Redis returns works. The cluster client follows
MOVED/ASK and re-reads the slot map after a node went away; the Sentinel client asks
the sentinels for the current primary on the next connection after a failover.

URLs (password and TLS in the URL):
  redis://[:PASSWORD@]host:port/db, rediss://... (TLS), unix:///path?db=0
  redis+cluster://[:PASSWORD@]host:port[,host:port...]  (rediss+cluster:// for TLS)
  redis+sentinel://[:PASSWORD@]host:port[,host:port...]/SERVICE[/db]

Nothing read back is trusted: a key of the wrong type or a value that is not a finite
number is reset inside the script (one `error:` line says so; the bucket starts
empty, so the limit goes on working), a malformed hold, event or self-check entry is
removed and skipped, and a reply of the wrong shape (a server that is not Redis, a
proxy in between) is a StoreError like any outage: fail open, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedSSLConnection

from postwarden.store.base import (
    AUDIT_RETENTION,
    EVENT_RETENTION,
    HOLD_RETENTION,
    NOTICES_KEEP,
    SEEN_REPEATS,
    SEEN_TTL,
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
from postwarden.store.redis_url import parse_url

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

# ARGV[1] is the caller's time, used only when ARGV[5] is 'caller' (the store test
# suite replays simulated hours against gcra()); otherwise the server's TIME.
_NOW = """
local function server_now(argv_now, clock)
  if clock == 'caller' then return tonumber(argv_now) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS[1] bucket, KEYS[2] (optional, same slot) the message identity already counted.
# ARGV: now, cost, interval, burst, clock, identity TTL (ms). A message seen before
# takes nothing and is admitted again (5th reply element 1): a retried SMTP session
# or a relay restarted mid-message is one message, one unit. Only admitted messages
# are remembered, so a message denied once is judged again on its retry.
_GCRA = _CHECK + _NOW + """
local now, cost = server_now(ARGV[1], ARGV[5]), tonumber(ARGV[2])
local interval, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
-- ARGV[8] 'peek': the same answer, nothing written (the checks look, effects take)
local peek = ARGV[8] == 'peek'
local reset = 0
if peek then
  local ty = redis.call('TYPE', KEYS[1])
  ty = type(ty) == 'table' and ty.ok or ty
  if ty ~= 'none' and ty ~= 'hash' then reset = 1 end
else
  reset = reset_unless_hash(KEYS[1])
end
local seen = 0
if KEYS[2] then
  local raw = redis.pcall('GET', KEYS[2])
  -- not a string (WRONGTYPE): someone else's key; forget it rather than fail for good
  if type(raw) == 'table' and raw.err then
    if not peek then redis.call('DEL', KEYS[2]) end
    raw = false
  end
  seen = tonumber(raw or '0') or 0
end
local raw = false
if reset == 0 then raw = redis.call('HGET', KEYS[1], 't') end
if seen >= 1 and seen <= tonumber(ARGV[7]) then
  if not peek then redis.call('INCR', KEYS[2]) end
  local tat = tonumber(raw or '') or now
  if not finite(tat) or tat - now > 1e9 then tat = now end
  return {1, string.format('%.9f', math.max(tat - now, 0) / interval), '0', reset, 1}
end
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
  if reset == 1 and not peek then redis.call('DEL', KEYS[1]) end
  return {0, string.format('%.9f', (base - now) / interval), string.format('%.6f', over), reset, 0}
end
if peek then return {1, string.format('%.9f', (new_tat - now) / interval), '0', reset, 0} end
-- full precision: a TAT rounded to microseconds can sit just past a full bucket
redis.call('HSET', KEYS[1], 't', string.format('%.17g', new_tat), 'i', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil((new_tat - now) * 1000) + 1000)
if KEYS[2] then redis.call('SET', KEYS[2], tostring(seen + 1), 'PX', ARGV[6]) end
return {1, string.format('%.9f', (new_tat - now) / interval), '0', reset, 0}
"""

# ARGV[5] 'peek': the value now, nothing written (a damaged counter reads as 0)
_BUMP = _CHECK + _NOW + """
local now, amount, hl = server_now(ARGV[1], ARGV[4]), tonumber(ARGV[2]), tonumber(ARGV[3])
local peek = ARGV[5] == 'peek'
local reset = 0
if peek then
  local ty = redis.call('TYPE', KEYS[1])
  ty = type(ty) == 'table' and ty.ok or ty
  if ty ~= 'none' and ty ~= 'hash' then return {'0', 1} end
else
  reset = reset_unless_hash(KEYS[1])
end
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
if peek then return {string.format('%.9f', value), reset} end
redis.call('HSET', KEYS[1], 'v', string.format('%.9f', value), 'u', string.format('%.17g', updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(hl * 20 * 1000))
return {string.format('%.9f', value), reset}
"""

# KEYS: zset, its sequence (one slot). ARGV: retention (seconds), max members, then
# score, payload pairs: a whole batch in one call, all or nothing, on a cluster too
# (a MULTI across scripts is not needed and a cluster pipeline cannot be one).
_APPEND = """
local newest = nil
for i = 3, #ARGV, 2 do
  local seq = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], ARGV[i], seq .. ' ' .. ARGV[i + 1])
  local sc = tonumber(ARGV[i])
  if newest == nil or sc > newest then newest = sc end
end
if newest then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (newest - tonumber(ARGV[1])))
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[2]) + 1))
return #ARGV
"""

# KEYS: list. ARGV: entry, entries kept.
_PUSH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 2
"""

def slot_key(prefix: str, group: str, name: str = "", *parts: str) -> str:
    """THE key builder: `PREFIX{GROUP:NAME}:PART:PART`, or `PREFIX{GROUP}:PART` without
    a name. The braces are a Redis Cluster hash tag: every key with the same group and
    name lands in the same hash slot, so one script may touch all of them (a script's
    keys must share one slot on a cluster). Keys a script reads or writes together
    MUST be built with the same group and name and differ only in `parts`.

    The tag ends at the first `}` after the first `{`, so a `}` in `name` only
    shortens the tag; keys built from the same (group, name) still share it. The
    prefix is checked by the config loader to contain no braces.
    """
    tag = f"{group}:{name}" if name else group
    return prefix + "{" + tag + "}" + "".join(":" + p for p in parts)


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
    """`server_clock=False` makes the scripts use the callers' `now` (the store test
    suite replays simulated hours); the milter always uses the server's clock."""

    shared = True

    def __init__(self, url: str, prefix: str = "postwarden:", timeout: float = 0.5,
                 server_clock: bool = True, seen_ttl: float = SEEN_TTL) -> None:
        super().__init__()
        self.prefix = prefix
        self._clock = "server" if server_clock else "caller"
        self._seen_ms = str(max(1, round(seen_ttl * 1000)))
        self._where = _safe_url(url)
        try:
            self._r: Any = connect(url, timeout)
        except (ValueError, redis.RedisError) as e:
            raise StoreError(f"redis URL {self._where}: {e}") from None
        self._gcra = self._r.register_script(_GCRA)
        self._bump = self._r.register_script(_BUMP)
        self._append = self._r.register_script(_APPEND)
        self._push = self._r.register_script(_PUSH)

        self._delivery = self._r.register_script(_DELIVERY)

    def _k(self, group: str, name: str = "", *parts: str) -> str:
        return slot_key(self.prefix, group, name, *parts)

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
        bad_value(f"redis {self._where}", f"{_shown(key)} entry {_short(member)}", why)
        try:
            self._r.zrem(key, member)
        except (redis.RedisError, OSError):
            pass

    # --- holds ------------------------------------------------------------------
    def record_hold(self, rec: HoldRecord) -> None:
        payload = json.dumps([rec.queue_id, rec.reason, rec.source, rec.sender])
        reply = self._call(self._append,
                           keys=[self._k("holds"), self._k("holds", "", "seq")],
                           args=[HOLD_RETENTION, MAX_EVENTS, repr(rec.when), payload])
        self._expect("the append script", reply, 4)

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
    def rate_take(self, key: str, cost: float, interval: float, burst: float,
                  now: float, once: str = "") -> RateResult:
        return self._rate(key, cost, interval, burst, now, once, "take")

    def rate_peek(self, key: str, cost: float, interval: float, burst: float,
                  now: float, once: str = "") -> RateResult:
        # the take's own script, read-only: the same clock (the server's), the same
        # identity rule and the same damaged-value rule, so a peek never admits what
        # the take then refuses for a reason of its own
        return self._rate(key, cost, interval, burst, now, once, "peek")

    def _rate(self, key: str, cost: float, interval: float, burst: float, now: float,
              once: str, mode: str) -> RateResult:
        keys = [self._k("rl", key)]
        if once:
            keys.append(self._k("rl", key, "seen", _digest(once)))
        reply = self._call(self._gcra, keys=keys,
                           args=[repr(now), repr(cost), repr(interval), repr(burst),
                                 self._clock, self._seen_ms, SEEN_REPEATS, mode])

        def parse(r: Any) -> tuple[bool, float, float, bool]:
            ok, used, retry, reset, _seen = r
            if ok not in (0, 1) or reset not in (0, 1) or _seen not in (0, 1):
                raise ValueError(r)
            return bool(ok), _number(used), _number(retry), bool(reset)

        ok, used, retry, reset = self._parse("the rate script", reply, parse)
        if reset and mode == "take":
            bad_value(f"redis {self._where}", f"bucket {key}",
                      "not a hash of finite numbers; reset to empty")
        return RateResult(ok, used, burst, retry)

    def server_time(self) -> float:
        """The server's clock (on a cluster: one node's), as the scripts read it."""
        def parse(r: Any) -> float:
            sec, usec = r
            return int(sec) + int(usec) / 1e6
        return self._parse("TIME", self._call(self._r.time), parse)

    def buckets(self, now: float, limit: int = 50) -> list[BucketState]:
        # Bucket keys are `PREFIX{rl:NAME}`; the identities under the same tag end in a
        # hex digest, never in `}`. On a cluster scan_iter walks every primary in turn.
        start = self.prefix + "{rl:"
        pattern = _glob_escape(start) + "*}"
        keys = list(self._call(lambda: list(self._r.scan_iter(match=pattern, count=1000))))
        if not keys:
            return []
        if self._clock == "server":
            now = self.server_time()
        pipe = self._r.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, "t", "i", "b")
        rows = self._call(pipe.execute, raise_on_error=False)
        strip = len(start.encode())
        out = []
        for k, row in zip(keys, rows, strict=True):
            raw = k if isinstance(k, bytes) else str(k).encode()
            name = raw[strip:-1].decode("utf-8", "replace")
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
        return self._counter(key, amount, half_life, now, "bump")

    def counter(self, key: str, half_life: float, now: float) -> float:
        return self._counter(key, 0.0, half_life, now, "peek")

    def _counter(self, key: str, amount: float, half_life: float, now: float,
                 mode: str) -> float:
        reply = self._call(self._bump, keys=[self._k("ctr", key)],
                           args=[repr(now), repr(amount), repr(half_life), self._clock, mode])

        def parse(r: Any) -> tuple[float, bool]:
            value, reset = r
            if reset not in (0, 1):
                raise ValueError(r)
            return _number(value), bool(reset)

        value, reset = self._parse("the counter script", reply, parse)
        if reset and mode == "bump":
            bad_value(f"redis {self._where}", f"counter {key}",
                      "not a hash of finite numbers; reset to zero")
        return value

    def rate_reset(self, key: str) -> bool:
        return bool(self._call(self._r.delete, self._k("rl", key)))

    # --- operator audit trail -----------------------------------------------------
    def record_audit(self, rec: AuditRecord) -> None:
        payload = json.dumps([rec.actor, rec.action, rec.target, rec.detail])
        args = [AUDIT_RETENTION, MAX_EVENTS, repr(rec.when), payload]
        reply = self._call(self._append, keys=[self._k("audit"), self._k("audit", "", "seq")],
                           args=args)
        self._expect("the append script", reply, len(args))

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
        args: list[Any] = [EVENT_RETENTION, MAX_EVENTS]
        for e in batch:
            args += [repr(e.when), json.dumps([e.kind, e.source, e.findings])]
        reply = self._call(self._append,
                           keys=[self._k("events"), self._k("events", "", "seq")], args=args)
        self._expect("the append script", reply, len(args))

    def _expect(self, what: str, reply: Any, want: int) -> None:
        """A write script answers with a known number: anything else is not Redis
        running our script (a proxy, another service), so the write did not happen."""
        if not isinstance(reply, int) or isinstance(reply, bool) or reply != want:
            raise StoreError(f"redis {self._where}: unexpected reply to {what}: "
                             f"{_short(reply)}")

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
        reply = self._call(self._push, keys=[self._k("selfcheck")],
                           args=[json.dumps([when, report_json]), SELFCHECK_KEEP])
        self._expect("the self-check script", reply, 2)

    def selfcheck_history(self, limit: int = 10) -> list[SelfcheckRun]:
        runs = [SelfcheckRun(when, report) for when, report
                in self._timed_list("selfcheck", max(limit, 1), "a self-check record")]
        return sorted(runs, key=lambda r: r.when, reverse=True)[:limit]

    def record_notice(self, when: float, text: str) -> None:
        reply = self._call(self._push, keys=[self._k("notices")],
                           args=[json.dumps([when, text]), NOTICES_KEEP])
        self._expect("the notice script", reply, 2)

    def notices(self) -> list[tuple[float, str]]:
        return sorted(self._timed_list("notices", NOTICES_KEEP, "a notice"), reverse=True)

    def _timed_list(self, name: str, count: int, what: str) -> list[tuple[float, str]]:
        """The first `count` [when, text] entries of a list _push wrote; an entry that
        is not one is logged and removed (`what` names what it should have been)."""
        key = self._k(name)
        rows = self._call(self._r.lrange, key, 0, count - 1)
        out = []
        for r in self._parse("LRANGE", rows, list):
            try:
                when, text = json.loads(r)
                if not isinstance(text, str) or not _finite(when):
                    raise ValueError(r)
            except (ValueError, TypeError):
                bad_value(f"redis {self._where}", f"{_shown(key)} entry {_short(r)}",
                          f"not {what}; removed")
                try:
                    self._r.lrem(key, 0, r)
                except (redis.RedisError, OSError):
                    pass
                continue
            out.append((float(when), text))
        return out

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
        # Not one transaction: the record and the index live in different hash slots on
        # a cluster. A record without its index entry is only missed by outbound_since.
        pipe = self._r.pipeline(transaction=False)
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
        pipe = self._r.pipeline(transaction=False)  # per-key GETs: the keys span slots
        for q in qids:
            pipe.get(self._k("ob", q.decode()))
        raws = self._call(pipe.execute)
        return [self._outbound(q.decode(), raw) for q, raw in zip(qids, raws, strict=True)
                if raw is not None]

    def record_delivery(self, rec: DeliveryRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        payload = json.dumps([rec.queue_id, rec.rcpt_domain, rec.relay, rec.status, rec.dsn,
                              rec.cls, rec.text, rec.source, rec.from_domain])
        self._call(self._delivery,
                   keys=[self._k("dl"), self._k("dl", "", "src", rec.source),
                         self._k("dl", "", "seq")],
                   args=[rec.when, payload, rec.when - retention])

    def deliveries(self, since: float, source: str | None = None) -> list[DeliveryRecord]:
        key = self._k("dl") if source is None else self._k("dl", "", "src", source)
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
            self._call(self._r.zadd, self._k("dmarc", "", "idx"), {report_id: when})
        return bool(new)

    def reports(self, since: float) -> list[tuple[str, float, str]]:
        ids = self._call(self._r.zrevrangebyscore, self._k("dmarc", "", "idx"), "+inf", f"({since}")
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
            # A Sentinel service also holds a client per sentinel (primary discovery)
            manager = getattr(getattr(self._r, "connection_pool", None), "sentinel_manager",
                              None)
            for sentinel in getattr(manager, "sentinels", ()):
                self._call(sentinel.close)


def connect(url: str, timeout: float) -> Any:
    """The redis-py client for `url`: one server, a cluster or a Sentinel service."""
    kind, p = parse_url(url)
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if kind == "single":
        return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
                                    health_check_interval=0, **common)
    auth = {"username": p["username"], "password": p["password"]}
    if kind == "cluster":
        # Retries here are what follows a MOVED/ASK or a slot map changed by a failover;
        # a node that is gone costs one connect timeout per try, so few tries.
        return RedisCluster(
            startup_nodes=[ClusterNode(h, port)  # type: ignore[no-untyped-call]
                           for h, port in p["hosts"]],
            retry=Retry(NoBackoff(), 3), require_full_coverage=False,
            ssl=p["ssl"], **auth, **common)
    tls: dict[str, Any] = {"ssl": True} if p["ssl"] else {}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        p["hosts"], sentinel_kwargs={**common, **tls}, **common)
    if p["ssl"]:
        tls = {"connection_class": SentinelManagedSSLConnection}
    # One retry: the first command after a failover reconnects to the new primary.
    return sentinel.master_for(  # type: ignore[no-untyped-call]
        p["service"], db=p["db"], retry=Retry(NoBackoff(), 1), **auth, **common, **tls)


def _shown(key: str) -> str:
    """A key for log lines, without the hash-tag braces."""
    return key.replace("{", "").replace("}", "")


def _digest(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]


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
