"""Record one event per inspected message: what `postwarden status` and the
self-check's 7-day activity report count (messages, form mail, holds, rate-limit
hits per source).

It runs as a fixer because fixers are the pipeline's one hook after the decision;
it never changes the message. A store failure is logged once (shared with the
rate limiter) and the message goes on.
"""

from __future__ import annotations

from postwarden.findings import Finding
from postwarden.message import Message
from postwarden.milter.forms import MEMO_SOURCE, Source
from postwarden.milter.pipeline import CheckContext, HeaderChange
from postwarden.milter.ratelimit import health
from postwarden.policy import Decision
from postwarden.store import StoreError


def record_activity(msg: Message, ctx: CheckContext, findings: list[Finding],
                    decision: Decision) -> list[HeaderChange]:
    store = ctx.services.store
    if store is None:
        return []
    source: Source | None = ctx.memo.get(MEMO_SOURCE)
    try:
        store.record_event(ctx.services.clock(), f"{msg.origin}/{decision.action}",
                           source.key if source else "", ",".join(f.id for f in findings))
    except StoreError as e:
        health.failed(e, "activity recording")
        return []
    health.ok()
    return []
