"""`postwarden selfcheck`: run, record, print (text, JSON, Nagios), write Prometheus.

Exit codes follow the Nagios plugin convention: 0 ok/info, 1 warning,
2 critical, 3 unknown. Every way the run itself can fail (unreadable config,
store, a bug, the --timeout) is one status line and exit 3 in Nagios mode, and
an unknown result otherwise: a monitoring plugin that prints nothing is read as
broken, and one that says OK while blind is worse.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import threading
import time
from typing import Any

from postwarden import config as configmod
from postwarden import dns, heartbeat
from postwarden.checks.report import (
    EXIT_CODES,
    CheckResult,
    Report,
    render_nagios,
    render_prometheus,
    render_text,
    write_atomic,
)
from postwarden.checks.runner import RunInputs, Selection, targets_for
from postwarden.checks.runner import run as run_checks
from postwarden.cli import write_stdout
from postwarden.findings import Finding
from postwarden.log import log

DEFAULT_TIMEOUT = 8.0
PROBE_TIMEOUT = 40.0  # --probe without --timeout: sending and waiting take longer
EXIT_UNKNOWN = 3


def _open_store(cfg: configmod.Config, readonly: bool) -> Any:
    from postwarden.store import StoreError, open_store

    try:
        return open_store(cfg.store, readonly=readonly)
    except (StoreError, OSError, ImportError) as e:
        print(f"postwarden: warning: store unavailable ({e}); no history, no activity",
              file=sys.stderr)
        return None


def _failed(what: str) -> Report:
    """A report of one unknown result: the run itself could not be done."""
    return Report(generated=time.time(), checks=[CheckResult(
        "selfcheck.run", "", "unknown", what.replace("\n", " "),
        ("Run `postwarden selfcheck` by hand as this user to see the whole error",), {})])


def cached(cfg: configmod.Config, max_age: float, now: float) -> Report:
    """The daemon's last stored report, no DNS at all; unknown if older than max_age."""
    store = _open_store(cfg, readonly=True)
    if store is None:
        return _failed("--cached: the store cannot be opened (see stderr)")
    try:
        runs = store.selfcheck_history(1)
        beat = heartbeat.read(store)
    finally:
        with contextlib.suppress(Exception):  # closing a read-only handle loses nothing
            store.close()
    if not runs:
        return _failed("--cached: no stored self-check report yet (the daemon's periodic "
                       "run records one every [selfcheck] interval)")
    report = Report.from_json(runs[0].report_json)
    report.generated = report.generated or runs[0].when
    # The stored report may predate the daemon's death: judge its heartbeat now.
    report.checks = [c for c in report.checks if c.id != "milter.heartbeat"]
    report.checks.insert(0, _live_heartbeat(beat, now))
    age = now - report.generated
    if age > max_age:
        report.checks.append(CheckResult(
            "selfcheck.cached", "", "unknown",
            f"the stored report is {age:.0f}s old, older than --cached {max_age:.0f}: is the "
            "daemon's periodic self-check running?",
            ("Check `postwarden status`; the daemon records a report every "
             "[selfcheck] interval",), {"age": round(age, 1), "max_age": max_age}))
    return report


def _live_heartbeat(beat: heartbeat.Heartbeat | None, now: float) -> Finding:
    if beat is None:
        return CheckResult("milter.heartbeat", "", "unknown",
                           "no heartbeat in the store: is the daemon running with this "
                           "[store]?", (), {"heartbeat": None})
    d = {"heartbeat": beat.to_dict(now)}
    if beat.stale(now):
        return CheckResult("milter.heartbeat", str(beat.pid), "critical",
                           "the daemon is not running (" + heartbeat.describe(beat, now)
                           + "): this cached report is from before it stopped, and "
                           "Postfix passes mail unchecked",
                           ("systemctl start postwarden; journalctl -u postwarden says why "
                            "it stopped",), d)
    return CheckResult("milter.heartbeat", str(beat.pid), "ok",
                       "daemon running: " + heartbeat.describe(beat, now), (), d)


def _run(args: argparse.Namespace, cfg: configmod.Config, timeout: float) -> Report:
    if args.cached is not None:
        return cached(cfg, float(args.cached), time.time())
    # the per-check deadline stays inside the whole run's --timeout (a probe waits
    # up to probe_wait for the milter's record)
    run_timeout = cfg.selfcheck.run_timeout
    if args.probe:
        run_timeout = max(run_timeout, cfg.selfcheck.probe_wait + 5.0)
    sc = dataclasses.replace(cfg.selfcheck,
                             run_timeout=max(0.5, min(run_timeout, timeout - 1.0)),
                             query_timeout=min(cfg.selfcheck.query_timeout,
                                               max(0.5, timeout / 3)))
    cfg = dataclasses.replace(cfg, selfcheck=sc)
    resolver = dns.from_config(dataclasses.replace(cfg.dns, timeout=sc.query_timeout))
    targets = targets_for(cfg, resolver, args.ip, args.domain)
    store = _open_store(cfg, readonly=args.no_record)
    try:
        return run_checks(RunInputs(
            config=cfg, resolver=resolver, targets=targets, store=store,
            selection=Selection(tuple(args.only), tuple(args.skip)),
            record=not args.no_record, probe=args.probe))
    finally:
        if store is not None:
            try:
                store.close()
            except Exception as e:  # the report is made; say why history may be short
                print(f"postwarden: warning: closing the store: {e}", file=sys.stderr)


def _bounded(args: argparse.Namespace, cfg: configmod.Config, timeout: float) -> Report:
    """The whole run within `timeout` seconds, every error a report."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["report"] = _run(args, cfg, timeout)
        except Exception as e:
            box["report"] = _failed(f"internal error: {type(e).__name__}: {e}")

    t = threading.Thread(target=work, name="selfcheck-run", daemon=True)
    t.start()
    t.join(timeout)
    if "report" not in box:
        return _failed(f"the self-check did not finish within --timeout {timeout:g}s")
    report: Report = box["report"]
    return report


def _emit(args: argparse.Namespace, report: Report) -> int:
    """Write the report; the exit code (a Prometheus file that cannot be written makes
    an otherwise non-critical result unknown)."""
    code = report.exit_code
    if args.prometheus:
        # Written to a temp file in the target directory and renamed, so node_exporter
        # never reads half a file. A missing directory is not created: it means a wrong
        # path or a textfile collector that is not set up, and metrics written where
        # nothing reads them would look like monitoring.
        try:
            write_atomic(args.prometheus, render_prometheus(report))
        except OSError as e:
            print(f"postwarden: error: cannot write --prometheus {args.prometheus}: "
                  f"{e.strerror or e}; create the directory (node_exporter "
                  "--collector.textfile.directory) or fix the path. The report follows "
                  "on stdout as usual", file=sys.stderr)
            code = code if code == EXIT_CODES["critical"] else EXIT_CODES["unknown"]
    if args.json:
        write_stdout(report.to_json() + "\n")
    elif args.nagios:
        write_stdout(render_nagios(report))
    else:
        write_stdout(render_text(report, colour=sys.stdout.isatty()))
    return code


def run(args: argparse.Namespace) -> int:
    timeout = float(args.timeout) if args.timeout else DEFAULT_TIMEOUT
    if args.probe and not args.timeout:
        timeout = PROBE_TIMEOUT
    try:
        cfg = configmod.load(args.config, reader=args.no_record or args.cached is not None)
    except configmod.ConfigError as e:
        if not (args.nagios or args.json):
            raise
        report = _failed(f"config: {e}")
    else:
        # this run's own stderr (a caller may have swapped it since the last run)
        log.setup("stderr", cfg.log.facility, cfg.log.repeat_interval, stream=sys.stderr)
        report = _bounded(args, cfg, timeout)
    try:
        return _emit(args, report)
    except OSError as e:  # the Prometheus file cannot be written: still one line
        report = _failed(f"cannot write output: {e}")
        if args.nagios:
            sys.stdout.write(render_nagios(report))
        else:
            print(f"postwarden: error: {e}", file=sys.stderr)
        return EXIT_UNKNOWN
