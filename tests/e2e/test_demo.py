"""`make demo` works: it prints the summary line of each of its messages and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_demo_prints_summaries_and_exits_zero() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "demo" / "run_demo.py")],
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    fates = re.findall(r"^  ([0-9A-F]+)  (.+?)\s{2,}(delivered|held.*)$", r.stdout, re.M)
    assert len(fates) == 9
    for qid, _how, _fate in fates:
        assert re.search(rf"postwarden\[\d+\]: {qid}: origin=(submission|local) ", r.stdout)
    assert next(f for f in fates if f[2] == "delivered")[1].startswith("SMTP submission")
    assert any(f[2].startswith("held") for f in fates)  # the form burst
    # the self-check: the daemon logs the L3 -> L2 escalation, the report shows it
    assert re.search(r"postwarden\[\d+\]: warning: selfcheck: new UCEPROTECT L3 listing",
                     r.stdout)
    assert re.search(r"postwarden\[\d+\]: warning: selfcheck: UCEPROTECT L3 -> L2 for "
                     r"192\.0\.2\.25", r.stdout)
    assert "$ postwarden selfcheck   (exit 1)" in r.stdout
    assert re.search(r"^  WARNING  uceprotect\.l2 \[192\.0\.2\.25\]: LISTED", r.stdout, re.M)
    assert re.search(r"^  OK       milter\.reachable ", r.stdout, re.M)
    assert re.search(r"^SELFCHECK WARNING - uceprotect\.l2 192\.0\.2\.25", r.stdout, re.M)
    assert '"status": "warning"' in r.stdout
