"""`postwarden status [--json]`: who uses their limits, what is held and why.

Data first (`collect` -> a dict, printed by --json), text second (`render`, a
pure function of that dict). Held messages come from the store (Postfix 3.7 does
not keep the reason) and are matched against `postqueue -j` (which honours
MAIL_CONFIG), so the list says which are still on the hold queue and gives the
exact commands to release or delete each one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from collections import Counter
from typing import Any

from postwarden import config as configmod
from postwarden.config import Config
from postwarden.feedback import summary as feedback_summary
from postwarden.logsafe import escape, field, line_safe
from postwarden.store import Store, StoreError
from postwarden.store_cli import with_store

HOLD_DAYS = 7
TOP = 20


def hold_queue() -> set[str] | None:
    """Queue IDs on Postfix's hold queue; None when postqueue cannot tell us."""
    exe = shutil.which("postqueue") or shutil.which("postqueue", path="/usr/sbin:/usr/bin")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-j"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    held = set()
    for line in out.stdout.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("queue_name") == "hold":
            held.add(str(entry.get("queue_id")))
    return held


def collect(store: Store, cfg: Config, now: float, on_hold: set[str] | None) -> dict[str, Any]:
    limits = {lim.name: lim for lim in cfg.ratelimit.limits}
    buckets = []
    for b in store.buckets(now, limit=TOP):
        name, _, subject = b.key.partition(":")
        lim = limits.get(name)
        buckets.append({
            "key": b.key, "limit": name, "subject": subject, "used": round(b.used, 2),
            "burst": b.burst, "percent": round(100 * b.used / b.burst, 1) if b.burst else 0.0,
            "rate": lim.rate if lim else None, "window": lim.window if lim else None,
            "count": lim.count if lim else None,
        })
    held = []
    for h in store.holds(since=now - HOLD_DAYS * 86400):
        held.append({
            "queue_id": h.queue_id, "when": h.when, "reason": h.reason, "source": h.source,
            "sender": h.sender,
            "on_hold": None if on_hold is None else h.queue_id in on_hold,
            "release": f"postsuper -H {h.queue_id}", "delete": f"postsuper -d {h.queue_id}",
        })
    audit = [{"when": a.when, "actor": a.actor, "action": a.action, "target": a.target,
              "detail": a.detail} for a in store.audit(since=now - HOLD_DAYS * 86400)]
    events = store.events(now - 3600, limit=100_000)
    findings: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    for ev in events:
        findings.update(f for f in ev.findings.split(",") if f)
        by_source[ev.source] += 1
    activity = store.activity(now - 86400)
    sources = [{"source": src, "messages": a.messages, "form_messages": a.form_messages,
                "holds": a.holds, "ratelimit_hits": a.ratelimit_hits}
               for src, a in sorted(activity.items(), key=lambda kv: -kv[1].messages)[:TOP]]
    return {
        "generated": now,
        "store": cfg.store.backend,
        "limits": [{"name": lim.name, "key": lim.key, "count": lim.count, "rate": lim.rate,
                    "window": lim.window, "burst": lim.burst, "origins": lim.origins,
                    "forms_only": lim.forms_only} for lim in cfg.ratelimit.limits],
        "buckets": buckets,
        "sources_24h": sources,
        "held": held,
        "hold_queue_known": on_hold is not None,
        "store_notices": [{"when": when, "text": text} for when, text in store.notices()],
        "audit": audit,
        "last_hour": {"messages": len(events), "findings": dict(findings.most_common()),
                      "sources": dict(by_source.most_common(TOP))},
        "feedback": feedback_summary.collect(store, now, cfg.feedback.retention),
    }


def daemon_info(store: Store, cfg: Config, now: float) -> dict[str, Any]:
    """Is the daemon running? Its socket answering the milter negotiation, and the
    heartbeat it writes to the store."""
    from postwarden import heartbeat, milterproto

    try:
        hb = heartbeat.read(store)
    except StoreError:
        hb = None
    socket = hb.socket if hb is not None and hb.socket else cfg.socket  # where it listened
    neg = milterproto.negotiate(socket, timeout=2.0)
    fresh = hb is not None and not hb.stale(now)
    if neg.ok:
        running: bool | None = True
    elif neg.errno in (13, 1):  # EACCES, EPERM: this user may not connect; trust the beat
        running = fresh if hb is not None else None
    else:
        running = False
    return {"running": running, "socket": socket, "socket_answers": neg.ok,
            "socket_error": neg.error,
            "heartbeat": hb.to_dict(now) if hb is not None else None,
            "summary": heartbeat.describe(hb, now) if hb is not None else ""}


def _daemon_lines(d: dict[str, Any]) -> list[str]:
    if d["running"]:
        return [f"daemon: running: {d['summary'] or 'no heartbeat yet'}"]
    if d["running"] is None:
        return [f"daemon: UNKNOWN: cannot connect to {d['socket']} ({d['socket_error']}) "
                "and no fresh heartbeat; run as root or a member of the socket's group"]
    out = [f"daemon: NOT RUNNING: nothing answers on {d['socket']} ({d['socket_error']}); "
           "Postfix passes mail unchecked (default_action=accept)",
           "  start it: systemctl start postwarden (journalctl -u postwarden says why it "
           "stopped)"]
    if d["summary"]:
        out.append(f"  last heartbeat: {d['summary']}")
    return out


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def render(data: dict[str, Any]) -> str:
    out = [f"postwarden status at {_when(data['generated'])} (store: {data['store']})"]
    if "daemon" in data:
        out += _daemon_lines(data["daemon"])
    out.append("")
    for n in data.get("store_notices", []):
        out.append(f"warning: store: {line_safe(n['text'])} ({_when(n['when'])})")
    if data.get("store_notices"):
        out.append("")
    out.append("Rate limits in use (fullest first):")
    if not data["buckets"]:
        out.append("  none: every bucket is empty")
    for b in data["buckets"]:
        per = (f"limit {b['rate']} {b['count']}/{b['window']}s, burst {b['burst']:g}"
               if b["rate"] is not None else f"burst {b['burst']:g} (limit no longer configured)")
        out.append(f"  {escape(b['key']):<50} {b['used']:>7.2f}/{b['burst']:<5g} "
                   f"{b['percent']:>5.1f}%  {per}")
    out += ["", "Sources, last 24 hours (messages / form / held / over limit):"]
    if not data["sources_24h"]:
        out.append("  none")
    for s in data["sources_24h"]:
        out.append(f"  {escape(s['source']):<50} {s['messages']:>6} {s['form_messages']:>6} "
                   f"{s['holds']:>6} {s['ratelimit_hits']:>6}")
    held = data["held"]
    still = [h for h in held if h["on_hold"] is not False]
    out += ["", f"Held by postwarden, last {HOLD_DAYS} days: {len(held)}"
            + ("" if data["hold_queue_known"] else " (hold queue unknown: postqueue -j failed)")
            + (f", {len(still)} still on hold" if data["hold_queue_known"] else "")]
    for h in held:
        state = {True: "on hold", False: "gone", None: "?"}[h["on_hold"]]
        qid = escape(h["queue_id"])
        out.append(f"  {qid:<12} {_when(h['when'])}  {state:<7} "
                   f"{field('reason', h['reason'])} {field('source', h['source'] or '-')} "
                   f"{field('from', h['sender'], angle=True, limit=254)}")
        if h["on_hold"] is not False:
            out.append(f"  {'':<12} release: postsuper -H {qid}   delete: postsuper -d {qid}")
    if still:
        out += ["  (a released message waits in the deferred queue; "
                "`postqueue -i QUEUEID` sends it now)"]
    out += ["", f"Operator actions, last {HOLD_DAYS} days (release, delete, rate-limit reset):"]
    if not data["audit"]:
        out.append("  none")
    for a in data["audit"]:
        out.append(f"  {_when(a['when'])}  {a['actor']:<12} {a['action']:<16} {a['target']} "
                   f"{a['detail']}")
    lh = data["last_hour"]
    out += ["", f"Last hour: {lh['messages']} messages inspected"]
    for fid, n in lh["findings"].items():
        out.append(f"  {escape(fid):<30} {n}")
    if "feedback" in data:
        out += ["", *feedback_summary.render(data["feedback"])]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config, reader=True)

    def read(store: Store) -> dict[str, Any]:
        now = time.time()
        data = collect(store, cfg, now, hold_queue())
        data["daemon"] = daemon_info(store, cfg, now)
        return data

    # status only reads: never a new empty file, never a write
    data = with_store(cfg.store, read, "cannot read the store", create=False, readonly=True)
    if data is None:
        return 1
    from postwarden.cli import write_stdout

    if getattr(args, "json", False):
        write_stdout(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        write_stdout(render(data))
    return 0
