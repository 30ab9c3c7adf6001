"""Pass/total counts of the public test suites run by `make test`.

A suite test records every case it ran (RFC 7208's YAML, the PSL vectors, dkimpy's
data, the DMARC table, the signing matrix); conftest prints one line per suite at the
end of the run, so the counts sit next to pytest's own summary in CI's output.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Tally:
    passed: int = 0
    total: int = 0
    failures: list[str] = field(default_factory=list)


_tallies: dict[str, Tally] = defaultdict(Tally)


def record(suite: str, case: str, ok: bool) -> None:
    """Count one case of `suite`; a failed case is named in the summary."""
    t = _tallies[suite]
    t.total += 1
    if ok:
        t.passed += 1
    else:
        t.failures.append(case)


def lines() -> list[str]:
    out = []
    for name in sorted(_tallies):
        t = _tallies[name]
        line = f"suite {name}: {t.passed}/{t.total} pass"
        if t.failures:
            shown = ", ".join(t.failures[:10])
            more = f" (+{len(t.failures) - 10} more)" if len(t.failures) > 10 else ""
            line += f"; failing: {shown}{more}"
        out.append(line)
    return out
