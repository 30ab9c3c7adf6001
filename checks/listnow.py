"""Check one blocklist now, because a receiver just cited it for our IP.

Lists are rebuilt hourly, so the periodic self-check polls hourly; a receiver's
"blocked using dnsbl-1.uceprotect.net" is news that cannot wait for the next run.
This runs only that list's check, publishes a UCEPROTECT answer in the daemon's
HostState (so the milter's listed-form check sees it at once), and logs the result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from postwarden import dns
from postwarden.blocklists import UCEPROTECT, lists_for
from postwarden.checks.periodic import publish
from postwarden.checks.runner import RunInputs, Selection, targets_for
from postwarden.checks.runner import run as run_checks
from postwarden.config import Config
from postwarden.findings import Finding
from postwarden.hoststate import HostState
from postwarden.log import Logger, log


def check_list_now(cfg: Config, store: Any, state: HostState | None, zone: str,
                   logger: Logger = log, clock: Callable[[], float] = time.time
                   ) -> list[Finding]:
    """Run the check of `zone` (a configured list) now; [] when it is not one of ours."""
    sc = cfg.selfcheck
    bl = next((b for b in lists_for(sc.lists_add, sc.lists_remove, sc.spamhaus_dqs_key)
               if b.zone == zone), None)
    if bl is None:
        logger.info(f"feedback: {zone} is not a configured list ([selfcheck] lists_add): "
                    "not checked")
        return []
    resolver = dns.from_config(dataclasses.replace(cfg.dns, timeout=sc.query_timeout))
    report = run_checks(RunInputs(config=cfg, resolver=resolver, store=store, clock=clock,
                                  targets=targets_for(cfg, resolver), record=False,
                                  selection=Selection(only=(bl.check_id,))))
    if state is not None and bl in UCEPROTECT:
        publish(state, report)
    results = [c for c in report.checks if c.id == bl.check_id]
    for c in results:
        level = "info" if c.status in ("ok", "info") else "warning" \
            if c.status in ("unknown", "warning") else "critical"
        logger.line(level, f"feedback: self-check of {bl.name} ({zone}) right away: "
                           f"{c.target}: {c.status}: {c.summary}")
    return results
