"""Prometheus metrics of the milter daemon (prometheus_client), opt-in by [metrics].

Counted per message at end-of-message: messages by origin and action, findings
by id, holds by reason, header fixes applied (DKIM signature added, From
rewritten), DNS temperrors per check, postwarden's own errors, and the time the
inspection took; the periodic self-check's last results. Store failures are
counted where they are noticed. Exposed on a loopback HTTP endpoint
(`[metrics] listen`) and/or written as a node_exporter textfile
(`[metrics] textfile`); with neither, nothing leaves the process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest, write_to_textfile
from prometheus_client.registry import Collector

from postwarden import __version__

# Per-message latency: milliseconds are usual, seconds mean DNS trouble.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FIXES = {"dkim-signature": "dkim_sign", "from": "from_rewrite", "reply-to": "from_rewrite"}


@dataclass(frozen=True)
class SelfcheckRun:
    """What the gauges need of one self-check report; the self-check builds it
    (checks/report.py `Report.metrics_run`), so this core module knows no report type."""

    generated: float
    exit_code: int
    statuses: tuple[tuple[str, str, int], ...]  # (id, target, rank: 0 ok .. 4 critical)


class SelfcheckCollector(Collector):
    """The last periodic self-check run, as the same gauges `selfcheck --prometheus`
    writes: status per check, exit code, when it ran. Nothing before the first run."""

    def __init__(self) -> None:
        self.report: SelfcheckRun | None = None

    def collect(self) -> Iterable[Metric]:
        r = self.report
        if r is None:
            return
        status = GaugeMetricFamily("postwarden_selfcheck_status", "Status per check of the "
                                   "last periodic self-check (0 ok, 1 info, 2 unknown, "
                                   "3 warning, 4 critical)", labels=["id", "target"])
        for check_id, target, rank in r.statuses:
            status.add_metric([check_id, target], rank)
        yield status
        yield GaugeMetricFamily("postwarden_selfcheck_exit_code", "Nagios-style exit code "
                                "of the last periodic self-check", value=r.exit_code)
        yield GaugeMetricFamily("postwarden_selfcheck_last_run_timestamp_seconds",
                                "When the last periodic self-check ended", value=r.generated)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter("postwarden_messages", "Messages inspected, by origin and "
                                "the action taken", ["origin", "action"], registry=r)
        self.findings = Counter("postwarden_findings", "Findings reported, by finding id",
                                ["id"], registry=r)
        self.holds = Counter("postwarden_holds", "Messages put on the hold queue, by the "
                             "first finding that decided it", ["reason"], registry=r)
        self.fixes = Counter("postwarden_fixes", "Header fixes applied to outbound mail",
                             ["fix"], registry=r)
        self.dns_temperrors = Counter("postwarden_dns_temperrors", "Messages whose check "
                                      "ended in a DNS temperror, by check", ["check"],
                                      registry=r)
        self.store_errors = Counter("postwarden_store_errors", "Store operations that "
                                    "failed (postwarden failed open)", registry=r)
        self.internal_errors = Counter("postwarden_internal_errors", "Messages accepted "
                                       "unchecked because of an error in postwarden",
                                       registry=r)
        self.latency = Histogram("postwarden_inspect_seconds", "Time to inspect one "
                                 "message at end-of-message", buckets=BUCKETS, registry=r)
        Info("postwarden_build", "postwarden's version", registry=r).info(
            {"version": __version__})
        self.selfcheck = SelfcheckCollector()
        r.register(self.selfcheck)

    def message(self, origin: str, action: str, findings: list[str], hold_reason: str,
                changed_headers: list[str], leaving: dict[str, str], seconds: float) -> None:
        self.messages.labels(origin=origin, action=action).inc()
        for fid in findings:
            self.findings.labels(id=fid).inc()
        if action == "hold":
            self.holds.labels(reason=hold_reason.split(",")[0] or "policy").inc()
        for fix in sorted({FIXES.get(h.lower(), "") for h in changed_headers} - {""}):
            self.fixes.labels(fix=fix).inc()
        for check in ("dkim", "spf", "dmarc"):
            if leaving.get(check) == "temperror":  # unknown for the message as it leaves
                self.dns_temperrors.labels(check=check).inc()
        self.latency.observe(seconds)

    def selfcheck_done(self, report: SelfcheckRun) -> None:
        self.selfcheck.report = report

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, listen: str) -> None:
        """Start the HTTP endpoint on HOST:PORT (config validation keeps it on loopback)."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)

    def write_textfile(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(path, self.registry)

    def textfile_loop(self, path: str, interval: float, stop: threading.Event) -> None:
        """Rewrite the textfile every `interval` seconds until `stop`, and once at the end."""
        while True:
            try:
                self.write_textfile(path)
            except OSError as e:
                from postwarden.log import log

                log.limited("metrics.textfile", "warning",
                            f"cannot write metrics textfile {path}: {e}")
            if stop.wait(interval):
                try:
                    self.write_textfile(path)
                except OSError:
                    pass
                return


metrics = Metrics()
