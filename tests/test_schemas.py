"""docs/selfcheck.schema.json and docs/status.schema.json against real output."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemas
from test_selfcheck_runner import _cfg, _clean_world, _inputs

from postwarden import status
from postwarden.checks.runner import run
from postwarden.config import from_dict
from postwarden.store import HoldRecord
from postwarden.store.sqlite_store import SqliteStore


def _real_report(tmp_path: Path, down: bool = False) -> dict[str, Any]:
    cfg = _cfg(tmp_path, lists_add=[])
    (tmp_path / "php.ini").write_text("mail.add_x_header = On\n")
    res = _clean_world(cfg)
    res.down = down
    store = SqliteStore(tmp_path / "state.db")
    try:
        report = run(_inputs(cfg, res, store))
    finally:
        store.close()
    data: dict[str, Any] = json.loads(report.to_json())
    return data


def test_a_real_report_fits_the_schema(tmp_path: Path) -> None:
    data = _real_report(tmp_path)
    schemas.selfcheck_report(data)
    assert {c["id"] for c in data["checks"]} >= {"milter.reachable", "resolver.reachable",
                                                  "uceprotect.l1", "checklist.verdict"}


def test_a_report_with_the_resolver_down_fits_and_keeps_every_unknown(tmp_path: Path) -> None:
    data = _real_report(tmp_path, down=True)
    schemas.selfcheck_report(data)
    caused = [c for c in data["checks"] if c["details"].get("cause") == "resolver.reachable"]
    assert len(caused) > 20 and {c["status"] for c in caused} == {"unknown"}


@pytest.mark.parametrize("break_it", [
    lambda d: d["checks"][0].pop("summary"),
    lambda d: d.update(status="fine"),
    lambda d: d["checks"].append({**d["checks"][0], "id": "uceprotect.l1", "status": "ok",
                                  "details": {"listed": None}}),
    lambda d: d["checks"].append({**d["checks"][0], "id": "milter.reachable", "status": "ok",
                                  "details": {"up": False}}),
    lambda d: d["checks"].append({**d["checks"][0], "status": "ok",
                                  "details": {"cause": "resolver.reachable"}}),
])
def test_the_schema_rejects_reports_that_say_ok_while_blind(tmp_path: Path,
                                                            break_it: Any) -> None:
    data = _real_report(tmp_path)
    bad = copy.deepcopy(data)
    break_it(bad)
    with pytest.raises(jsonschema.ValidationError):
        schemas.selfcheck_report(bad)


def test_status_json_fits_the_schema(tmp_path: Path) -> None:
    now = time.time()
    s = SqliteStore(tmp_path / "s.db")
    s.rate_take("form:php:33:contact.php", 1, 180.0, 5.0, now)
    s.record_hold(HoldRecord("AAAA1", now - 10, "ratelimit.exceeded", "php:33:contact.php",
                             "www-data@example.com"))
    s.record_event(now - 10, "local/hold", "php:33:contact.php", "form.detected")
    cfg = from_dict({"store": {"path": str(tmp_path / "s.db")},
                     "socket": f"unix:{tmp_path}/nothing.sock"})
    data = status.collect(s, cfg, now, on_hold=None)
    data["daemon"] = status.daemon_info(s, cfg, now)
    s.close()
    data = json.loads(json.dumps(data))
    schemas.status(data)
    assert data["daemon"]["running"] is False
    bad = copy.deepcopy(data)
    bad["daemon"]["running"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        schemas.status(bad)

