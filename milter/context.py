"""What a per-message check is handed: the long-lived services and one message's
evidence. Only types here, so the check modules and the evidence they compute can
import them without importing the pipeline that runs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from postwarden.config import Config, LimitConfig
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding
from postwarden.hoststate import HostState
from postwarden.message import Message
from postwarden.milter.storehealth import StoreHealth
from postwarden.policy import Decision
from postwarden.spf import SpfResults
from postwarden.store import Store

if TYPE_CHECKING:
    from postwarden.milter.auth_results import DkimSignature
    from postwarden.milter.evidence import Evidence


@dataclass
class Services:
    """Long-lived things a check may use, passed in (never built inside a check)."""

    config: Config
    resolver: Resolver
    store: Store | None = None
    clock: Callable[[], float] = time.time
    host: HostState = field(default_factory=HostState)  # written by the periodic self-check
    health: StoreHealth = field(default_factory=StoreHealth)  # one per daemon
    # SPF results per (domain, identity, IP) while their DNS answers are fresh: one
    # per Inspector, so a reload (new [host] ips) starts with an empty one
    spf_results: SpfResults = field(default_factory=SpfResults)


@dataclass(frozen=True, slots=True)
class RateTake:
    """Units a message takes from a GCRA bucket if the decision keeps it."""

    key: str
    cost: float
    interval: float
    burst: float
    once: str = ""  # the message's identity: a retried message takes nothing again
    local: bool = False  # degraded mode: this relay's own budget, not the shared store
    limit: LimitConfig | None = None  # whose bucket: for the finding if the take is refused
    source: str = ""


@dataclass(frozen=True, slots=True)
class CounterBump:
    """One decaying history counter a message adds to if the decision keeps it."""

    key: str
    amount: float
    half_life: float


@dataclass(frozen=True, slots=True)
class HeaderChange:
    """What the adapter asks Postfix to do: add (index None = append / 0 = top) or change."""

    op: str  # "add" | "insert" | "change"
    name: str
    value: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class Fix:
    """What one fixer plans for the message, and what to say about it."""

    changes: tuple[HeaderChange, ...] = ()
    shown: tuple[tuple[str, str], ...] = ()  # summary-line fields: ("signed", "d/s")
    note: str = ""  # a log line of its own (the From rewrite's)
    signed: tuple[DkimSignature, ...] = ()  # our signatures: evidence of the outgoing message
    rewrites_from: bool = False  # every existing signature covers From: it breaks them


@dataclass(slots=True)
class Verdict:
    findings: list[Finding]
    decision: Decision
    changes: list[HeaderChange] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)
    takes: tuple[RateTake, ...] = ()
    bumps: tuple[CounterBump, ...] = ()
    source: str = ""
    rewrite_note: str = ""
    sent: Message | None = None  # the message as it will leave, when a fix changed it
    # dkim/spf/dmarc of the message as it leaves (the summary shows before->after)
    leaving: dict[str, str] = field(default_factory=dict)
    signed: bool = False  # postwarden signs it


NO_FIX = Fix()  # what a fixer that changes nothing returns (one object, not one per message)


class CheckContext:
    """One message's services, DNS budget and evidence, as the checks see them.

    The evidence is computed on first ask and kept (postwarden.milter.evidence): a
    check asks for what it needs, in any order, and nothing is evaluated twice.
    """

    __slots__ = ("_evidence", "_given", "budget", "services")

    def __init__(self, services: Services, budget: Budget,
                 evidence: Evidence | None = None) -> None:
        self.services = services
        self.budget = budget
        self._evidence = evidence
        self._given: dict[str, Any] = {}

    def given(self, **parts: Any) -> CheckContext:
        """Evidence known before the checks run (`dkim=`, `spf=`): what a test sets up."""
        self._given.update(parts)
        return self

    def evidence(self, msg: Message) -> Evidence:
        """The evidence of `msg`; a context serves one message (a new one, new evidence)."""
        ev = self._evidence
        if ev is None or ev.msg is not msg:
            from postwarden.milter.evidence import Evidence

            ev = self._evidence = Evidence(msg, self.services, self.budget, **self._given)
        return ev

    @property
    def known(self) -> Evidence:
        """The evidence the checks computed (a test reads it after running a check)."""
        if self._evidence is None:
            raise LookupError("no check has asked for evidence yet")
        return self._evidence
