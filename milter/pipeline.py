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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from postwarden.config import Config
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding, Severity
from postwarden.hoststate import HostState
from postwarden.log import log
from postwarden.message import Message
from postwarden.milter.storehealth import StoreHealth
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


@dataclass
class CheckContext:
    services: Services
    budget: Budget
    memo: dict[str, Any] = field(default_factory=dict)  # shared between checks of one message
    summary: dict[str, str] = field(default_factory=dict)  # extra key=value for the summary line
    takes: list[RateTake] = field(default_factory=list)  # committed by effects if kept
    source: str = ""  # the source key (forms_check): events and hold records count by it
    rewrite_note: str = ""  # the From rewrite's log line, written by effects


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


class Check(Protocol):
    def __call__(self, msg: Message, ctx: CheckContext) -> list[Finding]: ...


class Fixer(Protocol):
    def __call__(
        self, msg: Message, ctx: CheckContext, findings: list[Finding], decision: Decision
    ) -> list[HeaderChange]: ...


class Inspector:
    def __init__(
        self, services: Services, checks: list[Check], fixers: list[Fixer] | None = None
    ) -> None:
        self.services = services
        self.checks = checks
        self.fixers = fixers or []
        self.policy = effective(services.config)

    def inspect(self, msg: Message) -> Verdict:
        cfg = self.services.config
        ctx = CheckContext(self.services, Budget(cfg.dns.message_budget))
        findings: list[Finding] = []
        for check in self.checks:
            try:
                findings.extend(check(msg, ctx))
            except Exception as e:  # one broken check must not stop the mail
                name = getattr(check, "__name__", type(check).__name__)
                log.limited(f"check|{name}|{type(e).__name__}", "error",
                            f"check {name} failed: {type(e).__name__}: {e}; "
                            "message accepted by this check (fail open)", msg.queue_id)
                findings.append(Finding("internal.error", Severity.ERROR,
                                        f"check {name} failed", {"check": name}))
        decision = decide(findings, msg.origin, cfg.mode, self.policy)
        changes: list[HeaderChange] = []
        for fixer in self.fixers:
            try:
                changes.extend(fixer(msg, ctx, findings, decision))
            except Exception as e:
                name = getattr(fixer, "__name__", type(fixer).__name__)
                log.limited(f"fix|{name}|{type(e).__name__}", "error",
                            f"fix {name} failed: {type(e).__name__}: {e}; "
                            "message left unchanged by it", msg.queue_id)
        return Verdict(findings, decision, changes, ctx.summary, tuple(ctx.takes), ctx.source,
                       ctx.rewrite_note)

    def handle(self, msg: Message) -> Applied:
        """The whole per-message pipeline: inspect, then commit the effects."""
        from postwarden.milter.effects import commit

        started = time.perf_counter()
        verdict = self.inspect(msg)
        return commit(msg, verdict, self.services, time.perf_counter() - started)


def default_checks(services: Services) -> list[Check]:
    """Every per-message check, in the order their memo dependencies need."""
    # Imported here: the check modules import this one for CheckContext.
    from postwarden.milter import dkim_check, dmarc_check, forms, listed_form, ratelimit, spf_check

    return [
        # DKIM and SPF leave their results in ctx.memo; DMARC reads them.
        dkim_check.DkimCheck(services.config.dkim), spf_check.SpfCheck(),
        dmarc_check.dmarc_check,
        # the source key (memo) first, then history signals, the score, the limits.
        forms.forms_check, ratelimit.history_check, forms.suspicion_check,
        ratelimit.limit_check,
        # form mail while the self-check saw a sending IP L1/L2-listed.
        listed_form.listed_form_check,
    ]


def default_fixers(services: Services) -> list[Fixer]:
    """After the decision: the From rewrite, then the signer signs the result."""
    from postwarden.milter import dkim_sign, from_rewrite

    return [from_rewrite.FromRewriter(services.config),
            dkim_sign.DkimSigner(services.config, services.clock)]
