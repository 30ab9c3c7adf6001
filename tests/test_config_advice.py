"""`postwarden config check`: valid configs that still cost protection warn, exit 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postwarden import cli, config_advice, hostinfo
from postwarden.blocklists import PUBLIC_RESOLVERS
from postwarden.config import from_dict

GOOD = {"user": "postwarden", "host": {"ips": ["192.0.2.25"]},
        "dns": {"nameservers": ["127.0.0.1"]}}


def _warn(data: dict[str, Any], ifaces: list[str] | None = None) -> list[str]:
    return config_advice.warnings(from_dict(data), lambda: list(ifaces or []))


def test_a_good_config_has_no_warning() -> None:
    assert _warn(GOOD) == []


def test_each_problem_is_one_line_naming_key_and_fix() -> None:
    w = _warn({**GOOD, "host": {"ips": []}})
    assert len(w) == 1 and w[0].startswith("[host] ips is empty") and "ips = [" in w[0]
    assert _warn({**GOOD, "host": {"ips": []}}, ifaces=["192.0.2.25"]) == []  # detectable
    w = _warn({**GOOD, "dns": {"nameservers": []}})
    assert len(w) == 1 and w[0].startswith("[dns] nameservers is empty")
    public = sorted(PUBLIC_RESOLVERS)[0]  # named from the table: no literal, no query
    w = _warn({**GOOD, "dns": {"nameservers": [public]}})
    assert len(w) == 1 and f"{public} is a public resolver" in w[0]
    for user in ("", "root"):
        w = _warn({**GOOD, "user": user})
        assert len(w) == 1 and "set user = \"postwarden\"" in w[0]


def test_config_check_prints_warnings_and_exits_0(tmp_path: Path, capsys: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostinfo, "interface_ips", lambda: [])
    cfg = tmp_path / "pw.toml"
    cfg.write_text(f'[dns]\nnameservers = ["{sorted(PUBLIC_RESOLVERS)[0]}"]\n')
    assert cli.main(["-c", str(cfg), "config", "check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(": warning: ")[1][:12] for ln in lines[:-1]] == [
        "[host] ips i", "[dns] namese", "user is unse"]
    assert lines[-1].endswith(": OK")
