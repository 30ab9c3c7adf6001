"""What receivers said over the window, as data: for `postwarden status` and the
self-check's "receivers said" section (checks/receivers.py).

Per source, per From domain and per receiver domain: messages sent (outbound
records), delivery attempts delivered / deferred / bounced, and the rejections by
reply class; the newest reply; and the authentication rejections of messages
postwarden predicted to pass DMARC (the mismatches).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from postwarden.feedback.logline import printable
from postwarden.logsafe import escape, line_safe
from postwarden.store import DeliveryRecord, Store
from postwarden.store.feedback import OUTBOUND_RETENTION, Tally, tally

TOP = 20


def _last(d: DeliveryRecord | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"when": d.when, "queue_id": d.queue_id, "receiver": d.rcpt_domain,
            "status": d.status, "dsn": d.dsn, "class": d.cls, "reply": printable(d.text, 300)}


def _row(key: str, name: str, t: Tally, sent: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {key: printable(name, 200) or "-"}
    if sent is not None:
        row["sent"] = sent
    row.update(delivered=t.delivered, deferred=t.deferred, bounced=t.bounced,
               by_class=dict(sorted(t.by_class.items())), last_reply=_last(t.last))
    return row


def collect(store: Store, now: float, window: float = OUTBOUND_RETENTION) -> dict[str, Any]:
    since = now - window
    outs = store.outbound_since(since)
    records = store.deliveries(since)
    sent = Counter(o.source for o in outs)
    predicted = {o.queue_id: o for o in outs}
    by_source = tally(records, "source")
    by_class: Counter[str] = Counter()
    for d in records:
        if d.status != "sent":
            by_class[f"{d.status}:{d.cls or 'other'}"] += 1
    mismatches = []
    for d in records:
        ob = predicted.get(d.queue_id)
        if d.cls == "auth" and ob is not None and ob.dmarc == "pass":
            mismatches.append({"queue_id": d.queue_id, "receiver": d.rcpt_domain,
                               "dsn": d.dsn, "source": printable(ob.source, 200),
                               "predicted": {"dkim": ob.dkim, "spf": ob.spf,
                                             "dmarc": ob.dmarc},
                               "reply": printable(d.text, 300)})
    sources = sorted(set(sent) | set(by_source),
                     key=lambda s: -(by_source[s].rejected() if s in by_source else 0))
    return {
        "window": window,
        "sent": len(outs),
        "attempts": len(records),
        "unattributed": sum(1 for d in records if d.queue_id not in predicted),
        "by_class": dict(sorted(by_class.items())),
        "sources": [_row("source", s, by_source.get(s, Tally()), sent.get(s, 0))
                    for s in sources[:TOP]],
        "from_domains": [_row("from_domain", k, t) for k, t in
                         sorted(tally(records, "from_domain").items(),
                                key=lambda kv: -kv[1].attempts)[:TOP]],
        "receivers": [_row("receiver", k, t) for k, t in
                      sorted(tally(records, "rcpt_domain").items(),
                             key=lambda kv: -kv[1].attempts)[:TOP]],
        "mismatches": mismatches[:TOP],
    }


def render(data: dict[str, Any]) -> list[str]:
    """Text lines for `postwarden status`; remote-controlled values by the one
    escaping rule (postwarden.logsafe): names escaped, reply texts made line-safe."""
    days = data["window"] / 86400
    out = [f"Receivers said, last {days:g} days: {data['sent']} messages sent, "
           f"{data['attempts']} delivery attempts ({data['unattributed']} not tied to a "
           "message postwarden saw)"]
    out.append("  source                                             sent  deliv  defer "
               "bounce  by class")
    for s in data["sources"]:
        classes = ", ".join(f"{k}={n}" for k, n in s["by_class"].items()) or "-"
        out.append(f"  {escape(s['source']):<50} {s['sent']:>5} {s['delivered']:>6} "
                   f"{s['deferred']:>6} {s['bounced']:>6}  {classes}")
        last = s["last_reply"]
        if last and last["status"] != "sent":
            out.append(f"  {'':<50} last: {escape(last['queue_id'])} "
                       f"{escape(last['receiver'])} {last['status']} {last['dsn']} "
                       f"{line_safe(last['reply'][:100])}")
    for m in data["mismatches"]:
        out.append(f"  MISMATCH {escape(m['queue_id'])}: predicted dmarc=pass; "
                   f"{escape(m['receiver'])} answered {m['dsn']} (source {escape(m['source'])})")
    return out
