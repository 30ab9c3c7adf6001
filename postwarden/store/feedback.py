"""Records of the feedback loop: what left (by queue ID) and what receivers answered.

Kept apart from the rest of the store's records so the two backends implement the
same small set of methods (postwarden.store.base.Store, "feedback" section) and the
same test suite covers both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

OUTBOUND_RETENTION = 7 * 86400  # the seed's risk window: L1 listings expire after 7 days
MAX_TEXT = 300  # characters of a remote reply kept (the class is decided on the full text)


@dataclass(frozen=True)
class OutboundRecord:
    """One inspected outbound message, as postwarden predicted receivers would see it."""

    queue_id: str
    when: float
    source: str  # the source key (php:33:form.php, sasl:alice, local:uid:1000, ...)
    origin: str  # local | submission | internal
    env_domain: str  # envelope sender domain
    from_domain: str  # header From domain
    signed: bool  # carried (or got) a DKIM signature
    dkim: str  # predicted results: pass | fail | none | temperror | unknown ...
    spf: str
    dmarc: str


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery attempt Postfix logged, tied to its OutboundRecord when known."""

    queue_id: str
    when: float
    rcpt_domain: str
    relay: str
    status: str  # sent | deferred | bounced
    dsn: str
    cls: str  # reply class (postwarden.replies), "" for a plain delivery
    text: str  # the remote reply, escaped, at most MAX_TEXT characters
    source: str = ""  # copied from the OutboundRecord ("" when the message is unknown)
    from_domain: str = ""


@dataclass
class Tally:
    """delivered / deferred / bounced, and the bounces and deferrals by class."""

    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    by_class: Counter[str] = field(default_factory=Counter)  # "bounced:blocklist" -> n
    last: DeliveryRecord | None = None

    def add(self, d: DeliveryRecord) -> None:
        if d.status == "sent":
            self.delivered += 1
        elif d.status == "deferred":
            self.deferred += 1
        else:
            self.bounced += 1
        if d.status != "sent":
            self.by_class[f"{d.status}:{d.cls or 'other'}"] += 1
        if self.last is None or d.when >= self.last.when:
            self.last = d

    @property
    def attempts(self) -> int:
        return self.delivered + self.deferred + self.bounced

    def rejected(self, cls: str | None = None) -> int:
        """Bounces (and deferrals) of one class, or of every class."""
        return sum(n for k, n in self.by_class.items()
                   if cls is None or k.split(":", 1)[1] == cls)


def tally(records: list[DeliveryRecord], key: str) -> dict[str, Tally]:
    """Group delivery records by `source`, `from_domain` or `rcpt_domain`."""
    out: dict[str, Tally] = {}
    for d in records:
        out.setdefault(str(getattr(d, key)), Tally()).add(d)
    return out
