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
from typing import Any

from postwarden import dns
from postwarden.blocklists import UCEPROTECT
from postwarden.checks.report import CheckResult, Report
from postwarden.checks.runner import RunInputs, targets_for
from postwarden.checks.runner import run as run_checks
from postwarden.config import Config
from postwarden.hoststate import L1_L2, HostState, Snapshot
from postwarden.log import Logger, log
from postwarden.metrics import metrics

_LEVEL = {"critical": "critical", "warning": "warning"}
_PREFIX = "selfcheck: "


class Watcher:
    """Turns a stream of reports into log lines: changes, resolutions, reminders."""

    def __init__(self, logger: Logger, reminder_interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.log = logger
        self.reminder_interval = reminder_interval
        self.clock = clock
        self.problems: dict[tuple[str, str], CheckResult] = {}
        self.last_reminder = 0.0

    def observe(self, report: Report) -> None:
        now = self.clock()
        for t in report.transitions:
            level = "info" if t.get("kind") == "delisted" else (
                "warning" if t.get("severity") == "info" else str(t.get("severity", "warning")))
            self.log.line(level, _PREFIX + str(t.get("text", "")))
        current: dict[tuple[str, str], CheckResult] = {}
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
                       logger: Logger = log, clock: Callable[[], float] = time.time) -> None:
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
                targets=targets_for(current_cfg, resolver)))
            watcher.observe(report)
            metrics.selfcheck_done(report.metrics_run())
            reaction.update(current_cfg.selfcheck.hold_forms_when_listed, report, logger)
        except Exception as e:  # never let the thread die: the next run may work
            logger.error(f"{_PREFIX}run failed: {type(e).__name__}: {e}")
        stop.wait(current_cfg.selfcheck.interval)
