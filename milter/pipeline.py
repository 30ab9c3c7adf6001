"""Message -> every check -> fixes planned -> the outgoing message judged -> verdict.

No pymilter here. Checks are plain callables `check(msg, ctx) -> list[Finding]`
that ask the message's evidence (postwarden.milter.evidence) for what they need; a
check that raises is logged with the queue ID and skipped (fail open). Checks only
look: what a message would change in the world (rate-limit units, history
counters) is in its evidence, and postwarden.milter.effects commits it once the
decision is known. Fixers (From rewrite, DKIM signing) plan header changes; they
are applied only to mail the decision keeps (Decision.delivers).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

from postwarden.dns import Budget
from postwarden.findings import Finding, Severity
from postwarden.log import log
from postwarden.message import Message
from postwarden.milter import dkim_check, dmarc_check, spf_check
from postwarden.milter.context import (
    CheckContext,
    CounterBump,
    Fix,
    HeaderChange,
    RateTake,
    Services,
    Verdict,
)
from postwarden.milter.dkim_sign import apply_changes
from postwarden.milter.effects import Applied, commit
from postwarden.milter.evidence import Evidence
from postwarden.milter.switches import with_switch
from postwarden.policy import decide, effective

__all__ = ["CheckContext", "CounterBump", "HeaderChange", "Inspector", "RateTake",
           "Services", "Verdict", "default_checks", "default_fixers"]


class Check(Protocol):
    def __call__(self, msg: Message, ctx: CheckContext) -> list[Finding]: ...


class Fixer(Protocol):
    """Plans header changes from the findings on the message as it arrived, after
    the changes the fixers before it planned (`before`)."""

    def __call__(self, msg: Message, ctx: CheckContext, findings: list[Finding],
                 before: tuple[HeaderChange, ...] = ()) -> Fix: ...


class Inspector:
    """checks -> fixes planned -> the message as it will leave judged again -> decision.

    The From rewrite and the signer plan their changes from the findings on the
    message as it arrived. When they change anything, the checks in `as_sent` (DKIM,
    SPF, DMARC) judge the message as it will leave, on its own evidence
    (Evidence.as_sent): its new headers, the existing signatures (broken if the
    rewrite changed a header they cover) plus postwarden's own, which count as an
    aligned pass without being verified. Their findings replace the first ones; the
    summary shows both, `dkim=none->pass(signed)`. So the decision is about the
    outgoing message, and a defect a fix cured is not reported. A message the
    decision does not keep gets none of the changes (effects).
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

    def _plan(self, msg: Message, ctx: CheckContext, findings: list[Finding]) -> list[Fix]:
        fixes: list[Fix] = []
        before: tuple[HeaderChange, ...] = ()
        for fixer in self.fixers:
            try:
                fix = fixer(msg, ctx, findings, before)
            except Exception as e:
                name = getattr(fixer, "__name__", type(fixer).__name__)
                log.limited(f"fix|{name}|{type(e).__name__}", "error",
                            f"fix {name} failed: {type(e).__name__}: {e}; "
                            "message left unchanged by it", msg.queue_id)
                continue
            if fix.changes:
                fixes.append(fix)
                before += fix.changes
        return fixes

    def inspect(self, msg: Message) -> Verdict:
        cfg = self.services.config
        ev = Evidence(msg, self.services, Budget(cfg.dns.message_budget))
        ctx = CheckContext(self.services, ev.budget, ev)
        found = [self._run(check, msg, ctx) for check in self.checks]
        fixes = self._plan(msg, ctx, [f for fs in found for f in fs])
        summary = describe(ev)
        if not fixes:  # the usual message: nothing planned, judged as it arrived
            findings = [with_switch(cfg, msg.origin, f) for fs in found for f in fs]
            verdict = Verdict(findings, decide(findings, msg.origin, cfg.mode, self.policy),
                              summary=summary, leaving=summary)
        else:
            sent, leaving = msg, dict(summary)
            if self.as_sent:
                sent, summary, leaving = self._judge_as_sent(ev, fixes, found, summary)
            findings = [with_switch(cfg, msg.origin, f) for fs in found for f in fs]
            for fix in fixes:
                summary.update(fix.shown)
            verdict = Verdict(findings, decide(findings, msg.origin, cfg.mode, self.policy),
                              [ch for fix in fixes for ch in fix.changes], summary,
                              rewrite_note="; ".join(fix.note for fix in fixes if fix.note),
                              sent=sent, leaving=leaving,
                              signed=any(fix.signed for fix in fixes))
        if ev.limits_known:
            verdict.takes = ev.limits().takes
        if ev.history_known and (history := ev.history()) is not None:
            verdict.bumps = history.bumps
        if ev.source_known:
            verdict.source = ev.source().key
        return verdict

    def _judge_as_sent(self, ev: Evidence, fixes: list[Fix], found: list[list[Finding]],
                       before: dict[str, str]
                       ) -> tuple[Message, dict[str, str], dict[str, str]]:
        """Re-run the as-sent checks on the outgoing message (in place in `found`)."""
        msg = ev.msg
        rewritten = any(fix.rewrites_from for fix in fixes)
        changes = [ch for fix in fixes for ch in fix.changes]
        # Only signed: the checks read nothing the new DKIM-Signature header changes
        # (the signatures are evidence), so the message itself stands for itself.
        sent = replace(msg, headers=apply_changes(msg.headers, changes)) if rewritten else msg
        kept = ev.dkim()
        if rewritten:  # every signature covers From (RFC 6376 5.4): the rewrite breaks it
            kept = tuple(replace(s, status="fail",
                                 error="the From rewrite changed a signed header")
                         if s.status in ("pass", "unverified") else s for s in kept)
        out = ev.as_sent(sent, kept + tuple(s for fix in fixes for s in fix.signed))
        ctx = CheckContext(self.services, ev.budget, out)
        for i, check in enumerate(self.checks):
            if check in self.as_sent:
                found[i] = self._run(check, sent, ctx)
        summary = dict(before)
        leaving = describe(out)
        for key, after in leaving.items():
            was = before.get(key)
            if was is None or was == after:
                summary[key] = after
                continue
            why = "signed" if key == "dkim" or not rewritten else "rewritten"
            summary[key] = f"{was}->{after}({why})"
        return sent, summary, leaving

    def handle(self, msg: Message) -> Applied:
        """The whole per-message pipeline: inspect, then commit the effects."""
        started = time.perf_counter()
        verdict = self.inspect(msg)
        return commit(msg, verdict, self.services, time.perf_counter() - started,
                      self.policy)


def describe(ev: Evidence) -> dict[str, str]:
    """The summary line's evidence fields, for what this message's checks asked."""
    out: dict[str, str] = {}
    if ev.dkim_known:
        out["dkim"] = dkim_check.summary(ev)
    if ev.spf_known:
        out["spf"] = spf_check.summary(ev)
    if ev.dmarc_known:
        v = ev.dmarc()
        out["dmarc"], out["dmarc_gen"] = v.result, v.generation
    if ev.source_known:
        src = ev.source()
        out["source"] = src.key
        if src.claimed:
            out["claimed"] = src.claimed
    return out


def judged_as_sent(checks: list[Check]) -> list[Check]:
    """The checks whose verdict depends on the headers and signatures a fix changes."""
    return [c for c in checks if isinstance(c, dkim_check.DkimCheck | spf_check.SpfCheck)
            or c is dmarc_check.dmarc_check]


def default_checks(services: Services) -> list[Check]:
    """Every per-message check. Each asks the evidence for what it needs, so the
    order is only the order of the findings in the log."""
    # Imported here: these modules import the context types this module re-exports.
    from postwarden.milter import feedback_brake, forms, listed_form, ratelimit

    return [
        dkim_check.DkimCheck(), spf_check.SpfCheck(results=services.spf_results),
        dmarc_check.dmarc_check,
        forms.forms_check, ratelimit.history_check, forms.suspicion_check,
        ratelimit.limit_check,
        # form mail while the self-check saw a sending IP L1/L2-listed.
        listed_form.listed_form_check,
        # the receivers' replies to this source's earlier mail (the feedback reader).
        feedback_brake.FeedbackBrake(),
    ]


def default_fixers(services: Services) -> list[Fixer]:
    """The From rewrite, then the signer, which signs the rewritten headers."""
    from postwarden.milter import dkim_sign, from_rewrite

    return [from_rewrite.FromRewriter(services.config),
            dkim_sign.DkimSigner(services.config, services.clock)]
