"""`postwarden selfcheck`: run, record, print (text, JSON, Nagios), write Prometheus.

Exit codes follow the Nagios plugin convention: 0 ok/info, 1 warning,
2 critical, 3 unknown.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from postwarden import config as configmod
from postwarden import dns
from postwarden.checks.report import (
    EXIT_CODES,
    render_nagios,
    render_prometheus,
    render_text,
    write_atomic,
)
from postwarden.checks.runner import RunInputs, Selection, targets_for
from postwarden.checks.runner import run as run_checks
from postwarden.cli import write_stdout
from postwarden.log import log


def _open_store(cfg: configmod.Config) -> Any:
    from postwarden.store import StoreError, open_store

    try:
        return open_store(cfg.store)
    except (StoreError, OSError, ImportError) as e:
        print(f"postwarden: warning: store unavailable ({e}); no history, no activity",
              file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    log.setup("stderr", cfg.log.facility, cfg.log.repeat_interval)
    resolver = dns.from_config(dataclasses.replace(cfg.dns, timeout=cfg.selfcheck.query_timeout))
    targets = targets_for(cfg, resolver, args.ip, args.domain)
    store = _open_store(cfg)
    try:
        report = run_checks(RunInputs(
            config=cfg, resolver=resolver, targets=targets, store=store,
            selection=Selection(tuple(args.only), tuple(args.skip)),
            record=not args.no_record))
    finally:
        if store is not None:
            store.close()
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
