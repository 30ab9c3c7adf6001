"""The daemon's periodic self-check: a background thread that never delays mail.

Every `selfcheck.interval` seconds it runs the self-check, records it, and logs
`warning:`/`critical:` lines only when something changed (a UCEPROTECT
transition, a check turning bad or changing severity), an info line when a
problem is resolved, and one reminder per `reminder_interval` while problems
persist. It publishes the UCEPROTECT listings in the daemon's HostState, which the
milter reads (form mail while L1/L2-listed), and logs when the automatic reaction
(holding that mail, `[selfcheck] hold_forms_when_listed`, off by default) turns on
and off.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from postwarden import dns
from postwarden.blocklists import UCEPROTECT
from postwarden.checks import rootcause
from postwarden.checks.report import Report
from postwarden.checks.runner import RunInputs, targets_for
from postwarden.checks.runner import run as run_checks
from postwarden.config import Config
from postwarden.findings import Finding
from postwarden.hoststate import L1_L2, HostState, Snapshot
from postwarden.log import Logger, log
from postwarden.metrics import metrics

if TYPE_CHECKING:
    from postwarden.heartbeat import Beat

_LEVEL = {"critical": "critical", "warning": "warning"}
_PREFIX = "selfcheck: "


class Watcher:
    """Turns a stream of reports into log lines: changes, resolutions, reminders."""

    def __init__(self, logger: Logger, reminder_interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.log = logger
        self.reminder_interval = reminder_interval
        self.clock = clock
        self.problems: dict[tuple[str, str], Finding] = {}
        self.last_reminder = 0.0
        self.unknown: dict[tuple[str, str], Finding] = {}
        self.announced: dict[tuple[str, str], float] = {}  # when each unknown was last said
        self.episode_said = False  # this stretch of unknowns was logged: say when it ends

    def observe(self, report: Report) -> None:
        now = self.clock()
        self._unknowns(report, now)
        for t in report.transitions:
            level = "info" if t.get("kind") == "delisted" else (
                "warning" if t.get("severity") == "info" else str(t.get("severity", "warning")))
            self.log.line(level, _PREFIX + str(t.get("text", "")))
        current: dict[tuple[str, str], Finding] = {}
        for c in report.checks:
            key = (c.id, c.target)
            if c.status in _LEVEL:
                current[key] = c
            elif c.status == "unknown" and key in self.problems:
                current[key] = self.problems[key]  # no evidence either way: keep it
        for key, c in current.items():
            old = self.problems.get(key)
            if c.id.startswith("uceprotect."):
                continue  # the transition lines above say it, once
            if old is None or old.status != c.status:
                target = f" {c.target}" if c.target else ""
                fix = f"; fix: {c.advice[0]}" if c.advice else ""
                self.log.line(_LEVEL[c.status], f"{_PREFIX}{c.id}{target}: {c.summary}{fix}")
        for key, old in self.problems.items():
            if key not in current and not old.id.startswith("uceprotect."):
                target = f" {old.target}" if old.target else ""
                self.log.info(f"{_PREFIX}{old.id}{target}: resolved")
        if current and not self.problems:
            self.last_reminder = now
        self.problems = current
        if current and now - self.last_reminder >= self.reminder_interval:
            self.last_reminder = now
            worst = "critical" if any(c.status == "critical" for c in current.values()) \
                else "warning"
            names = ", ".join(f"{c.id} {c.target}".strip() for c in list(current.values())[:6])
            more = f" and {len(current) - 6} more" if len(current) > 6 else ""
            self.log.line(worst, f"{_PREFIX}reminder: {len(current)} problem(s) persist: "
                                 f"{names}{more}; run postwarden selfcheck")

    def _unknowns(self, report: Report, now: float) -> None:
        """Unknown is loud: one line when checks turn unknown (what and why), a
        reminder per reminder_interval while it lasts, one line when it ends."""
        unknown = {(c.id, c.target): c for c in report.checks if c.status == "unknown"}
        if not unknown:
            if self.unknown and self.episode_said:
                names = _names(list(self.unknown.values()))
                self.log.info(f"{_PREFIX}every check answers again (was unknown: {names})")
            self.unknown, self.episode_said = {}, False
            return
        self.unknown = unknown
        # Flood limit: each unknown is said at most once per reminder_interval, so one
        # that flaps between unknown and known every run is not logged every run.
        due = [c for k, c in unknown.items()
               if now - self.announced.get(k, float("-inf")) >= self.reminder_interval]
        if due and (any(c.id in rootcause.ROOTS for c in due)
                    or not all(c.details.get("cause") for c in due)):
            again = "reminder: " if self.episode_said else ""
            self.announced.update({k: now for k in unknown})
            self.episode_said = True
            self.log.warning(f"{_PREFIX}{again}{_unknown_line(list(unknown.values()))}")


def _names(results: list[Finding], n: int = 6) -> str:
    names = ", ".join(f"{c.id} {c.target}".strip() for c in results[:n])
    return names + (f" and {len(results) - n} more" if len(results) > n else "")


def _unknown_line(unknown: list[Finding]) -> str:
    """`N check(s) unknown: ROOT CAUSE (or the first few); fix: ...`"""
    roots = [c for c in unknown if c.id in rootcause.ROOTS]
    shown = roots or unknown[:3]
    why = "; ".join(f"{c.id}{' ' + c.target if c.target else ''}: {c.summary}" for c in shown)
    rest = len(unknown) - len(shown)
    more = f" (and {rest} more unknown: {_names([c for c in unknown if c not in shown], 4)})" \
        if rest else ""
    fix = next((c.advice[0] for c in shown if c.advice), "run postwarden selfcheck")
    return f"{len(unknown)} check(s) unknown, not watched: {why}{more}; fix: {fix}"


def publish(state: HostState, report: Report) -> Snapshot:
    """One run's UCEPROTECT answers and resolver health into the shared HostState."""
    listed: dict[tuple[str, str], bool | None] = {}
    for bl in UCEPROTECT:
        for c in report.checks:
            if c.id != bl.check_id:
                continue
            # a task that timed out answers once for all its IPs ("ip1,ip2"), unknown
            answer = c.details.get("listed")
            for ip in c.target.split(","):
                listed[(ip, bl.level)] = answer if isinstance(answer, bool) else None
    resolver = next((c for c in report.checks if c.id == "resolver.public"), None)
    dns_ok = None if resolver is None or resolver.status == "unknown" \
        else resolver.status == "ok"
    ips = report.host.get("ips")
    return state.observe(report.generated, listed,
                         ips=[str(i) for i in ips] if isinstance(ips, list) else None,
                         dns_ok=dns_ok, dns_note=resolver.summary if resolver else "")


class Reaction:
    """The automatic reaction's log lines: on while a sending IP is L1/L2-listed and
    `hold_forms_when_listed` is on. The milter reads the listings from the HostState
    (postwarden.milter.listed_form); this only says when holding starts and stops."""

    def __init__(self, state: HostState | None = None) -> None:
        self.state = state if state is not None else HostState()
        self.active = False
        self.why = ""

    def update(self, enabled: bool, report: Report, logger: Logger) -> None:
        snap = publish(self.state, report)
        listed = snap.listed(L1_L2)
        want = enabled and bool(listed)
        changed = want != self.active
        self.active, self.why = want, ", ".join(str(x) for x in listed)
        if changed and want:
            logger.warning(f"{_PREFIX}automatic reaction ON: holding all form mail while "
                           f"{self.why} is listed on UCEPROTECT")
        elif changed:
            logger.info(f"{_PREFIX}automatic reaction OFF: form mail flows again")


Current = Callable[[], tuple[Config, Any]]  # the live (config, store); swapped on reload


def periodic_selfcheck(current: Current, state: HostState, stop: threading.Event,
                       logger: Logger = log, clock: Callable[[], float] = time.time,
                       beat: Beat | None = None) -> None:
    """The daemon's background thread: run the self-check every interval until `stop`.

    `current` gives the config and store after any SIGHUP reload; `state` is the
    HostState the milter's checks read.
    """
    cfg, _store = current()
    if not cfg.selfcheck.periodic:
        return
    # The self-check's own resolver, cleared every run: blocklist answers must be
    # fresh each hour and must not evict the milter's hot-path cache.
    resolver = dns.from_config(dataclasses.replace(cfg.dns, timeout=cfg.selfcheck.query_timeout))
    watcher = Watcher(logger, cfg.selfcheck.reminder_interval, clock)
    reaction = Reaction(state)
    if stop.wait(min(cfg.selfcheck.startup_delay, cfg.selfcheck.interval)):
        return
    while not stop.is_set():
        current_cfg, store = current()
        try:
            resolver.clear()
            report = run_checks(RunInputs(
                config=current_cfg, resolver=resolver, store=store, clock=clock,
                targets=targets_for(current_cfg, resolver),
                probe=current_cfg.selfcheck.probe))
            watcher.observe(report)
            metrics.selfcheck_done(report.metrics_run())
            if beat is not None:
                beat.periodic_ran(report.generated, _dns_health(report))
            reaction.update(current_cfg.selfcheck.hold_forms_when_listed, report, logger)
        except Exception as e:  # never let the thread die: the next run may work
            logger.error(f"{_PREFIX}run failed: {type(e).__name__}: {e}")
        stop.wait(current_cfg.selfcheck.interval)


def _dns_health(report: Report) -> str:
    for c in report.find(rootcause.RESOLVER):
        return "ok" if c.status == "ok" else f"unknown: {c.summary}"
    return ""
