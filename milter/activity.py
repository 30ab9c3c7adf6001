"""Record one event per inspected message: what `postwarden status` and the
self-check's 7-day activity report count (messages, form mail, holds, rate-limit
hits per source).

It also keeps, by queue ID, what left and what postwarden predicted receivers would
conclude (postwarden.store.feedback.OutboundRecord): the feedback reader ties each
remote reply Postfix logs back to it.

Called by postwarden.milter.effects once the decision is known; it never changes
the message. A store failure is logged once (StoreHealth) and the message goes on.
"""

from __future__ import annotations

from postwarden.feedback.logline import printable
from postwarden.message import Message
from postwarden.milter.context import Services, Verdict
from postwarden.store import OutboundRecord, StoreError


def record_activity(msg: Message, verdict: Verdict, services: Services, now: float) -> None:
    store = services.store
    if store is None:
        return
    try:
        store.record_event(now, f"{msg.origin}/{verdict.decision.action}", verdict.source,
                           ",".join(f.id for f in verdict.findings))
        # While a shared store is known to be away (degraded mode) the prediction is
        # not written: each write would wait out the timeout of the node that is gone.
        # Deliveries of these messages are then not attributed (and say so nowhere
        # else: the degraded period itself is logged and shown by status).
        if msg.queue_id and msg.queue_id != "NOQUEUE" and not services.health.degraded:
            store.record_outbound(outbound_record(msg, verdict, now))
    except StoreError as e:
        services.health.failed(e, "activity recording")
        return
    services.health.ok()


def outbound_record(msg: Message, verdict: Verdict, now: float) -> OutboundRecord:
    """The prediction for the message as it leaves, after postwarden's own fixes (its
    signature, the From rewrite)."""
    leaving = verdict.leaving
    sent = verdict.sent or msg
    signed = verdict.signed or msg.header("DKIM-Signature") is not None
    return OutboundRecord(
        queue_id=_clean(msg.queue_id), when=now, source=_clean(verdict.source),
        origin=str(msg.origin), env_domain=_clean(msg.mail_from_domain),
        from_domain=_clean(sent.from_domain), signed=signed,
        dkim=leaving.get("dkim", "unknown"), spf=leaving.get("spf", "unknown"),
        dmarc=leaving.get("dmarc", "unknown"),
    )


def _clean(text: str, limit: int = 253) -> str:
    """Sender-controlled text as valid printable Unicode for the store (header values
    keep undecodable bytes as surrogates, which neither backend can encode)."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return printable(text, limit)
