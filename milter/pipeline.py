"""Message -> every check -> findings -> policy -> verdict. No pymilter here.

Checks are plain callables `check(msg, ctx) -> list[Finding]`; a check that raises
is logged with the queue ID and skipped (fail open). Checks only look: what a
message would change in the world (rate-limit units) they leave in the verdict,
and postwarden.milter.effects commits it once the decision is known. Fixers (DKIM
signing, From rewrite) return header changes for the adapter to apply; they are
applied only to mail the decision keeps (Decision.delivers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from postwarden.config import Config
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding, Severity
from postwarden.hoststate import HostState
from postwarden.log import log
from postwarden.message import Message
from postwarden.milter.auth_results import DkimSignature
from postwarden.milter.storehealth import StoreHealth
from postwarden.milter.switches import with_switch
from postwarden.policy import Decision, decide, effective
from postwarden.store import Store

if TYPE_CHECKING:
    from postwarden.milter.effects import Applied

@dataclass
class Services:
    """Long-lived things a check may use, passed in (never built inside a check)."""

    config: Config
    resolver: Resolver
    store: Store | None = None
    clock: Callable[[], float] = time.time
    host: HostState = field(default_factory=HostState)  # written by the periodic self-check
    health: StoreHealth = field(default_factory=StoreHealth)  # one per daemon


@dataclass(frozen=True)
class RateTake:
    """Units a message takes from a GCRA bucket if the decision keeps it."""

    key: str
    cost: float
    interval: float
    burst: float
    once: str = ""  # the message's identity: a retried message takes nothing again
    local: bool = False  # degraded mode: this relay's own budget, not the shared store


@dataclass
class CheckContext:
    services: Services
    budget: Budget
    memo: dict[str, Any] = field(default_factory=dict)  # shared between checks of one message
    summary: dict[str, str] = field(default_factory=dict)  # extra key=value for the summary line
    takes: list[RateTake] = field(default_factory=list)  # committed by effects if kept
    source: str = ""  # the source key (forms_check): events and hold records count by it
    rewrite_note: str = ""  # the From rewrite's log line, written by effects
    signed: list[DkimSignature] = field(default_factory=list)  # the signer's, as evidence
    as_sent: bool = False  # judging the outgoing message: evidence is in memo already


@dataclass(frozen=True)
class HeaderChange:
    """What the adapter asks Postfix to do: add (index None = append / 0 = top) or change."""

    op: str  # "add" | "insert" | "change"
    name: str
    value: str
    index: int = 0


@dataclass
class Verdict:
    findings: list[Finding]
    decision: Decision
    changes: list[HeaderChange] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)
    takes: tuple[RateTake, ...] = ()
    source: str = ""
    rewrite_note: str = ""
    sent: Message | None = None  # the message as it will leave, when a fix changed it


class Check(Protocol):
    def __call__(self, msg: Message, ctx: CheckContext) -> list[Finding]: ...


class Fixer(Protocol):
    """Plans header changes from the findings on the message as it arrived."""

    def __call__(
        self, msg: Message, ctx: CheckContext, findings: list[Finding]
    ) -> list[HeaderChange]: ...


class Inspector:
    """checks -> fixes planned -> the message as it will leave judged again -> decision.

    The From rewrite and the signer plan their changes from the findings on the
    message as it arrived. When they change anything, the checks in `as_sent` (DKIM,
    SPF, DMARC) judge the message as it will leave: its new headers, the existing
    signatures (broken if the rewrite changed a header they cover) plus postwarden's
    own, which count as an aligned pass without being verified. Their findings
    replace the first ones; the summary shows both, `dkim=none->pass(signed)`. So
    the decision is about the outgoing message, and a defect a fix cured is not
    reported. A message the decision does not keep gets none of the changes
    (effects).
    """

    def __init__(
        self, services: Services, checks: list[Check], fixers: list[Fixer] | None = None,
        as_sent: list[Check] | None = None,
    ) -> None:
        self.services = services
        self.checks = checks
        self.fixers = fixers or []
        self.as_sent = as_sent if as_sent is not None else judged_as_sent(checks)
        self.policy = effective(services.config)

    def _run(self, check: Check, msg: Message, ctx: CheckContext) -> list[Finding]:
        try:
            return check(msg, ctx)
        except Exception as e:  # one broken check must not stop the mail
            name = getattr(check, "__name__", type(check).__name__)
            log.limited(f"check|{name}|{type(e).__name__}", "error",
                        f"check {name} failed: {type(e).__name__}: {e}; "
                        "message accepted by this check (fail open)", msg.queue_id)
            return [Finding("internal.error", Severity.ERROR,
                            f"check {name} failed", {"check": name})]

    def inspect(self, msg: Message) -> Verdict:
        cfg = self.services.config
        ctx = CheckContext(self.services, Budget(cfg.dns.message_budget))
        found = [self._run(check, msg, ctx) for check in self.checks]
        changes: list[HeaderChange] = []
        for fixer in self.fixers:
            try:
                changes.extend(fixer(msg, ctx, [f for fs in found for f in fs]))
            except Exception as e:
                name = getattr(fixer, "__name__", type(fixer).__name__)
                log.limited(f"fix|{name}|{type(e).__name__}", "error",
                            f"fix {name} failed: {type(e).__name__}: {e}; "
                            "message left unchanged by it", msg.queue_id)
        summary = ctx.summary
        sent = msg
        if changes and self.as_sent:
            sent, summary = self._judge_as_sent(msg, ctx, changes, found)
        findings = [with_switch(cfg, msg.origin, f) for fs in found for f in fs]
        decision = decide(findings, msg.origin, cfg.mode, self.policy)
        return Verdict(findings, decision, changes, summary, tuple(ctx.takes), ctx.source,
                       ctx.rewrite_note, sent)

    def _judge_as_sent(self, msg: Message, ctx: CheckContext, changes: list[HeaderChange],
                       found: list[list[Finding]]) -> tuple[Message, dict[str, str]]:
        """Re-run the as-sent checks on the outgoing message (in place in `found`)."""
        from postwarden.milter.auth_results import DKIM
        from postwarden.milter.dkim_sign import apply_changes

        rewritten = bool(ctx.rewrite_note)
        # Only signed: the checks read nothing the new DKIM-Signature header changes
        # (the signatures come from memo), so the message itself stands for itself.
        sent = replace(msg, headers=apply_changes(msg.headers, changes)) if rewritten else msg
        kept = list(ctx.memo.get(DKIM, []))
        if rewritten:  # every signature covers From (RFC 6376 5.4): the rewrite breaks it
            kept = [replace(s, status="fail", error="the From rewrite changed a signed header")
                    if s.status in ("pass", "unverified") else s for s in kept]
        out = CheckContext(self.services, ctx.budget, dict(ctx.memo))
        out.memo[DKIM] = kept + list(ctx.signed)
        out.as_sent = True
        for i, check in enumerate(self.checks):
            if check in self.as_sent:
                found[i] = self._run(check, sent, out)
        summary = dict(ctx.summary)
        for key, after in out.summary.items():
            before = ctx.summary.get(key)
            if before is None or before == after:
                summary[key] = after
                continue
            why = "signed" if key == "dkim" or not rewritten else "rewritten"
            summary[key] = f"{before}->{after}({why})"
        return sent, summary

    def handle(self, msg: Message) -> Applied:
        """The whole per-message pipeline: inspect, then commit the effects."""
        from postwarden.milter.effects import commit

        started = time.perf_counter()
        verdict = self.inspect(msg)
        return commit(msg, verdict, self.services, time.perf_counter() - started)


def judged_as_sent(checks: list[Check]) -> list[Check]:
    """The checks whose verdict depends on the headers and signatures a fix changes."""
    from postwarden.milter import dkim_check, dmarc_check, spf_check

    return [c for c in checks if isinstance(c, dkim_check.DkimCheck | spf_check.SpfCheck)
            or c is dmarc_check.dmarc_check]


def default_checks(services: Services) -> list[Check]:
    """Every per-message check, in the order their memo dependencies need."""
    # Imported here: the check modules import this one for CheckContext.
    from postwarden.milter import (
        dkim_check,
        dmarc_check,
        feedback_brake,
        forms,
        listed_form,
        ratelimit,
        spf_check,
    )

    return [
        # DKIM and SPF leave their results in ctx.memo; DMARC reads them.
        dkim_check.DkimCheck(services.config.dkim), spf_check.SpfCheck(),
        dmarc_check.dmarc_check,
        # the source key (memo) first, then history signals, the score, the limits.
        forms.forms_check, ratelimit.history_check, forms.suspicion_check,
        ratelimit.limit_check,
        # form mail while the self-check saw a sending IP L1/L2-listed.
        listed_form.listed_form_check,
        # the receivers' replies to this source's earlier mail (the feedback reader).
        feedback_brake.FeedbackBrake(),
    ]


def default_fixers(services: Services) -> list[Fixer]:
    """After the decision: the From rewrite, then the signer signs the result."""
    from postwarden.milter import dkim_sign, from_rewrite

    return [from_rewrite.FromRewriter(services.config),
            dkim_sign.DkimSigner(services.config, services.clock)]
