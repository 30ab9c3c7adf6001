"""Findings: what a check saw, never what to do about it.

One record type for both halves. The milter's checks return findings about a
message; the self-check's checks return findings about a target (an IP, a domain,
a host), including the answer "ok", which the milter never emits. Only
postwarden.policy turns findings into actions. Ids are stable (they appear in logs,
config, the JSON report and the store) and registered in postwarden/ids.py:
`dkim.missing`, `spf.fail`, `form.burst`, `uceprotect.l2`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# The self-check's word for a severity (the JSON report's `status`, Nagios' state).
Status = Literal["ok", "info", "warning", "critical", "unknown"]


class Severity(enum.IntEnum):
    """The one severity scale of both halves; ordered so that max() picks the worst.

    OK is a self-check answer that found nothing wrong. UNKNOWN is the self-check's
    "no evidence either way" (a lookup failed or timed out); it ranks below INFO here
    because it is not a problem found, and the report ranks it on its own
    (checks/report.py `worst`). The milter emits neither, so its comparisons
    (`>= WARNING`, max()) never meet them.
    """

    OK = 0
    UNKNOWN = 1
    INFO = 2
    WARNING = 3
    ERROR = 4
    CRITICAL = 5

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def of_status(cls, status: str) -> Severity:
        """A self-check status on this scale (`ok` is OK, `unknown` is UNKNOWN)."""
        return _BY_STATUS[status]

    @property
    def status(self) -> Status:
        """This severity in the self-check's words. The self-check has no `error`: a
        problem that needs action now is `critical` there (Nagios' exit 2)."""
        return _STATUS_OF[self]


_BY_STATUS: dict[str, Severity] = {
    "ok": Severity.OK, "unknown": Severity.UNKNOWN, "info": Severity.INFO,
    "warning": Severity.WARNING, "critical": Severity.CRITICAL}
_STATUS_OF: dict[Severity, Status] = {
    Severity.OK: "ok", Severity.UNKNOWN: "unknown", Severity.INFO: "info",
    Severity.WARNING: "warning", Severity.ERROR: "critical", Severity.CRITICAL: "critical"}


@dataclass(frozen=True, slots=True)
class Finding:
    id: str  # registered in postwarden/ids.py
    severity: Severity
    text: str  # one line: what was seen
    data: dict[str, Any] = field(default_factory=dict)
    advice: tuple[str, ...] = ()  # what to do, first the most useful step
    target: str = ""  # what a self-check result is about; a message's findings have none

    @property
    def family(self) -> str:
        """`dkim` for `dkim.missing`: used for per-family log summaries."""
        return self.id.split(".", 1)[0]

    # --- the self-check's names for the same fields ----------------------------------

    @classmethod
    def result(cls, id: str, target: str, status: Status, summary: str,
               advice: tuple[str, ...] = (), details: Mapping[str, Any] | None = None
               ) -> Finding:
        """A self-check result: one answered question about one target, in the
        self-check's words (status, summary, details)."""
        data = {} if details is None else details if isinstance(details, dict) \
            else dict(details)
        return cls(id, Severity.of_status(status), summary, data, tuple(advice), target)

    @property
    def status(self) -> Status:
        return self.severity.status

    @property
    def summary(self) -> str:
        return self.text

    @property
    def details(self) -> dict[str, Any]:
        return self.data

    def to_dict(self) -> dict[str, Any]:
        """One check of the self-check's JSON report (docs/selfcheck.schema.json)."""
        return {"id": self.id, "target": self.target, "status": self.status,
                "summary": self.text, "advice": list(self.advice),
                "details": dict(self.data)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """The inverse of to_dict: reads reports written by any earlier run."""
        return cls.result(str(d["id"]), str(d.get("target", "")), d["status"],
                          str(d.get("summary", "")), tuple(d.get("advice") or ()),
                          dict(d.get("details") or {}))


def ids(findings: list[Finding]) -> str:
    """The `findings=` value of the summary line."""
    return ",".join(f.id for f in findings) if findings else "none"
