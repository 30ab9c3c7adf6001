"""Record one event per inspected message: what `postwarden status` and the
self-check's 7-day activity report count (messages, form mail, holds, rate-limit
hits per source).

Called by postwarden.milter.effects once the decision is known; it never changes
the message. A store failure is logged once (StoreHealth) and the message goes on.
"""

from __future__ import annotations

from postwarden.message import Message
from postwarden.milter.pipeline import Services, Verdict
from postwarden.store import StoreError


def record_activity(msg: Message, verdict: Verdict, services: Services, now: float) -> None:
    store = services.store
    if store is None:
        return
    try:
        store.record_event(now, f"{msg.origin}/{verdict.decision.action}", verdict.source,
                           ",".join(f.id for f in verdict.findings))
    except StoreError as e:
        services.health.failed(e, "activity recording")
        return
    services.health.ok()
