"""`postwarden selfcheck`: run, record, print (text, JSON, Nagios), write Prometheus.

Exit codes follow the Nagios plugin convention: 0 ok/info, 1 warning,
2 critical, 3 unknown.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from postwarden import config as configmod
from postwarden import dns
from postwarden.checks.report import render_nagios, render_prometheus, render_text, write_atomic
from postwarden.checks.runner import RunInputs, Selection, targets_for
from postwarden.checks.runner import run as run_checks
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
    written = True
    if args.prometheus:
        try:
            Path(args.prometheus).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(args.prometheus, render_prometheus(report))
        except OSError as e:
            print(f"postwarden: error: cannot write {args.prometheus}: {e}; the metrics "
                  "there are stale", file=sys.stderr)
            written = False
    if args.json:
        sys.stdout.write(report.to_json() + "\n")
    elif args.nagios:
        sys.stdout.write(render_nagios(report))
    else:
        sys.stdout.write(render_text(report, colour=sys.stdout.isatty()))
    # Critical stays critical; otherwise the stale textfile makes the result unknown.
    return report.exit_code if written or report.exit_code == 2 else 3
