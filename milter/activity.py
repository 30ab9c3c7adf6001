"""Record one event per inspected message: what `postwarden status` and the
self-check's 7-day activity report count (messages, form mail, holds, rate-limit
hits per source).

It also keeps, by queue ID, what left and what postwarden predicted receivers would
conclude (postwarden.store.feedback.OutboundRecord): the feedback reader ties each
remote reply Postfix logs back to it.

It runs as a fixer because fixers are the pipeline's one hook after the decision;
it never changes the message. A store failure is logged once (shared with the
rate limiter) and the message goes on.
"""

from __future__ import annotations

from postwarden.feedback.logline import printable
from postwarden.findings import Finding
from postwarden.message import Message
from postwarden.milter.forms import MEMO_SOURCE, Source
from postwarden.milter.pipeline import CheckContext, HeaderChange
from postwarden.milter.ratelimit import health
from postwarden.policy import Decision
from postwarden.store import OutboundRecord, StoreError


def record_activity(msg: Message, ctx: CheckContext, findings: list[Finding],
                    decision: Decision) -> list[HeaderChange]:
    store = ctx.services.store
    if store is None:
        return []
    source: Source | None = ctx.memo.get(MEMO_SOURCE)
    try:
        store.record_event(ctx.services.clock(), f"{msg.origin}/{decision.action}",
                           source.key if source else "", ",".join(f.id for f in findings))
        # While a shared store is known to be away (degraded mode) the prediction is
        # not written: each write would wait out the timeout of the node that is gone.
        # Deliveries of these messages are then not attributed (and say so nowhere
        # else: the degraded period itself is logged and shown by status).
        if msg.queue_id and msg.queue_id != "NOQUEUE" and not health.degraded:
            store.record_outbound(outbound_record(msg, ctx, source))
    except StoreError as e:
        health.failed(e, "activity recording")
        return []
    health.ok()
    return []


def outbound_record(msg: Message, ctx: CheckContext, source: Source | None) -> OutboundRecord:
    """The prediction as the checks left it in the summary (before any signing this
    milter adds: `signed` says whether it was or will be signed)."""
    summary = ctx.summary
    signed = "signed" in summary or any(n.lower() == "dkim-signature" for n, _ in msg.headers)
    dkim, dmarc = summary.get("dkim", "unknown"), summary.get("dmarc", "unknown")
    frm = msg.from_domain
    ours = [d.split("/", 1)[0].lower() for d in summary.get("signed", "").split("+") if d]
    if frm and any(frm == d or frm.endswith("." + d) or d.endswith("." + frm) for d in ours):
        # our signer adds an aligned signature after the checks ran: as it leaves, it passes
        dkim = "pass"
        if dmarc == "fail":
            dmarc = "pass"
    return OutboundRecord(
        queue_id=_clean(msg.queue_id), when=ctx.services.clock(),
        source=_clean(source.key) if source else "", origin=str(msg.origin),
        env_domain=_clean(msg.mail_from_domain), from_domain=_clean(frm), signed=signed,
        dkim=dkim, spf=summary.get("spf", "unknown"), dmarc=dmarc,
    )


def _clean(text: str, limit: int = 253) -> str:
    """Sender-controlled text as valid printable Unicode for the store (header values
    keep undecodable bytes as surrogates, which neither backend can encode)."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return printable(text, limit)
