"""`postwarden status`: data from the store, text rendered from the data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from postwarden import cli, status
from postwarden.config import from_dict
from postwarden.store import HoldRecord
from postwarden.store.sqlite_store import SqliteStore


def fill(path: Path, now: float) -> None:
    s = SqliteStore(path)
    for _ in range(4):
        s.rate_take("form:php:33:contact.php", 1, 180.0, 5.0, now)
    s.rate_take("sasl:alice", 1, 18.0, 50.0, now)
    s.record_hold(HoldRecord("AAAA1", now - 10, "ratelimit.exceeded", "php:33:contact.php",
                             "www-data@example.com"))
    s.record_hold(HoldRecord("BBBB2", now - 5, "form.suspicious", "php:33:contact.php",
                             "www-data@example.com"))
    s.record_event(now - 10, "local/hold", "php:33:contact.php",
                   "form.detected,ratelimit.exceeded")
    s.record_event(now - 20, "submission/accept", "sasl:alice", "")
    s.record_event(now - 7200, "local/accept", "uid:0", "")
    s.close()


def test_collect(tmp_path: Path) -> None:
    now = time.time()
    fill(tmp_path / "s.db", now)
    cfg = from_dict({"store": {"path": str(tmp_path / "s.db")}})
    store = SqliteStore(tmp_path / "s.db")
    data = status.collect(store, cfg, now, on_hold={"BBBB2"})
    store.close()
    first = data["buckets"][0]
    assert first["key"] == "form:php:33:contact.php"
    assert (first["limit"], first["subject"], first["used"]) == ("form", "php:33:contact.php", 4)
    assert first["rate"] == 20 and first["percent"] == 80.0
    assert [h["queue_id"] for h in data["held"]] == ["BBBB2", "AAAA1"]
    assert [h["on_hold"] for h in data["held"]] == [True, False]
    assert data["held"][0]["release"] == "postsuper -H BBBB2"
    assert data["held"][0]["delete"] == "postsuper -d BBBB2"
    assert data["last_hour"]["messages"] == 2
    assert data["last_hour"]["findings"] == {"form.detected": 1, "ratelimit.exceeded": 1}
    srcs = {s["source"]: s for s in data["sources_24h"]}
    assert srcs["php:33:contact.php"]["holds"] == 1 and srcs["uid:0"]["messages"] == 1
    text = status.render(data)
    assert "postsuper -H BBBB2" in text and "reason=form.suspicious" in text
    assert "form:php:33:contact.php" in text


def test_cli_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    fill(tmp_path / "s.db", now)
    conf = tmp_path / "postwarden.toml"
    conf.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n')
    monkeypatch.setattr(status, "hold_queue", lambda: None)
    assert cli.main(["--config", str(conf), "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hold_queue_known"] is False
    assert {h["queue_id"] for h in data["held"]} == {"AAAA1", "BBBB2"}
    assert cli.main(["--config", str(conf), "status"]) == 0
    assert "hold queue unknown" in capsys.readouterr().out


def test_cli_store_unavailable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "postwarden.toml"
    conf.write_text('[store]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:1/0"\n'
                    'redis_timeout = 0.2\n')
    assert cli.main(["--config", str(conf), "status"]) == 1
    assert "cannot read the store" in capsys.readouterr().err
