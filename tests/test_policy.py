"""The policy as a truth table: finding x mode x origin -> action, would."""

from __future__ import annotations

import pytest

from postwarden.config import PolicyConfig
from postwarden.findings import Finding, Severity
from postwarden.message import Origin
from postwarden.policy import decide, enforce_action

TABLE = {"dmarc.fail": "reject", "dkim.*": "tempfail", "ratelimit.exceeded": "hold",
         "spf.fail": "hold"}
CFG = PolicyConfig(enforce=TABLE, hold_in_monitor=["ratelimit.exceeded"])


def f(fid: str) -> Finding:
    return Finding(fid, Severity.WARNING, "text")


@pytest.mark.parametrize("fid, origin, mode, action, would", [
    # enforce: the table, but local mail is only ever held
    ("dmarc.fail", Origin.SUBMISSION, "enforce", "reject", "reject"),
    ("dmarc.fail", Origin.LOCAL, "enforce", "hold", "hold"),
    ("dkim.missing", Origin.INTERNAL, "enforce", "tempfail", "tempfail"),
    ("dkim.missing", Origin.LOCAL, "enforce", "hold", "hold"),
    ("spf.fail", Origin.SUBMISSION, "enforce", "hold", "hold"),
    ("spf.softfail", Origin.SUBMISSION, "enforce", "accept", "accept"),
    ("ratelimit.exceeded", Origin.LOCAL, "enforce", "hold", "hold"),
    # monitor: accept and say what enforce would do, except hold_in_monitor ids
    ("dmarc.fail", Origin.SUBMISSION, "monitor", "accept", "reject"),
    ("dmarc.fail", Origin.LOCAL, "monitor", "accept", "hold"),
    ("dkim.missing", Origin.SUBMISSION, "monitor", "accept", "tempfail"),
    ("ratelimit.exceeded", Origin.LOCAL, "monitor", "hold", "hold"),
    ("ratelimit.exceeded", Origin.SUBMISSION, "monitor", "hold", "hold"),
    ("spf.none", Origin.LOCAL, "monitor", "accept", "accept"),
])
def test_truth_table(fid: str, origin: Origin, mode: str, action: str, would: str) -> None:
    d = decide([f(fid)], origin, mode, CFG)
    assert (d.action, d.would) == (action, would)


def test_worst_action_wins_and_names_its_reasons() -> None:
    d = decide([f("spf.fail"), f("dmarc.fail"), f("spf.none")], Origin.SUBMISSION,
               "enforce", CFG)
    assert d.action == "reject"
    assert d.reason == "spf.fail,dmarc.fail"


def test_no_findings_accepts() -> None:
    for mode in ("monitor", "enforce"):
        d = decide([], Origin.LOCAL, mode, CFG)
        assert (d.action, d.would, d.reason) == ("accept", "accept", "")


def test_exact_id_beats_family_wildcard() -> None:
    assert enforce_action("dkim.missing", {"dkim.*": "hold", "dkim.missing": "reject"}) \
        == "reject"
    assert enforce_action("dkim.invalid", {"dkim.*": "hold"}) == "hold"
    assert enforce_action("spf.fail", {"dkim.*": "hold"}) == "accept"


def test_monitor_with_nothing_acting_in_monitor() -> None:
    cfg = PolicyConfig(enforce=TABLE, hold_in_monitor=[])
    d = decide([f("ratelimit.exceeded")], Origin.LOCAL, "monitor", cfg)
    assert (d.action, d.would) == ("accept", "hold")
