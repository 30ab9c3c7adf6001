"""One delivery line -> a classified DeliveryRecord tied to its source, and the
warnings it calls for.

The feedback findings are built here from the reply class (postwarden.replies) and
logged; no action is taken on the message (it already left). The brake on the next
message of the same source is a per-message check (postwarden.milter.feedback_brake)
that reads the counts this module stores; only the policy decides what happens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from postwarden.feedback.logline import Delivery, parse, printable
from postwarden.findings import Finding, Severity
from postwarden.log import Logger, log
from postwarden.replies import CLASSES, Classified, Reply, classify
from postwarden.store import DeliveryRecord, OutboundRecord, Store, StoreError
from postwarden.store.feedback import MAX_TEXT, OUTBOUND_RETENTION

# A line that names a delivery agent and a status but does not parse is counted as
# malformed; every other line of the mail log is simply not ours.
_DELIVERY_HINTS = ("/smtp[", "/lmtp[", "/relay[")

Recheck = Callable[[str], object]  # zone -> run that list's self-check now


@dataclass
class Counters:
    lines: int = 0
    deliveries: int = 0
    malformed: int = 0
    unattributed: int = 0  # a queue ID postwarden has no outbound record of
    by_status: dict[str, int] = field(default_factory=dict)


def feedback_finding(d: Delivery, c: Classified, ob: OutboundRecord | None) -> Finding | None:
    """The finding one rejected delivery raises, or None for a class without one."""
    fid = CLASSES.get(c.cls)
    if fid is None:
        return None
    receiver = d.rcpt_domain
    src = ob.source if ob and ob.source else "unknown source"
    data: dict[str, object] = {"receiver": receiver, "dsn": d.dsn, "status": d.status,
                               "class": c.cls, "source": src, "reply": d.text[:MAX_TEXT]}
    sev = Severity.ERROR if d.status == "bounced" else Severity.WARNING
    if c.cls == "blocklist":
        listed = c.zone or "a blocklist"
        data["zone"] = c.zone
        return Finding(fid, Severity.CRITICAL if c.zone else Severity.ERROR,
                       f"{receiver} rejects this host citing {listed} (dsn={d.dsn}, "
                       f"{c.meaning})", data, (c.advice,))
    if c.cls == "auth":
        if ob is None:
            predicted = "no prediction (message not inspected or older than the window)"
        else:
            predicted = f"predicted dkim={ob.dkim} spf={ob.spf} dmarc={ob.dmarc}"
            data.update(predicted_dkim=ob.dkim, predicted_spf=ob.spf,
                        predicted_dmarc=ob.dmarc, signed=ob.signed)
        mismatch = ob is not None and ob.dmarc == "pass"
        data["mismatch"] = mismatch
        text = (f"MISMATCH: predicted dmarc=pass; {receiver} answered {d.dsn} ({c.meaning})"
                if mismatch else f"{receiver} answered {d.dsn} ({c.meaning}); {predicted}")
        if mismatch and ob is not None:
            text += f"; evidence: dkim={ob.dkim} spf={ob.spf} signed={ob.signed}"
        return Finding(fid, Severity.ERROR if mismatch else sev, text, data, (c.advice,))
    return Finding(fid, sev, f"{receiver} answered {d.dsn}: {c.meaning} (source {src})",
                   data, (c.advice,))


class Feedback:
    """The reader's handler: thread-confined (the follower thread), except counters."""

    def __init__(self, store: Store, extra: tuple[Reply, ...] = (),
                 retention: float = OUTBOUND_RETENTION, recheck: Recheck | None = None,
                 recheck_interval: float = 3600.0, logger: Logger = log,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.extra = extra
        self.retention = retention
        self.recheck = recheck
        self.recheck_interval = recheck_interval
        self.log = logger
        self.clock = clock
        self.counters = Counters()
        self._rechecked: dict[str, float] = {}

    def __call__(self, line: str) -> bool:
        self.counters.lines += 1
        d = parse(line)
        if d is None:
            if "status=" in line and any(h in line for h in _DELIVERY_HINTS):
                self.counters.malformed += 1
                self.log.limited("feedback.malformed", "warning",
                                 f"feedback: skipped a malformed delivery line "
                                 f"({self.counters.malformed} so far): "
                                 f"{printable(line, 120)!r}")
            return False
        return self.delivery(d)

    def delivery(self, d: Delivery) -> bool:
        c = None if d.status == "sent" else classify(d.text, d.dsn, self.extra)
        try:
            ob = self.store.outbound(d.queue_id)
        except StoreError as e:
            self.log.limited("feedback.store", "error", f"feedback: store unavailable: {e}")
            ob = None
        now = self.clock()
        rec = DeliveryRecord(d.queue_id, now, d.rcpt_domain, d.relay, d.status, d.dsn,
                             c.cls if c else "", d.text[:MAX_TEXT] if c else "",
                             ob.source if ob else "", ob.from_domain if ob else "")
        try:
            self.store.record_delivery(rec, self.retention)
        except StoreError as e:
            self.log.limited("feedback.store", "error",
                             f"feedback: cannot record a delivery result: {e}")
            return False
        self.counters.deliveries += 1
        self.counters.by_status[d.status] = self.counters.by_status.get(d.status, 0) + 1
        if ob is None:
            self.counters.unattributed += 1
        if c is not None:
            self._react(d, c, ob)
        return True

    def _react(self, d: Delivery, c: Classified, ob: OutboundRecord | None) -> None:
        f = feedback_finding(d, c, ob)
        src = ob.source if ob and ob.source else "-"
        if f is None:
            return
        level = "critical" if f.severity >= Severity.CRITICAL else "warning"
        fix = f"; fix: {f.advice[0]}" if f.advice else ""
        key = f"{f.id}|{c.zone}|{d.rcpt_domain}" if c.cls == "blocklist" \
            else f"{f.id}|{src}|{d.rcpt_domain}|{f.data.get('mismatch', '')}"
        self.log.limited(key, level, f"{f.id}: {f.text} source={src} "
                                     f"reply={d.text[:160]!r}{fix}", d.queue_id)
        if c.cls == "blocklist" and c.zone and self.recheck is not None:
            now = self.clock()
            if now - self._rechecked.get(c.zone, float("-inf")) >= self.recheck_interval:
                self._rechecked[c.zone] = now
                zone, recheck = c.zone, self.recheck
                threading.Thread(target=self._run_recheck, args=(recheck, zone),
                                 name="feedback_recheck", daemon=True).start()

    def _run_recheck(self, recheck: Recheck, zone: str) -> None:
        try:
            recheck(zone)
        except Exception as e:  # DNS trouble, a bug: the next citation tries again
            self.log.error(f"feedback: self-check of {zone} failed: {type(e).__name__}: {e}")


def extra_replies(entries: list[object]) -> tuple[Reply, ...]:
    """`[feedback] replies` (ReplyConfig entries) as table rows."""
    out = []
    for e in entries:
        out.append(Reply(str(getattr(e, "pattern", "")), str(getattr(e, "kind", "other")),
                         str(getattr(e, "meaning", "")) or "from [feedback] replies",
                         str(getattr(e, "advice", "")) or "see the reply text",
                         str(getattr(e, "zone", ""))))
    return tuple(out)
