"""Finding ids in the config: a typo is refused by `config check`, at start and on reload.

An unknown id in `[policy] enforce` or `hold_in_monitor` would otherwise be a silent
no-op (`ratelimit.exceded = "hold"` holds nothing).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from postwarden import config as configmod
from postwarden.log import log
from postwarden.milter import daemon
from postwarden.milter.app import current
from postwarden.milter.pipeline import Inspector, Services
from selfcheck_fakes import FakeResolver

ROOT = Path(__file__).resolve().parent.parent
TYPO = '[policy]\nenforce = { "ratelimit.exceded" = "hold" }\n'


def _postwarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "postwarden"), *args],
                          capture_output=True, text=True)


def test_config_check_exits_2_naming_the_key_with_did_you_mean(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TYPO)
    r = _postwarden("--config", str(bad), "config", "check")
    assert r.returncode == 2
    assert "policy.enforce.ratelimit.exceded" in r.stderr
    assert "did you mean 'ratelimit.exceeded'" in r.stderr
    bad.write_text('[policy]\nhold_in_monitor = ["ratelimit.exceeded", "form.suspicous"]\n')
    r = _postwarden("--config", str(bad), "config", "check")
    assert r.returncode == 2
    assert "policy.hold_in_monitor[1]" in r.stderr and "'form.suspicious'" in r.stderr
    bad.write_text('[policy]\nenforce = { "uceprotect.*" = "hold", "form.*" = "hold" }\n')
    r = _postwarden("--config", str(bad), "config", "check")
    assert r.returncode == 0, r.stderr


def test_milter_refuses_to_start_with_an_unknown_id(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TYPO)
    r = _postwarden("--config", str(bad), "milter", "--log-stderr")
    assert r.returncode == 2 and "ratelimit.exceded" in r.stderr


def test_reload_with_an_unknown_id_keeps_the_running_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TYPO)
    running = Inspector(Services(configmod.from_dict({}), FakeResolver()), [])
    buf = io.StringIO()
    old = current.inspector
    current.inspector = running
    log.setup("stderr", stream=buf)
    try:
        daemon._reload(str(bad), True, None, running.services.host)
        assert current.inspector is running
    finally:
        current.inspector = old
        log.setup("stderr", stream=sys.stderr)
    assert "reload refused, keeping the running config" in buf.getvalue()
    assert "ratelimit.exceded" in buf.getvalue()


def test_findings_command_prints_the_committed_docs() -> None:
    r = _postwarden("findings", "--markdown")
    assert r.returncode == 0
    assert r.stdout == (ROOT / "docs" / "findings.md").read_text()
    r = _postwarden("findings")
    assert r.returncode == 0 and "ratelimit.exceeded" in r.stdout.split()
