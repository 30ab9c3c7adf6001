"""The SQLite file deleted or replaced under a running milter: the store notices (inode
check), says so, reopens the path and leaves a notice that `status` shows; `status`
itself never creates an empty store where the milter's was."""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
from pathlib import Path

import pytest

from harness.milterproc import toml_dumps
from postwarden import status
from postwarden.config import from_dict
from postwarden.store import HoldRecord
from postwarden.store import sqlite_store as sq

NOW = 1_700_000_000.0


@pytest.fixture
def logbuf(logbuf: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """conftest's log buffer, with the store checking its file on every call."""
    monkeypatch.setattr(sq, "CHECK_FILE_EVERY", 0.0)
    return logbuf


def hold(store: sq.SqliteStore, n: int) -> None:
    store.record_hold(HoldRecord(f"Q{n}", NOW + n, "ratelimit.exceeded", "uid:33", "a@x"))


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_file_gone_under_the_store_is_noticed_and_reopened(
        tmp_path: Path, logbuf: io.StringIO, how: str) -> None:
    path = tmp_path / "state.db"
    store = sq.SqliteStore(path)
    for n in range(8):
        hold(store, n)
    if how == "deleted":
        path.unlink()
    else:
        other = tmp_path / "other.db"
        sqlite3.connect(other).close()
        os.replace(other, path)
    hold(store, 8)  # the next write notices
    errors = [ln for ln in logbuf.getvalue().splitlines() if "error:" in ln]
    assert len(errors) == 1 and f"the file was {how}" in errors[0], errors
    reader = sq.SqliteStore(path, create=False)
    data = status.collect(reader, from_dict({}), NOW + 10, None)
    text = status.render(data)
    reader.close()
    store.close()
    assert [h["queue_id"] for h in data["held"]] == ["Q8"]  # the new hold is where we read
    assert data["store_notices"] and how in data["store_notices"][0]["text"]
    assert "warning: store: the store file was" in text


def test_status_on_a_missing_file_is_an_error_not_zero(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(toml_dumps({"store": {"backend": "sqlite",
                                         "path": str(tmp_path / "gone.db")}}))
    rc = status.run(argparse.Namespace(config=str(cfg), json=False))
    out = capsys.readouterr()
    assert rc == 1
    assert "does not exist" in out.err and "Held by postwarden" not in out.out
    assert not (tmp_path / "gone.db").exists()
