"""Operator commands: held, release, delete, ratelimit show / reset.

Held mail is Postfix's hold queue (`postqueue -j`) joined with the reasons
postwarden kept in the store (Postfix does not keep them). release and delete
wrap `postsuper -H` / `postsuper -d QUEUEID hold`, and every action that changes
something is written to the store's audit trail (who, when, what, why), which
`postwarden status` shows. Like postqueue and postsuper these honour
MAIL_CONFIG for a Postfix configuration other than the default.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from postwarden import config as configmod
from postwarden.config import Config
from postwarden.store import Store, StoreError, open_store
from postwarden.store.base import AuditRecord, HoldRecord

HOLD_LOOKBACK = 30 * 86400


class AdminError(RuntimeError):
    pass


@dataclass(frozen=True)
class Held:
    queue_id: str
    age: float  # seconds since Postfix received it
    sender: str
    recipients: int
    reason: str  # "" when postwarden did not hold it (held by hand or another milter)
    source: str


def actor() -> str:
    """The person behind the command: sudo's caller, else the login of this uid."""
    who = os.environ.get("SUDO_USER", "")
    if who:
        return who
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


def _postfix_tool(name: str) -> str:
    exe = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if exe is None:
        raise AdminError(f"{name} not found: is Postfix installed?")
    return exe


def hold_queue() -> list[dict[str, Any]]:
    """Postfix's hold queue entries, as postqueue -j describes them."""
    r = subprocess.run([_postfix_tool("postqueue"), "-j"], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise AdminError(f"postqueue -j failed: {r.stderr.strip()}")
    out = []
    for line in r.stdout.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("queue_name") == "hold":
            out.append(entry)
    return out


def held(store: Store | None, now: float, source: str = "") -> list[Held]:
    reasons: dict[str, HoldRecord] = {}
    if store is not None:
        for h in reversed(store.holds(since=now - HOLD_LOOKBACK)):  # newest wins
            reasons[h.queue_id] = h
    out = []
    for e in hold_queue():
        qid = str(e.get("queue_id", ""))
        rec = reasons.get(qid)
        item = Held(qid, max(0.0, now - float(e.get("arrival_time", now))),
                    str(e.get("sender", "")), len(e.get("recipients", [])),
                    rec.reason if rec else "", rec.source if rec else "")
        if not source or item.source == source:
            out.append(item)
    return sorted(out, key=lambda h: -h.age)


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def render_held(items: list[Held]) -> str:
    if not items:
        return "nothing on the hold queue\n"
    lines = [f"{'QUEUE ID':<14} {'AGE':>8}  {'REASON':<24} {'SOURCE':<36} SENDER"]
    for h in items:
        lines.append(f"{h.queue_id:<14} {_age(h.age):>8}  {h.reason or '(not postwarden)':<24} "
                     f"{h.source or '-':<36} <{h.sender}> ({h.recipients} rcpt)")
    lines.append("release: postwarden release QUEUEID (or --source S); "
                 "delete: postwarden delete QUEUEID")
    return "\n".join(lines) + "\n"


def _targets(args: argparse.Namespace, store: Store | None, now: float) -> list[Held]:
    queue = held(store, now)
    if args.source:
        chosen = [h for h in queue if h.source == args.source]
        if not chosen:
            raise AdminError(f"no held message from source {args.source!r}")
        return chosen
    if not args.queue_ids:
        raise AdminError("name queue IDs or --source")
    by_id = {h.queue_id: h for h in queue}
    missing = [q for q in args.queue_ids if q not in by_id]
    if missing:
        raise AdminError(f"not on the hold queue: {', '.join(missing)} (see postwarden held)")
    return [by_id[q] for q in args.queue_ids]


def act_on_held(args: argparse.Namespace, cfg: Config, store: Store | None) -> int:
    """release / delete: postsuper, then one audit record per message."""
    now = time.time()
    flag = {"release": ["-H"], "delete": ["-d"]}[args.command]
    who = actor()
    failed = 0
    for h in _targets(args, store, now):
        cmd = [_postfix_tool("postsuper"), *flag, h.queue_id]
        if args.command == "delete":
            cmd.append("hold")  # only ever from the hold queue
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            print(f"postwarden: error: {' '.join(cmd)}: {r.stderr.strip()}", file=sys.stderr)
            failed += 1
            continue
        detail = f"reason={h.reason or '-'} source={h.source or '-'}"
        if args.note:
            detail += f" note={args.note}"
        print(f"{h.queue_id}: {'released' if args.command == 'release' else 'deleted'} "
              f"({detail})")
        _audit(store, AuditRecord(time.time(), who, args.command, h.queue_id, detail))
    if args.command == "release" and not failed:
        print("released mail waits in the deferred queue; `postqueue -f` sends it now")
    return 1 if failed else 0


def _audit(store: Store | None, rec: AuditRecord) -> None:
    if store is None:
        print(f"postwarden: warning: store unavailable: {rec.action} {rec.target} not "
              "recorded in the audit trail", file=sys.stderr)
        return
    try:
        store.record_audit(rec)
    except StoreError as e:
        print(f"postwarden: warning: audit record for {rec.target} lost: {e}", file=sys.stderr)


def bucket_rows(store: Store, cfg: Config, now: float, source: str = "") -> list[dict[str, Any]]:
    limits = {lim.name: lim for lim in cfg.ratelimit.limits}
    rows = []
    for b in store.buckets(now, limit=100_000):
        name, _, subject = b.key.partition(":")
        if source and subject != source and b.key != source:
            continue
        lim = limits.get(name)
        rows.append({
            "key": b.key, "limit": name, "subject": subject, "level": round(b.used, 3),
            "burst": b.burst, "rate": lim.rate if lim else None,
            "window": lim.window if lim else None, "count": lim.count if lim else None,
            # GCRA: the level drains one unit per interval; empty after used * interval.
            "refill_seconds": round(b.used * b.interval, 1),
            "next_unit_seconds": round(max(0.0, b.used - b.burst + 1) * b.interval, 1),
        })
    return rows


def render_buckets(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no rate-limit bucket in use\n"
    lines = [f"{'BUCKET':<50} {'LEVEL':>14}  {'LIMIT':<24} EMPTY IN"]
    for r in rows:
        limit = (f"{r['rate']} {r['count']}/{r['window']}s" if r["rate"] is not None
                 else "(no longer configured)")
        full = " FULL" if r["level"] > r["burst"] - 1 else ""
        lines.append(f"{r['key']:<50} {r['level']:>7.2f}/{r['burst']:<6g} {limit:<24} "
                     f"{_age(r['refill_seconds'])}{full}")
    return "\n".join(lines) + "\n"


def ratelimit(args: argparse.Namespace, cfg: Config, store: Store) -> int:
    now = time.time()
    if args.ratelimit_command == "show":
        rows = bucket_rows(store, cfg, now, args.source or "")
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
        else:
            sys.stdout.write(render_buckets(rows))
        return 0
    rows = bucket_rows(store, cfg, now, args.source)
    if not rows:
        print(f"postwarden: no rate-limit bucket in use for {args.source!r}", file=sys.stderr)
        return 1
    who = actor()
    for r in rows:
        if store.rate_reset(r["key"]):
            detail = f"level={r['level']:g}/{r['burst']:g}"
            if args.note:
                detail += f" note={args.note}"
            print(f"{r['key']}: reset ({detail})")
            _audit(store, AuditRecord(time.time(), who, "ratelimit.reset", r["key"], detail))
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    try:
        store: Store | None = open_store(cfg.store)
    except StoreError as e:
        if args.command == "ratelimit":
            print(f"postwarden: error: store {cfg.store.backend} unavailable: {e}",
                  file=sys.stderr)
            return 1
        print(f"postwarden: warning: store {cfg.store.backend} unavailable ({e}): hold "
              "reasons unknown, actions not audited", file=sys.stderr)
        store = None
    try:
        if args.command == "held":
            items = held(store, time.time(), args.source or "")
            if args.json:
                print(json.dumps([asdict(h) for h in items], indent=2, sort_keys=True))
            else:
                sys.stdout.write(render_held(items))
            return 0
        if args.command in ("release", "delete"):
            return act_on_held(args, cfg, store)
        assert store is not None
        return ratelimit(args, cfg, store)
    except (AdminError, StoreError, OSError, subprocess.TimeoutExpired) as e:
        print(f"postwarden: error: {args.command}: {e}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            try:
                store.close()
            except StoreError:
                pass


def add_parsers(sub: Any) -> None:
    """The operator subcommands, on the top-level subparsers of postwarden.cli."""
    h = sub.add_parser("held", help="list the hold queue with postwarden's reason, source, age")
    h.add_argument("--source", help="only messages from this source key (e.g. php:33:form.php)")
    h.add_argument("--json", action="store_true", help="print the list as JSON")
    for name, what in (("release", "release held messages (postsuper -H)"),
                       ("delete", "delete held messages (postsuper -d ... hold)")):
        p = sub.add_parser(name, help=f"{what}, recorded in the audit trail")
        p.add_argument("queue_ids", nargs="*", metavar="QUEUEID", help="queue IDs")
        p.add_argument("--source", help="every held message from this source key")
        p.add_argument("--note", default="", help="why, kept in the audit trail")
    rl = sub.add_parser("ratelimit", help="show or reset rate-limit buckets")
    rlsub = rl.add_subparsers(dest="ratelimit_command", required=True)
    show = rlsub.add_parser("show", help="each bucket's level, limit and time until empty")
    show.add_argument("source", nargs="?", metavar="SOURCE",
                      help="only buckets of this source key (or this bucket key)")
    show.add_argument("--json", action="store_true", help="print the buckets as JSON")
    reset = rlsub.add_parser("reset", help="empty a source's buckets, recorded in the audit trail")
    reset.add_argument("source", metavar="SOURCE", help="source key or bucket key")
    reset.add_argument("--note", default="", help="why, kept in the audit trail")
