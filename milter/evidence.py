"""One message's evidence: each piece computed on first ask, then kept, typed.

A check asks for what it needs (`ev.dkim()`, `ev.spf()`, `ev.dmarc()`, `ev.source()`
...), so the dependencies between checks are calls, not an order a comment states,
and nothing is evaluated twice for one message: the DMARC verdict uses the DKIM
and SPF results the DKIM and SPF checks asked for, the signer and the From rewrite
read the same ones. Reading the world (DNS, the store's buckets and counters) is
evidence too; changing it is left to postwarden.milter.effects, which gets what
to change (RateTake, CounterBump) from here.

The message as it will leave (after postwarden's own fixes) gets its own Evidence
(`as_sent`): the same envelope evidence (SPF, the source, the history, the
limits, the DMARC records already fetched), the signatures as they will be seen,
and a DMARC verdict judged again on them.
"""

from __future__ import annotations

from collections.abc import Sequence

from postwarden.dmarc_discovery import DmarcLookup, discover, org_domain_9989
from postwarden.dns import Budget
from postwarden.message import Message
from postwarden.milter import dkim_check, dmarc_verdict, forms, ratelimit, spf_check
from postwarden.milter.auth_results import DkimSignature, SpfOutcome, from_domains
from postwarden.milter.context import Services
from postwarden.milter.dmarc_verdict import DmarcVerdict
from postwarden.milter.forms import Signal, Source
from postwarden.milter.ratelimit import History, Limits
from postwarden.orgdomain import aligned_by
from postwarden.spf import SpfResults

_UNSET = object()


class Evidence:
    """What is known about one message; every accessor computes at most once."""

    __slots__ = (
        "_dkim",
        "_dmarc",
        "_from",
        "_history",
        "_limits",
        "_lookups",
        "_org9989",
        "_signals",
        "_source",
        "_spf",
        "budget",
        "msg",
        "services",
    )

    def __init__(self, msg: Message, services: Services, budget: Budget, *,
                 dkim: Sequence[DkimSignature] | None = None, spf: object = _UNSET,
                 source: Source | None = None) -> None:
        """`dkim`, `spf`, `source`: known already (the outgoing message's, a test's)."""
        self.msg, self.services, self.budget = msg, services, budget
        self._dkim: tuple[DkimSignature, ...] | None = None if dkim is None else tuple(dkim)
        self._spf: object = spf  # SpfOutcome | None (None: no sending IP known)
        self._lookups: dict[str, DmarcLookup] = {}
        self._org9989: dict[str, tuple[str, str]] = {}
        self._dmarc: DmarcVerdict | None = None
        self._from: list[str] | None = None
        self._source: Source | None = source
        self._signals: dict[str, Signal] | None = None
        self._history: object = _UNSET  # History | None (None: not form mail, no store)
        self._limits: Limits | None = None

    # --- authentication -------------------------------------------------------------
    def from_domains(self) -> list[str]:
        """Distinct domains of the From addresses, in order (RFC 7489 6.6.1)."""
        if self._from is None:
            self._from = from_domains(self.msg)
        return self._from

    def dkim(self) -> tuple[DkimSignature, ...]:
        """Every DKIM-Signature's result, in header order (verified on first ask)."""
        if self._dkim is None:
            self._dkim = tuple(dkim_check.evaluate(self.msg, self.services.resolver, self.budget,
                                        self.services.config.dkim.verify))
        return self._dkim

    @property
    def dkim_known(self) -> bool:
        return self._dkim is not None

    def spf(self, results: SpfResults | None = None) -> SpfOutcome | None:
        """SPF at the receiver for every sending IP; None when none is configured.
        `results`: the cache of evaluations to use (the daemon's by default)."""
        if self._spf is _UNSET:
            s = self.services
            self._spf = spf_check.outcome(self.msg, s.config, s.resolver, self.budget,
                                          results or s.spf_results)
        return self._spf  # type: ignore[return-value]

    @property
    def spf_known(self) -> bool:
        return self._spf is not _UNSET

    def dmarc_policy(self, domain: str) -> DmarcLookup:
        """The DMARC policy of `domain`, both generations, discovered once."""
        found = self._lookups.get(domain)
        if found is None:
            found = self._lookups[domain] = discover(self.services.resolver, domain,
                                                     self.budget)
        return found

    def org_9989(self, domain: str) -> tuple[str, str]:
        """RFC 9989 Organizational Domain of `domain`: (org, "") or ("", why unknown)."""
        found = self._org9989.get(domain)
        if found is None:
            found = self._org9989[domain] = org_domain_9989(self.services.resolver, domain,
                                                            self.budget)
        return found

    def alignment_mode(self, domain: str, tag: str) -> str:
        """`adkim`/`aspf` of the domain's DMARC record; relaxed when it has none."""
        rec = self.dmarc_policy(domain).record
        if rec is None:
            return "r"
        return rec.adkim if tag == "adkim" else rec.aspf

    def aligned_9989(self, identifier: str, from_domain: str, mode: str) -> bool | None:
        """Alignment as an RFC 9989 receiver sees it; None when the tree walk failed."""
        def org(name: str) -> str | None:
            found, error = self.org_9989(name)
            return None if error else found
        return aligned_by(identifier, from_domain, mode, org)

    def dmarc(self) -> DmarcVerdict:
        """The receiver's DMARC verdict (postwarden.milter.dmarc_verdict.judge)."""
        if self._dmarc is None:
            self._dmarc = dmarc_verdict.judge(self)
        return self._dmarc

    @property
    def dmarc_known(self) -> bool:
        return self._dmarc is not None

    # --- who sent it, and what its history says ---------------------------------------
    def source(self) -> Source:
        if self._source is None:
            self._source = forms.identify(self.msg, self.services.config.forms)
        return self._source

    @property
    def source_known(self) -> bool:
        return self._source is not None

    def signals(self) -> dict[str, Signal]:
        """Suspicion signals of form mail: this message's own, then its history's."""
        if self._signals is None:
            found = forms.message_signals(self)
            history = self.history()
            if history is not None:
                found.update(history.signals)
            self._signals = found
        return self._signals

    def score(self) -> int:
        return sum(s.weight for s in self.signals().values())

    def history(self) -> History | None:
        """The source's repeated-body and burst counters (form mail with a store)."""
        if self._history is _UNSET:
            self._history = ratelimit.read_history(self)
        return self._history  # type: ignore[return-value]

    @property
    def history_known(self) -> bool:
        return self._history is not _UNSET

    def limits(self) -> Limits:
        """What each matching rate limit would say of this message (peeked)."""
        if self._limits is None:
            self._limits = ratelimit.peek_limits(self)
        return self._limits

    @property
    def limits_known(self) -> bool:
        return self._limits is not None

    # --- the message as it will leave ---------------------------------------------------
    def as_sent(self, sent: Message, dkim: tuple[DkimSignature, ...]) -> Evidence:
        """The outgoing message's evidence: the envelope's is shared (SPF, source,
        history, limits, the DMARC records fetched), the signatures are `dkim`, and
        the DMARC verdict is judged again."""
        out = Evidence(sent, self.services, self.budget, dkim=dkim, spf=self._spf,
                       source=self._source)
        out._signals, out._history, out._limits = self._signals, self._history, self._limits
        out._lookups, out._org9989 = self._lookups, self._org9989
        return out
