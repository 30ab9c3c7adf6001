"""Findings: what a check saw, never what to do about it.

Checks return findings; only postwarden.policy turns them into actions. Ids are
stable (they appear in logs, config and the store): `dkim.missing`, `spf.fail`,
`form.burst`, `uceprotect.l2`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """The one severity scale of both halves; ordered so that max() picks the worst.

    UNKNOWN is the self-check's "no evidence either way" (a lookup failed or timed
    out); it ranks below INFO here because it is not a problem found, and the report
    ranks it on its own (checks/report.py `worst`). The milter never emits it.
    """

    UNKNOWN = 0
    INFO = 1
    WARNING = 2
    ERROR = 3
    CRITICAL = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def of_status(cls, status: str) -> Severity | None:
        """A self-check status on this scale: ok is no finding (None), unknown is UNKNOWN."""
        return None if status == "ok" else _BY_STATUS[status]


_BY_STATUS = {"unknown": Severity.UNKNOWN, "info": Severity.INFO,
              "warning": Severity.WARNING, "critical": Severity.CRITICAL}


@dataclass(frozen=True)
class Finding:
    id: str  # registered in postwarden/ids.py
    severity: Severity
    text: str  # one line: what was seen
    data: dict[str, Any] = field(default_factory=dict)
    advice: tuple[str, ...] = ()  # what to do, first the most useful step

    @property
    def family(self) -> str:
        """`dkim` for `dkim.missing`: used for per-family log summaries."""
        return self.id.split(".", 1)[0]


def ids(findings: list[Finding]) -> str:
    """The `findings=` value of the summary line."""
    return ",".join(f.id for f in findings) if findings else "none"
