"""The self-check report: data first, then pure renderers (text, Nagios, Prometheus).

A run produces a `Report` (the JSON documented in docs/selfcheck-schema.md). Every
output is a pure function of that data; "what changed since the last run" compares
reports, never printed text.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postwarden.findings import Finding
from postwarden.findings import Status as Status  # re-exported: the checks import it from here
from postwarden.logsafe import escape, line_safe
from postwarden.metrics import SelfcheckRun

STATUSES: tuple[Status, ...] = ("ok", "info", "warning", "critical", "unknown")
# Worst first wins the top-level status: critical > warning > unknown > info > ok.
_RANK: dict[str, int] = {"ok": 0, "info": 1, "unknown": 2, "warning": 3, "critical": 4}
EXIT_CODES: dict[str, int] = {"ok": 0, "info": 0, "warning": 1, "critical": 2, "unknown": 3}
SCHEMA_VERSION = 1

SECTIONS: tuple[tuple[str, str], ...] = (
    ("selfcheck.", "Self-check"),
    ("milter.", "Daemon"),
    ("resolver.reachable", "DNS resolver"),
    ("blocklists.", "UCEPROTECT"),
    ("uceprotect.", "UCEPROTECT"),
    ("dnsbl.", "Other blocklists"),
    ("resolver.", "Other blocklists"),
    ("escalation.", "UCEPROTECT"),
    ("rdns.", "Identity"),
    ("helo", "Identity"),
    ("spf.", "DNS records"),
    ("dkim.", "DNS records"),
    ("dmarc.", "DNS records"),
    ("mx", "DNS records"),
    ("postfix.", "Postfix"),
    ("checklist.", "Checklist"),
    ("activity.", "Activity"),
    ("feedback.", "Receivers said"),
    ("dmarc_report.", "Receivers said"),
    ("reaction.", "Activity"),
    ("probe.", "Probe"),
)
_SECTION_ORDER = list(dict.fromkeys(name for _, name in SECTIONS))


def section_of(check_id: str) -> str:
    for prefix, name in SECTIONS:
        if check_id.startswith(prefix):
            return name
    return "Self-check"


def worst(statuses: list[str] | tuple[str, ...]) -> Status:
    best: Status = "ok"
    for s in statuses:
        if _RANK[s] > _RANK[best]:
            best = s  # type: ignore[assignment]
    return best


# A self-check result is a Finding with a target, made from the self-check's words:
# CheckResult(id, target, status, summary, advice=(), details={}).
CheckResult = Finding.result


@dataclass
class Report:
    generated: float
    checks: list[Finding]
    transitions: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0
    host: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return worst([c.status for c in self.checks])

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def metrics_run(self) -> SelfcheckRun:
        """The daemon's gauges of this run (postwarden.metrics)."""
        return SelfcheckRun(self.generated, self.exit_code,
                            tuple((c.id, c.target, _RANK[c.status]) for c in self.checks))

    def find(self, check_id: str, target: str | None = None) -> list[Finding]:
        return [c for c in self.checks
                if c.id == check_id and (target is None or c.target == target)]

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}
        return {
            "version": SCHEMA_VERSION,
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.generated)),
            "generated_epoch": self.generated,
            "duration": round(self.duration, 3),
            "status": self.status,
            "exit_code": self.exit_code,
            "counts": counts,
            "host": self.host,
            "checks": [c.to_dict() for c in self.checks],
            "transitions": self.transitions,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        return cls(generated=float(d.get("generated_epoch", 0.0)),
                   checks=[Finding.from_dict(c) for c in d.get("checks", [])],
                   transitions=list(d.get("transitions", [])),
                   duration=float(d.get("duration", 0.0)), host=dict(d.get("host", {})))

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))


# --- renderers (pure) -------------------------------------------------------

_COLOURS = {"ok": "32", "info": "36", "warning": "33", "critical": "1;31", "unknown": "35"}


def render_text(report: Report, colour: bool = False) -> str:
    """Sections, one line per check, the fix under every problem."""

    def tag(status: str) -> str:
        word = f"{status.upper():<8}"
        return f"\033[{_COLOURS[status]}m{word}\033[0m" if colour else word

    lines = [f"postwarden selfcheck: {report.status.upper()} "
             f"({_counts_line(report)}) in {report.duration:.1f}s"]
    by_section: dict[str, list[Finding]] = {}
    # Results explained by a root cause shown in this report are listed under it,
    # in one line, instead of each repeating the same advice.
    roots = {c.id for c in report.checks if c.status != "ok"}
    grouped: dict[str, list[Finding]] = {}
    for c in report.checks:
        cause = str(c.details.get("cause", ""))
        if cause in roots and cause != c.id:
            grouped.setdefault(cause, []).append(c)
    hidden = {id(c) for cs in grouped.values() for c in cs}
    for c in report.checks:
        if id(c) not in hidden:
            by_section.setdefault(section_of(c.id), []).append(c)
    for name in _SECTION_ORDER:
        items = by_section.get(name)
        if not items:
            continue
        lines.append("")
        lines.append(f"== {name} ==")
        for c in items:
            # Targets, summaries and advice quote DNS answers and header values.
            target = f" [{escape(c.target)}]" if c.target else ""
            lines.append(f"  {tag(c.status)} {escape(c.id)}{target}: {line_safe(c.summary)}")
            if c.status != "ok":
                lines.extend(f"             -> {line_safe(a)}" for a in c.advice)
            under = grouped.pop(c.id, [])
            if under:
                names = ", ".join(f"{escape(u.id)}{' ' + escape(u.target) if u.target else ''}"
                                  for u in under)
                lines.append(f"             {len(under)} result(s) unknown because of this: "
                             f"{names}")
    if report.transitions:
        lines.append("")
        lines.append("== Changes since the last run ==")
        lines.extend(f"  {line_safe(str(t.get('text', '')))}" for t in report.transitions)
    return "\n".join(lines) + "\n"


def _counts_line(report: Report) -> str:
    d = report.to_dict()["counts"]
    return ", ".join(f"{d[s]} {s}" for s in ("critical", "warning", "unknown", "info", "ok")
                     if d[s])


def render_nagios(report: Report) -> str:
    """`SELFCHECK CRITICAL - summary | perfdata` (Nagios plugin guidelines)."""
    problems = [c for c in report.checks if c.status in ("critical", "warning", "unknown")]
    problems.sort(key=lambda c: -_RANK[c.status])
    # One line whatever the DNS said: a newline would end the plugin output, a `|`
    # would start the perfdata.
    text = "; ".join(line_safe(f"{escape(c.id)} {escape(c.target)}: {c.summary}")
                     .replace("|", "/") for c in problems[:5]) or "all checks ok"
    if len(problems) > 5:
        text += f"; and {len(problems) - 5} more"
    counts = report.to_dict()["counts"]
    perf = " ".join(f"{s}={counts[s]};;;0" for s in STATUSES)
    perf += f" duration={report.duration:.3f}s;;;0"
    listed = sum(1 for c in report.checks if c.details.get("listed") is True)
    perf += f" listed={listed};;;0"
    for c in report.checks:  # receivers said: rejections by class over the window
        if c.id == "feedback.receivers":
            for k, n in sorted(c.details.get("by_class", {}).items()):
                perf += f" {k.replace(':', '_')}={int(n)};;;0"
    return f"SELFCHECK {report.status.upper()} - {text} | {perf}\n"


def _label(value: str) -> str:
    """Prometheus label values: logsafe's rule first (no control character, no line
    separator survives), then the format's own escapes for backslash and quote."""
    return line_safe(value).replace("\\", "\\\\").replace('"', '\\"')


def render_prometheus(report: Report) -> str:
    """node_exporter textfile metrics: one gauge per check, plus run totals."""
    out = [
        "# HELP postwarden_selfcheck_status Status per check "
        "(0 ok, 1 info, 2 unknown, 3 warning, 4 critical).",
        "# TYPE postwarden_selfcheck_status gauge",
    ]
    for c in report.checks:
        out.append(f'postwarden_selfcheck_status{{id="{_label(c.id)}",'
                   f'target="{_label(c.target)}"}} {_RANK[c.status]}')
    out += [
        "# HELP postwarden_selfcheck_listed 1 if the target is listed on this blocklist.",
        "# TYPE postwarden_selfcheck_listed gauge",
    ]
    for c in report.checks:
        if "listed" in c.details and c.details["listed"] is not None:
            out.append(f'postwarden_selfcheck_listed{{id="{_label(c.id)}",'
                       f'target="{_label(c.target)}"}} {int(bool(c.details["listed"]))}')
    out += _daemon_metrics(report)
    out += _prometheus_feedback(report)
    out += [
        "# HELP postwarden_selfcheck_unknown Checks that could not answer in the last run.",
        "# TYPE postwarden_selfcheck_unknown gauge",
        f"postwarden_selfcheck_unknown {sum(1 for c in report.checks if c.status == 'unknown')}",
        "# HELP postwarden_selfcheck_exit_code Nagios-style exit code of the last run.",
        "# TYPE postwarden_selfcheck_exit_code gauge",
        f"postwarden_selfcheck_exit_code {report.exit_code}",
        "# HELP postwarden_selfcheck_duration_seconds Wall time of the last run.",
        "# TYPE postwarden_selfcheck_duration_seconds gauge",
        f"postwarden_selfcheck_duration_seconds {report.duration:.3f}",
        "# HELP postwarden_selfcheck_last_run_timestamp_seconds When the last run ended.",
        "# TYPE postwarden_selfcheck_last_run_timestamp_seconds gauge",
        f"postwarden_selfcheck_last_run_timestamp_seconds {report.generated:.0f}",
    ]
    return "\n".join(out) + "\n"


def _prometheus_feedback(report: Report) -> list[str]:
    """Receivers' replies over the window by status, class and receiver domain."""
    rows = [c for c in report.checks if c.id == "feedback.receivers"]
    if not rows:
        return []
    out = ["# HELP postwarden_feedback_replies Delivery results over the feedback window "
           "by status, reply class and receiver domain.",
           "# TYPE postwarden_feedback_replies gauge"]
    for receiver, counts in sorted(rows[0].details.get("by_receiver", {}).items()):
        r = _label(str(receiver))
        out.append(f'postwarden_feedback_replies{{status="sent",class="",receiver="{r}"}} '
                   f'{int(counts.get("delivered", 0))}')
        for k, n in sorted(counts.get("by_class", {}).items()):
            status, _, cls = str(k).partition(":")
            out.append(f'postwarden_feedback_replies{{status="{_label(status)}",'
                       f'class="{_label(cls)}",receiver="{r}"}} {int(n)}')
    out += ["# HELP postwarden_feedback_mismatches Authentication rejections of mail "
            "predicted to pass DMARC, over the feedback window.",
            "# TYPE postwarden_feedback_mismatches gauge",
            f"postwarden_feedback_mismatches {len(rows[0].details.get('mismatches', []))}"]
    return out


def _daemon_metrics(report: Report) -> list[str]:
    """Milter up, heartbeat age, probe per path: only for what this run checked."""
    out: list[str] = []
    reach = [c for c in report.checks if c.id == "milter.reachable"
             and c.details.get("up") is not None]
    if reach:
        out += ["# HELP postwarden_milter_up 1 if every milter socket Postfix names answers "
                "the milter negotiation, 0 if one does not.",
                "# TYPE postwarden_milter_up gauge",
                f"postwarden_milter_up {int(all(c.details.get('up') for c in reach))}",
                "# HELP postwarden_milter_endpoint_up 1 if this milter socket answers.",
                "# TYPE postwarden_milter_endpoint_up gauge"]
        out += [f'postwarden_milter_endpoint_up{{address="{_label(c.target)}"}} '
                f"{int(bool(c.details.get('up')))}" for c in reach]
    for c in report.checks:
        hb = c.details.get("heartbeat") if c.id == "milter.heartbeat" else None
        if isinstance(hb, dict) and "age" in hb:
            out += ["# HELP postwarden_heartbeat_age_seconds Age of the daemon's heartbeat.",
                    "# TYPE postwarden_heartbeat_age_seconds gauge",
                    f"postwarden_heartbeat_age_seconds {float(hb['age']):.1f}"]
    probes = [c for c in report.checks if c.id.startswith("probe.")
              and c.details.get("inspected") is not None]
    if probes:
        out += ["# HELP postwarden_probe_inspected 1 if the milter saw the probe sent on "
                "this path.", "# TYPE postwarden_probe_inspected gauge"]
        out += [f'postwarden_probe_inspected{{path="{_label(c.target)}"}} '
                f"{int(bool(c.details.get('inspected')))}" for c in probes]
    return out


def write_atomic(path: str | Path, text: str) -> None:
    """Write to a temp file in the same directory, then rename over the target."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
