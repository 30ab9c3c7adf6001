"""The brake: receivers' own answers about a source, as findings on its next message.

The feedback reader stores every delivery result tied to the source that sent it.
This check reads the current source's results over `[feedback] brake_window`; when
one reply class (unknown recipients, blocklist citations, authentication, ...)
reaches `brake_min` rejections and `brake_ratio` of the attempts, the message gets
that class's finding (feedback.unknown_recipients, ...). It decides nothing: with
`[policy.enforce] "feedback.unknown_recipients" = "hold"` the policy holds the
message (monitor mode logs would=hold), so a compromised form is braked by the
receivers' replies. On a store error it reports nothing (fail open).
"""

from __future__ import annotations

from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.forms import MEMO_SOURCE, Source
from postwarden.milter.pipeline import CheckContext
from postwarden.replies import CLASSES
from postwarden.store import StoreError
from postwarden.store.feedback import Tally


def feedback_brake_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    store = ctx.services.store
    source: Source | None = ctx.memo.get(MEMO_SOURCE)
    if store is None or source is None or not source.key:
        return []
    fb = ctx.services.config.feedback
    try:
        records = store.deliveries(ctx.services.clock() - fb.brake_window, source=source.key)
    except StoreError:
        return []
    if not records:
        return []
    t = Tally()
    for r in records:
        t.add(r)
    out = []
    for cls, fid in CLASSES.items():
        if fid is None:
            continue
        n = t.rejected(cls)
        if n >= fb.brake_min and n / t.attempts >= fb.brake_ratio:
            out.append(Finding(fid, Severity.WARNING,
                               f"receivers rejected {n} of the last {t.attempts} deliveries "
                               f"from {source.key} as {cls} (within {fb.brake_window}s)",
                               {"source": source.key, "class": cls, "rejected": n,
                                "attempts": t.attempts},
                               ("see `postwarden status` for the replies; stop the source "
                                "if it sends to harvested addresses",)))
    return out
