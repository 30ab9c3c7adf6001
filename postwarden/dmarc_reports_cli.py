"""`postwarden dmarc-reports PATH... [--json]`: import DMARC aggregate reports.

Files (XML, .gz, .zip, a mail carrying one) or directories and Maildirs (cur/ and
new/). Each report is imported once by its (organisation, report id): a duplicate
is counted and skipped. Rows about this host (its IPs, its domains) are compared
with the milter's stored predictions for the report's period; the findings are
printed and kept with the report for the self-check ("receivers said").
Exit 0: all imported, no findings of warning or worse; 1: a rejected input or such a
finding; 2: a config error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from postwarden import config as configmod
from postwarden import dmarc_reports as dr
from postwarden.feedback.logline import printable
from postwarden.findings import Severity
from postwarden.store import Store
from postwarden.store_cli import with_store


def _host(cfg: configmod.Config) -> tuple[list[str], list[str]]:
    if cfg.host.ips and cfg.host.domains:
        return list(cfg.host.ips), list(cfg.host.domains)
    from postwarden import dns, hostinfo

    hostinfo.fill(cfg.host, dns.from_config(cfg.dns), cfg.selfcheck.postfix_config_dir)
    return list(cfg.host.ips), list(cfg.host.domains)


def import_inputs(store: Store, paths: list[str], ips: list[str], domains: list[str],
                  now: float) -> tuple[dict[str, Any], bool]:
    """Import every report under `paths`: (the result, whether something needs a look:
    a rejected input or a finding of warning or worse). StoreError escapes."""
    out: dict[str, Any] = {"imported": [], "duplicates": [], "rejected": [], "findings": []}
    bad = False
    for name, data in dr.inputs(paths):
        try:
            if isinstance(data, dr.ReportError):
                raise data
            found = dr.reports(name, data)
        except dr.ReportError as e:
            out["rejected"].append({"input": printable(name, 300),
                                    "reason": printable(str(e), 300)})
            bad = True
            continue
        for rep in found:
            preds = store.outbound_since(rep.begin - 1)
            rows, findings = dr.compare(rep, ips, domains, preds)
            digest = {"org": rep.org, "report_id": rep.report_id, "begin": rep.begin,
                      "end": rep.end, "domain": rep.domain, "rows": len(rep.rows),
                      "ours": len(rows), "messages": sum(r.count for r in rows),
                      "findings": [{"id": f.id, "severity": str(f.severity),
                                    "text": f.text, "data": f.data} for f in findings]}
            if not store.claim_report(rep.key, now, json.dumps(digest)):
                out["duplicates"].append({"input": printable(name, 300),
                                          "org": printable(rep.org, 200),
                                          "report_id": printable(rep.report_id, 200)})
                continue
            out["imported"].append({"input": printable(name, 300), **digest})
            out["findings"] += digest["findings"]
            bad = bad or any(f.severity >= Severity.WARNING for f in findings)
    return out, bad


def run(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    ips, domains = _host(cfg)
    done = with_store(cfg.store, lambda store: import_inputs(
        store, list(args.paths), ips, domains, time.time()), "store failed")
    if done is None:
        return 1
    out, bad = done
    if getattr(args, "json", False):
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render(out))
    return 1 if bad else 0


def render(out: dict[str, Any]) -> str:
    lines = []
    for r in out["imported"]:
        lines.append(f"imported: {printable(r['org'], 80)} report {printable(r['report_id'], 80)} "
                     f"for {r['domain'] or '?'}: {r['rows']} rows, {r['ours']} about this host "
                     f"({r['messages']} messages), {len(r['findings'])} finding(s)")
    for d in out["duplicates"]:
        lines.append(f"duplicate: {d['org']} report {d['report_id']} ({d['input']}) was "
                     "already imported: skipped")
    for r in out["rejected"]:
        lines.append(f"rejected: {r['reason']}")
    for f in out["findings"]:
        lines.append(f"{f['severity']}: {f['id']}: {printable(f['text'], 400)}")
    lines.append(f"{len(out['imported'])} imported, {len(out['duplicates'])} duplicate(s), "
                 f"{len(out['rejected'])} rejected, {len(out['findings'])} finding(s)")
    return "\n".join(lines) + "\n"
