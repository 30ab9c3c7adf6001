"""Everything one message changes in the world, after the decision, in one place.

The checks only look (a rate limit is peeked, never taken, a counter read, never
bumped); the policy decides;
then commit() does, in this order:

1. a self-check probe is recorded and discarded (it uses no budget, logs no line);
2. accounting: the rate-limit units the checks peeked are taken and the form
   history counters bumped, only for mail the decision keeps (delivered now, or
   held and delivered on release) - a rejected or tempfailed message does not use
   up its source's budget;
3. the event record (`postwarden status`, the self-check's activity report) and,
   for a hold, the hold reason;
4. the log lines: the summary, one warning per finding at WARNING or above, the
   From rewrite line, the hold line;
5. the metrics;
6. the header changes, handed back to the adapter (none for mail not kept).

A store failure is logged once (StoreHealth) and the message goes on (fail open).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from postwarden.config import PolicyConfig
from postwarden.findings import Finding, Severity, ids
from postwarden.log import log
from postwarden.logsafe import escape, field
from postwarden.message import Message
from postwarden.metrics import metrics
from postwarden.milter import probe
from postwarden.milter.activity import record_activity
from postwarden.milter.context import HeaderChange, Services, Verdict
from postwarden.milter.ratelimit import exceeded
from postwarden.policy import ACCEPT, Decision, decide, effective
from postwarden.store import HoldRecord, StoreError


@dataclass(frozen=True, slots=True)
class Applied:
    """What the adapter does with the message: its header changes, and whether a
    self-check probe is discarded instead of the decision's action."""

    verdict: Verdict
    changes: tuple[HeaderChange, ...] = ()
    discard: bool = False

    @property
    def decision(self) -> Decision:
        return self.verdict.decision

    @property
    def findings(self) -> list[Finding]:
        return self.verdict.findings

    def without_message(self) -> Applied:
        """The same, holding no reference to the message (and so its body)."""
        return replace(self, verdict=replace(self.verdict, sent=None))


def commit(msg: Message, verdict: Verdict, services: Services, elapsed: float,
           policy: PolicyConfig | None = None) -> Applied:
    """`policy`: the Inspector's effective policy, to decide again when a bucket
    that the checks saw room in was filled by concurrent mail before the take."""
    store, now = services.store, services.clock()
    if probe.catcher.catch(msg, verdict, store, now):
        return Applied(verdict, discard=True)  # never delivered: nothing counts
    d = verdict.decision
    kept = d.delivers
    if kept:
        refused = _take_units(verdict, services, now)
        if refused is not None:
            verdict = _decide_again(msg, verdict, refused, services, policy)
            d = verdict.decision
            kept = d.delivers
        if kept:  # decided again, it may be refused now: then it counts nowhere
            _count_history(verdict, services, now)
    if kept and any(t.local for t in verdict.takes):  # judged on local budgets
        services.health.count(held=d.holds)
    record_activity(msg, verdict, services, now)
    log_verdict(msg, verdict, services.config.mode)
    if verdict.rewrite_note:
        log.info(verdict.rewrite_note, msg.queue_id)
    if d.holds:
        _log_hold(msg, verdict, services, now)
    metrics.message(msg.origin.value, d.action, [f.id for f in verdict.findings],
                    d.reason or "", [ch.name for ch in verdict.changes] if kept else [],
                    verdict.leaving, elapsed)
    return Applied(verdict, tuple(verdict.changes) if kept else ())


def _take_units(verdict: Verdict, services: Services, now: float) -> Finding | None:
    """Take what the limits peeked; the first refusal the checks did not foresee (the
    bucket filled between the peek and now) comes back as its finding, and stops
    the rest. A shared store that fails here starts degraded mode, and the rest are
    taken from this relay's local budgets."""
    store, health = services.store, services.health
    if store is None or not verdict.takes:
        return None
    fraction = services.config.ratelimit.degraded_fraction
    foreseen = {str(f.data.get("key")) for f in verdict.findings
                if f.id == "ratelimit.exceeded"}
    local = False
    for t in verdict.takes:
        local = local or t.local
        r = None
        if not local:
            try:
                r = store.rate_take(t.key, t.cost, t.interval, t.burst, now, once=t.once)
            except StoreError as e:
                health.failed(e, "rate limits", store, now, fraction)
                if not health.degraded:
                    return None
                local = True
            else:
                health.ok(store, now)
        if r is None:
            r = health.local_take(t.key, t.cost, t.interval, t.burst, now, fraction)
        if not r.allowed and t.key not in foreseen and t.limit is not None:
            return exceeded(replace(t, local=local), r)
    return None


def _decide_again(msg: Message, verdict: Verdict, refused: Finding, services: Services,
                  policy: PolicyConfig | None) -> Verdict:
    """The message with the refusal among its findings, decided again: what the
    check would have found had it come a moment later. Units taken from the limits
    before the refusing one stay taken (as for any message a limit holds)."""
    cfg = services.config
    findings = [*verdict.findings, refused]
    decision = decide(findings, msg.origin, cfg.mode,
                      policy if policy is not None else effective(cfg))
    return replace(verdict, findings=findings, decision=decision)


def _count_history(verdict: Verdict, services: Services, now: float) -> None:
    """Add the message to its source's history counters (repeated body, burst)."""
    store = services.store
    if store is None or not verdict.bumps:
        return
    fraction = services.config.ratelimit.degraded_fraction
    try:
        for b in verdict.bumps:
            store.bump(b.key, b.amount, b.half_life, now)
    except StoreError as e:
        services.health.failed(e, "form history", store, now, fraction)
        return
    services.health.ok(store, now)


def _log_hold(msg: Message, verdict: Verdict, services: Services, now: float) -> None:
    reason = verdict.decision.reason or "policy"
    source = verdict.source
    qid = escape(msg.queue_id)
    log.info(f"hold: {field('reason', reason)}"
             f"{' ' + field('source', source) if source else ''}; "
             f"release with 'postsuper -H {qid}', "
             f"delete with 'postsuper -d {qid}'", msg.queue_id)
    store = services.store
    if store is None:
        return
    try:  # while degraded the reason waits in memory for the store's return
        services.health.record_hold(store, HoldRecord(msg.queue_id, now, reason, source,
                                                      msg.mail_from))
    except StoreError as e:  # one line per store condition, shared with the rest
        services.health.failed(e, "hold reasons")


def summary_line(msg: Message, verdict: Verdict, mode: str) -> str:
    """The one key=value line per message. Every value goes through logsafe: a sender's
    address, a header or a DNS answer can neither split it nor add a key to it."""
    d = verdict.decision
    sent = verdict.sent or msg  # the From as it leaves (rewritten or not)
    parts = [
        f"origin={msg.origin}",
        field("from", msg.mail_from, angle=True, limit=254),
        field("hdr_from", sent.header_from, angle=True, limit=254),
        f"rcpts={len(msg.rcpts)}",
    ]
    parts += [field(k, v, limit=300) for k, v in verdict.summary.items()]
    parts += [f"findings={escape(ids(verdict.findings))}", f"action={d.action}"]
    if mode == "monitor":
        parts.append(f"would={d.would}")
    return " ".join(parts)


def log_verdict(msg: Message, verdict: Verdict, mode: str) -> None:
    log.info(summary_line(msg, verdict, mode), msg.queue_id)
    domain = msg.from_domain or msg.mail_from_domain  # parsed once per message
    for f in verdict.findings:
        if f.severity >= Severity.WARNING:  # `error:` is kept for postwarden's own faults
            fix = f"; fix: {f.advice[0]}" if f.advice else ""
            log.limited(f"{f.id}|{domain}", "warning", f"{f.id}: {f.text}{fix}", msg.queue_id)


def log_failure(msg: Message, mode: str) -> None:
    """The summary line of a message postwarden failed on (accepted unchecked)."""
    failed = Finding("internal.error", Severity.ERROR, "postwarden failed")
    log_verdict(msg, Verdict([failed], Decision(ACCEPT, ACCEPT)), mode)
    metrics.internal_errors.inc()


def inbound_line(msg: Message) -> str:
    """The line for inbound mail passed through (log_inbound = true)."""
    return f"origin=inbound {field('from', msg.mail_from, angle=True, limit=254)} not inspected"
