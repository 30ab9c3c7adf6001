"""The policy as a truth table: finding x mode x origin -> action, would."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwarden import config as configmod
from postwarden import ids
from postwarden.config import PolicyConfig
from postwarden.findings import Finding, Severity
from postwarden.message import Origin
from postwarden.policy import decide, effective, enforce_action

ROOT = Path(__file__).resolve().parent.parent

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


# --- every registered id x mode x origin, against an expectation built another way ---
#
# The expectation expands each config table over the registry first (a `family.*`
# entry gives every id of that family its action, then exact entries overwrite),
# and only then looks ids up; the policy looks an id up and falls back to its
# family. The rules written out: local mail is only ever held; monitor mode
# accepts, except that an id in hold_in_monitor that enforce mode would act on is
# held; `would` is always the enforce-mode action.

SHIPPED = configmod.load(ROOT / "packaging" / "postwarden.toml")
LISTED = configmod.from_dict({"selfcheck": {"hold_forms_when_listed": True}})
CONFIGS = {
    "sample": (TABLE, ["ratelimit.exceeded"], CFG),
    "shipped": (SHIPPED.policy.enforce, SHIPPED.policy.hold_in_monitor, effective(SHIPPED)),
    "hold_forms_when_listed": (
        {**LISTED.policy.enforce, "uceprotect.listed_form": "hold"},
        [*LISTED.policy.hold_in_monitor, "uceprotect.listed_form"], effective(LISTED)),
    "wildcards": ({"form.*": "hold", "spf.*": "reject", "spf.none": "accept",
                   "internal.*": "tempfail", "dmarc.*": "reject"},
                  ["form.suspicious", "spf.fail", "dmarc.none"], None),
}


def _expanded(table: dict[str, str]) -> dict[str, str]:
    out = {fid: "accept" for fid in ids.REGISTRY}
    for key, action in table.items():
        if key.endswith(".*"):
            for fid, meta in ids.REGISTRY.items():
                if meta.family == key[:-2]:
                    out[fid] = action
    for key, action in table.items():
        if not key.endswith(".*"):
            out[key] = action
    return out


def _expected(table: dict[str, str], hold: list[str], fid: str, origin: Origin,
              mode: str) -> tuple[str, str]:
    would = _expanded(table)[fid]
    if origin is Origin.LOCAL and would in ("reject", "tempfail"):
        would = "hold"
    if mode == "enforce":
        return would, would
    return ("hold" if fid in hold and would != "accept" else "accept"), would


CASES = [(name, fid, origin, mode) for name in CONFIGS for fid in ids.REGISTRY
         for origin in Origin for mode in ("monitor", "enforce")]


@pytest.mark.parametrize("name, fid, origin, mode", CASES)
def test_every_registered_id(name: str, fid: str, origin: Origin, mode: str) -> None:
    table, hold, cfg = CONFIGS[name]
    if cfg is None:
        cfg = PolicyConfig(enforce=table, hold_in_monitor=hold)
    d = decide([f(fid)], origin, mode, cfg)
    assert (d.action, d.would) == _expected(table, hold, fid, origin, mode)
    assert d.reason == (fid if d.would != "accept" else "")


def test_the_table_covers_every_registered_id_and_origin() -> None:
    assert len(CASES) == len(CONFIGS) * len(ids.REGISTRY) * len(Origin) * 2
    assert {o.value for o in Origin} == {"local", "submission", "internal", "inbound"}


def test_listed_form_is_accepted_unless_hold_forms_when_listed() -> None:
    """With the switch off the finding is still reported, and accepted; with it on
    it is held in both modes; an explicit [policy] entry wins over the switch."""
    fid = "uceprotect.listed_form"
    off = effective(configmod.from_dict({}))
    for mode in ("monitor", "enforce"):
        d = decide([f(fid)], Origin.LOCAL, mode, off)
        assert (d.action, d.would) == ("accept", "accept")
        d = decide([f(fid)], Origin.LOCAL, mode, effective(LISTED))
        assert (d.action, d.would) == ("hold", "hold")
    mine = configmod.from_dict({"selfcheck": {"hold_forms_when_listed": True},
                                "policy": {"enforce": {fid: "accept"}}})
    d = decide([f(fid)], Origin.LOCAL, "enforce", effective(mine))
    assert (d.action, d.would) == ("accept", "accept")
