"""The one place that turns findings into an action.

Checks never decide. The table is configuration (`[policy] enforce`): finding id,
or `family.*`, -> action in enforce mode. Monitor mode accepts and records what
enforce mode would have done (`would=`), except for the ids in
`hold_in_monitor` (rate limits, suspicious form mail): held mail is never lost, so
holding it is safe even while monitoring. Local mail (sendmail/pickup) is only
ever held: a reject bounces to www-data and a tempfail retries forever.

`uceprotect.listed_form` is reported for every form message while a sending IP is
L1/L2-listed; `[selfcheck] hold_forms_when_listed` only adds it to both tables
(`effective`), so with the switch off the log still shows the finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwarden.config import Config, PolicyConfig
from postwarden.findings import Finding
from postwarden.message import Origin

ACCEPT, HOLD, TEMPFAIL, REJECT = "accept", "hold", "tempfail", "reject"
_RANK = {ACCEPT: 0, HOLD: 1, TEMPFAIL: 2, REJECT: 3}


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    would: str
    because: tuple[Finding, ...] = ()

    @property
    def delivers(self) -> bool:
        """The message stays with Postfix and is delivered: now (accept) or when an
        admin releases it (hold). What the fixes and the rate-limit accounting ask;
        they never compare action names."""
        return self.action in (ACCEPT, HOLD)

    @property
    def holds(self) -> bool:
        return self.action == HOLD

    @property
    def smtp_reply(self) -> tuple[str, str] | None:
        """(code, enhanced status) refusing the message, None when it is taken."""
        if self.action == TEMPFAIL:
            return "451", "4.7.1"
        if self.action == REJECT:
            return "550", "5.7.1"
        return None

    @property
    def reason(self) -> str:
        """`ratelimit.exceeded,form.suspicious`: what made the action."""
        return ",".join(f.id for f in self.because)


LISTED_FORM = "uceprotect.listed_form"


def effective(cfg: Config) -> PolicyConfig:
    """`[policy]` plus what `[selfcheck] hold_forms_when_listed` adds (an explicit
    `[policy] enforce` entry for the id wins)."""
    if not cfg.selfcheck.hold_forms_when_listed:
        return cfg.policy
    enforce = {LISTED_FORM: HOLD, **cfg.policy.enforce}
    hold = list(cfg.policy.hold_in_monitor)
    if LISTED_FORM not in hold:
        hold.append(LISTED_FORM)
    return PolicyConfig(enforce=enforce, hold_in_monitor=hold)


def enforce_action(finding_id: str, table: dict[str, str]) -> str:
    if finding_id in table:
        return table[finding_id]
    family = finding_id.split(".", 1)[0] + ".*"
    return table.get(family, ACCEPT)


def _for_origin(action: str, origin: Origin) -> str:
    if origin is Origin.LOCAL and action in (TEMPFAIL, REJECT):
        return HOLD
    return action


def decide(findings: list[Finding], origin: Origin, mode: str, cfg: PolicyConfig) -> Decision:
    would, acting, would_because = ACCEPT, ACCEPT, []
    acting_because: list[Finding] = []
    for f in findings:
        a = _for_origin(enforce_action(f.id, cfg.enforce), origin)
        if a == ACCEPT:
            continue
        if _RANK[a] > _RANK[would]:
            would = a
        would_because.append(f)
        if mode == "monitor" and f.id in cfg.hold_in_monitor:
            acting = HOLD if _RANK[acting] < _RANK[HOLD] else acting
            acting_because.append(f)
    if mode == "enforce":
        return Decision(would, would, tuple(would_because))
    return Decision(acting, would, tuple(acting_because or would_because))
