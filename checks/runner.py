"""Run every self-check concurrently, bounded in time, into one Report.

Each task is a small closure returning CheckResults. Tasks run in a thread pool;
every DNS query gets the per-query timeout (the resolver's) and the run's budget,
and a task still running at `run_timeout` is reported `unknown`. A task that
raises becomes `unknown` with the error: a bug in one check never hides the rest.
Resolver, store and clock are passed in.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from postwarden import hostinfo
from postwarden.blocklists import lists_for
from postwarden.checks import (
    activity,
    checklist,
    daemon_state,
    dnsbl,
    escalation,
    milter_reach,
    postfix_audit,
    probe_send,
    rdns,
    receivers,
    records,
    rootcause,
    storecheck,
)
from postwarden.checks.report import CheckResult, Report
from postwarden.config import Config
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding
from postwarden.log import log


@dataclass
class Targets:
    ips: list[str]
    domains: list[str]
    hostname: str


@dataclass
class Task:
    ids: tuple[str, ...]  # the check ids it produces (for --only / --skip)
    target: str
    fn: Callable[[], list[Finding]]

    @property
    def failed_id(self) -> str:
        """The id that reports this task as unknown: a prefix task answers with its
        config check (`postfix.` -> `postfix.config`), never with a bare prefix."""
        first = self.ids[0]
        return first + "config" if first.endswith(".") else first


@dataclass
class Selection:
    only: Sequence[str] = ()
    skip: Sequence[str] = ()

    def wants(self, check_id: str) -> bool:
        if self.only and not any(check_id.startswith(p) for p in self.only):
            return False
        return not any(check_id.startswith(p) for p in self.skip)

    def wants_any(self, ids: Sequence[str]) -> bool:
        return any(self.wants(i) for i in ids)


@dataclass
class RunInputs:
    """Everything a run needs, passed in."""

    config: Config
    resolver: Resolver
    targets: Targets
    store: Any = None  # postwarden.store.Store (history + activity) or None
    selection: Selection = field(default_factory=Selection)
    clock: Callable[[], float] = time.time
    record: bool = True
    gather_postfix: Callable[[str], postfix_audit.PostfixFacts] = postfix_audit.gather
    negotiate: Callable[[str], milter_reach.Negotiation] = milter_reach.negotiate
    postfix_running: Callable[[postfix_audit.PostfixFacts | None], bool | None] = \
        daemon_state.postfix_running
    probe: bool = False  # send probes through sendmail and SMTP (probe_send)


def detect_targets(cfg: Config, ips: Sequence[str] = (), domains: Sequence[str] = (),
                   facts: postfix_audit.PostfixFacts | None = None,
                   resolver: Resolver | None = None) -> Targets:
    """Command line first, then [host], then postconf (and the HELO name's addresses)."""
    host = dataclasses.replace(cfg.host, ips=list(ips) or list(cfg.host.ips),
                               domains=list(domains) or list(cfg.host.domains))
    facts_ = hostinfo.detect(host, facts.main if facts else {}, resolver)
    return Targets(list(facts_.ips), list(facts_.domains), facts_.hostname)


def targets_for(cfg: Config, resolver: Resolver, ips: Sequence[str] = (),
                domains: Sequence[str] = ()) -> Targets:
    """detect_targets, reading postconf only when the config leaves something open."""
    facts = None
    if not ((ips or cfg.host.ips) and (domains or cfg.host.domains) and cfg.host.hostname):
        try:
            facts = postfix_audit.gather(cfg.selfcheck.postfix_config_dir)
        except Exception:  # reported by the postfix.* check itself
            facts = None
    return detect_targets(cfg, ips, domains, facts, resolver)


def _one(fn: Callable[..., Finding], *args: Any) -> Callable[[], list[Finding]]:
    """A task from a check that answers one result."""
    return lambda: [fn(*args)]


def _no_selector(domain: str) -> Finding:
    return CheckResult("dkim.record", f"*._domainkey.{domain}", "info",
                       "no DKIM selector configured for this domain: key not checked",
                       (f"Set [selfcheck] dkim_selectors = {{ \"{domain}\" = [\"SELECTOR\"] }}",),
                       {"checked": False})


def _tasks(inp: RunInputs, budget: Budget, facts_box: dict[str, Any]) -> list[Task]:
    cfg, res, tg = inp.config, inp.resolver, inp.targets
    sc = cfg.selfcheck
    severities = {"l1": sc.severity_l1, "l2": sc.severity_l2, "l3": sc.severity_l3}
    tasks: list[Task] = []
    tasks.append(Task(("resolver.reachable",), ",".join(res.nameservers),
                      lambda: [rootcause.check_resolver(res, budget)]))
    if not tg.ips:
        tasks.append(Task(("blocklists.no_sending_ip", "uceprotect.", "dnsbl."), "",
                          _one(rootcause.no_sending_ip)))
    for bl in lists_for(sc.lists_add, sc.lists_remove, sc.spamhaus_dqs_key):
        tasks.append(Task((bl.check_id,), ",".join(tg.ips),
                          partial(dnsbl.check_list, bl, tg.ips, res, severities, budget)))
    for ip in tg.ips:
        tasks.append(Task(("rdns.ptr", "rdns.fcrdns"), ip,
                          partial(rdns.check_ip, ip, res, tg.hostname, budget)))

    def helo() -> list[Finding]:
        ptrs = {}
        for ip in tg.ips:
            ans = res.ptr(ip, budget)
            ptrs[ip] = [n.lower().rstrip(".") for n in ans.records] if ans.ok else []
        return [rdns.check_helo(tg.hostname, tg.ips, ptrs, res, budget)]

    tasks.append(Task(("helo",), tg.hostname, helo))
    for d in tg.domains:
        tasks.append(Task(("spf.record",), d,
                          _one(records.check_spf, d, tg.ips, res, tg.hostname, budget)))
        tasks.append(Task(("dmarc.record", "dmarc.generations"), d,
                          partial(records.dmarc_results, d, res, budget)))
        tasks.append(Task(("mx",), d, _one(records.check_mx, d, res, budget)))
        for sel in sc.dkim_selectors.get(d, []):
            key = sc.dkim_key_files.get(f"{sel}._domainkey.{d}", "")
            tasks.append(Task(("dkim.record",), f"{sel}._domainkey.{d}",
                              _one(records.check_dkim, sel, d, res, key, budget)))
        if not sc.dkim_selectors.get(d):
            tasks.append(Task(("dkim.record",), f"*._domainkey.{d}",
                              _one(_no_selector, d)))

    marker = cfg.socket.rsplit("/", 1)[-1] if cfg.socket.startswith("unix:") else cfg.socket

    def postfix() -> list[Finding]:
        target = sc.postfix_config_dir or "/etc/postfix"
        try:
            facts = inp.gather_postfix(sc.postfix_config_dir)
        except Exception as e:  # postconf missing, config unreadable
            facts_box["error"] = str(e)
            return [CheckResult("postfix.config", target, "unknown",
                                f"cannot read the Postfix config: {e}",
                                ("Run selfcheck as root or a user that may run postconf",), {}),
                    *_daemon(None)]
        facts_box["facts"] = facts
        v6 = []
        for ip in tg.ips:
            if ipaddress.ip_address(ip).version == 6 and not res.ptr(ip, budget).ok:
                v6.append(ip)
        return [*postfix_audit.audit(facts, marker, v6), *_daemon(facts)]

    def _daemon(facts: postfix_audit.PostfixFacts | None) -> list[Finding]:
        """The milter as Postfix reaches it, and the daemon's heartbeat."""
        if not inp.selection.wants("milter."):
            return []
        if facts is None:
            eps = [milter_reach.Endpoint(cfg.socket, cfg.socket, ["[socket] in config"])]
        else:
            eps = milter_reach.endpoints(facts, marker, cfg.socket)
        reach = [milter_reach.check(ep, cfg.socket, inp.negotiate) for ep in eps]
        running = inp.postfix_running(facts)
        return [*reach, daemon_state.check_heartbeat(inp.store, inp.clock(), running,
                                                     any(r.status == "ok" for r in reach))]

    tasks.append(Task(("postfix.", "milter."), sc.postfix_config_dir, postfix))

    def probes() -> list[Finding]:
        try:
            facts: postfix_audit.PostfixFacts | None = inp.gather_postfix(sc.postfix_config_dir)
        except Exception:  # the sendmail path is still probed
            facts = None
        return probe_send.run(inp.store, facts, marker, tg.domains[0] if tg.domains else "",
                              tg.hostname, sc.postfix_config_dir, sc.probe_wait, inp.clock,
                              sc.probe_recipient, probe_send.login(sc.probe_sasl_user,
                                                                   sc.probe_sasl_password_file))

    if inp.probe:
        tasks.append(Task(("probe.sendmail", "probe.smtp"), "", probes))
    return tasks


def run(inp: RunInputs) -> Report:
    """Every wanted check, concurrently; escalation compared with the stored history."""
    cfg, sel = inp.config, inp.selection
    mono = time.monotonic()
    budget = Budget(cfg.selfcheck.run_timeout)
    facts_box: dict[str, Any] = {}
    tasks = [t for t in _tasks(inp, budget, facts_box) if sel.wants_any(t.ids)
             or (t.ids == ("resolver.reachable",) and rootcause.needs_dns(sel.wants))]
    if sel.wants("checklist.") and not sel.wants_any(("postfix.",)):
        tasks += [t for t in _tasks(inp, budget, facts_box) if t.ids[0] == "postfix."]
    results: list[Finding] = []
    pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(tasks))),
                              thread_name_prefix="selfcheck")
    futures: dict[Future[list[Finding]], Task] = {pool.submit(t.fn): t for t in tasks}
    _done, pending = wait(futures, timeout=cfg.selfcheck.run_timeout)
    pool.shutdown(wait=False, cancel_futures=True)
    for fut, task in futures.items():
        if fut in pending:
            results.append(CheckResult(task.failed_id, task.target, "unknown",
                                       f"did not finish within run_timeout "
                                       f"({cfg.selfcheck.run_timeout:.0f}s)", (), {}))
            continue
        try:
            results.extend(fut.result())
        except Exception as e:  # a bug in one check: say so, keep the others
            results.append(CheckResult(task.failed_id, task.target, "unknown",
                                       f"check failed: {type(e).__name__}: {e}", (), {}))
    if sel.wants("resolver."):
        results.append(dnsbl.check_resolver(inp.resolver.nameservers, results))
    rootcause.propagate(results)
    now = inp.clock()
    if sel.wants("store."):
        results.append(storecheck.check(inp.store, now))
    act = activity.check(inp.store, now) if sel.wants_any(("activity.", "checklist.")) else None
    if act is not None:
        results.append(act)
    if sel.wants("feedback."):
        results.append(receivers.check(inp.store, now, cfg.feedback.retention))
    if sel.wants("dmarc_report."):
        results += receivers.dmarc_report_checks(inp.store, now, cfg.feedback.retention)
    if sel.wants("checklist."):
        results += checklist.answer(results, checklist.Facts(
            facts_box.get("facts"), cfg.forms.enabled, cfg.ratelimit.enabled,
            tuple(cfg.selfcheck.php_ini)))
    report = Report(generated=now, checks=[], host={
        "ips": inp.targets.ips, "domains": inp.targets.domains,
        "hostname": inp.targets.hostname, "nameservers": inp.resolver.nameservers})
    report.checks = [r for r in results if sel.wants(r.id) or rootcause.wanted(r, sel.wants)]
    if inp.store is not None and sel.wants_any(("uceprotect.", "escalation.")):
        _escalation(inp, report, now)
    rootcause.propagate(report.checks)
    report.checks += rootcause.selection_problems(report.checks, sel.only, sel.skip)
    report.duration = time.monotonic() - mono
    report.checks.sort(key=_order)
    if inp.store is not None and inp.record:
        try:
            inp.store.record_selfcheck(now, report.to_json())
        except Exception as e:
            log.error(f"selfcheck: cannot record this run in the store: {e}")
    return report


def _escalation(inp: RunInputs, report: Report, now: float) -> None:
    try:
        history = escalation.load_history(inp.store, inp.config.selfcheck.history)
    except Exception as e:
        log.error(f"selfcheck: cannot read the history from the store: {e}")
        return
    report.transitions = escalation.compare(report, history, inp.targets.ips, now)
    if inp.selection.wants("escalation."):
        forms = activity.form_messages(inp.store, now - 86400)
        v4 = [ip for ip in inp.targets.ips if ipaddress.ip_address(ip).version == 4]
        report.checks += escalation.watch(report, history, v4, forms)


_ORDER = ("selfcheck.", "milter.", "resolver.reachable", "blocklists.", "uceprotect.",
          "escalation.", "dnsbl.", "resolver.", "rdns.", "helo", "spf.",
          "dkim.", "dmarc.", "mx", "postfix.", "store.", "activity.", "checklist.", "probe.")


def _order(c: Finding) -> tuple[int, str, str]:
    for i, p in enumerate(_ORDER):
        if c.id.startswith(p):
            return (i, c.target, c.id)
    return (len(_ORDER), c.target, c.id)
