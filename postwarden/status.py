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
import sys
import time
from collections import Counter
from typing import Any

from postwarden import config as configmod
from postwarden.config import Config
from postwarden.feedback import summary as feedback_summary
from postwarden.store import Store, StoreError, open_store

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
        "last_hour": {"messages": len(events), "findings": dict(findings.most_common()),
                      "sources": dict(by_source.most_common(TOP))},
        "feedback": feedback_summary.collect(store, now, cfg.feedback.retention),
    }


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def render(data: dict[str, Any]) -> str:
    out = [f"postwarden status at {_when(data['generated'])} (store: {data['store']})", ""]
    out.append("Rate limits in use (fullest first):")
    if not data["buckets"]:
        out.append("  none: every bucket is empty")
    for b in data["buckets"]:
        per = (f"limit {b['rate']} {b['count']}/{b['window']}s, burst {b['burst']:g}"
               if b["rate"] is not None else f"burst {b['burst']:g} (limit no longer configured)")
        out.append(f"  {b['key']:<50} {b['used']:>7.2f}/{b['burst']:<5g} "
                   f"{b['percent']:>5.1f}%  {per}")
    out += ["", "Sources, last 24 hours (messages / form / held / over limit):"]
    if not data["sources_24h"]:
        out.append("  none")
    for s in data["sources_24h"]:
        out.append(f"  {s['source']:<50} {s['messages']:>6} {s['form_messages']:>6} "
                   f"{s['holds']:>6} {s['ratelimit_hits']:>6}")
    held = data["held"]
    still = [h for h in held if h["on_hold"] is not False]
    out += ["", f"Held by postwarden, last {HOLD_DAYS} days: {len(held)}"
            + ("" if data["hold_queue_known"] else " (hold queue unknown: postqueue -j failed)")
            + (f", {len(still)} still on hold" if data["hold_queue_known"] else "")]
    for h in held:
        state = {True: "on hold", False: "gone", None: "?"}[h["on_hold"]]
        out.append(f"  {h['queue_id']:<12} {_when(h['when'])}  {state:<7} "
                   f"reason={h['reason']} source={h['source'] or '-'} from=<{h['sender']}>")
        if h["on_hold"] is not False:
            out.append(f"  {'':<12} release: {h['release']}   delete: {h['delete']}")
    if still:
        out += ["  (a released message waits in the deferred queue; "
                "`postqueue -i QUEUEID` sends it now)"]
    lh = data["last_hour"]
    out += ["", f"Last hour: {lh['messages']} messages inspected"]
    for fid, n in lh["findings"].items():
        out.append(f"  {fid:<30} {n}")
    if "feedback" in data:
        out += ["", *feedback_summary.render(data["feedback"])]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    try:
        store = open_store(cfg.store)
    except StoreError as e:
        print(f"postwarden: error: store {cfg.store.backend} unavailable: {e}", file=sys.stderr)
        return 1
    try:
        data = collect(store, cfg, time.time(), hold_queue())
    except StoreError as e:
        print(f"postwarden: error: cannot read the store: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            store.close()
        except StoreError:
            pass
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render(data))
    return 0
