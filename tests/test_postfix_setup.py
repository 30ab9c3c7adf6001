"""postwarden postfix-setup against a scratch Postfix config directory (postconf -c)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import need
from harness.postfix import EXAMPLES
from postwarden import cli, postfix_setup

MASTER_DIST = Path("/usr/share/postfix/master.cf.dist")


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    need("postconf")
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\nmyhostname = mx.example.com\n")
    shutil.copy(MASTER_DIST, tmp_path / "master.cf")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = cli.main(["postfix-setup", *args])
    return rc, capsys.readouterr().out


def test_main_cf_fragment_is_parsed_with_continuations() -> None:
    got = postfix_setup.main_cf_settings("# c\na = 1\nb = x,\n  y\n\nc=\n")
    assert got == [("a", "1"), ("b", "x, y"), ("c", "")]
    example = dict(postfix_setup.main_cf_settings((EXAMPLES / "main.cf").read_text()))
    assert example["non_smtpd_milters"] == "$smtpd_milters"
    assert example["smtpd_milters"].startswith("{ unix:postwarden/postwarden.sock")


def test_prints_without_changing_then_applies_once(
        confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (confdir / "main.cf").read_text()
    rc, out = run(capsys, "-c", str(confdir))
    assert rc == 0
    assert f"postconf -c {confdir} -e milter_default_action=accept" in out
    assert (confdir / "main.cf").read_text() == before

    rc, out = run(capsys, "-c", str(confdir), "--apply")
    assert rc == 0
    assert "no submission service" in out
    assert [p.read_text() for p in confdir.glob("main.cf.postwarden-*")] == [before]
    main = (confdir / "main.cf").read_text()
    assert "non_smtpd_milters = $smtpd_milters" in main
    assert "myhostname = mx.example.com" in main  # the admin's lines stay

    rc, out = run(capsys, "-c", str(confdir), "--apply")
    assert rc == 0 and "nothing to change" in out
    assert len(list(confdir.glob("main.cf.postwarden-*"))) == 1  # no change, no backup


def test_existing_submission_service_only_gets_the_marker(
        confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (confdir / "master.cf").open("a") as f:
        f.write("submission inet n - y - - smtpd\n  -o smtpd_sasl_auth_enable=yes\n"
                "  -o smtpd_sasl_path=private/mine\n")
    rc, out = run(capsys, "-c", str(confdir), "--apply")
    assert rc == 0
    assert f"postconf -c {confdir} -P submission/inet/milter_macro_daemon_name=ORIGINATING" in out
    service = subprocess.run([need("postconf"), "-c", str(confdir), "-M", "submission/inet"],
                             capture_output=True, text=True, check=True).stdout
    assert "milter_macro_daemon_name=ORIGINATING" in service
    assert "smtpd_sasl_path=private/mine" in service
    assert "smtpd_tls_auth_only" not in service  # the example's options are not forced on it


def test_submission_service_is_added_only_when_asked(
        confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = run(capsys, "-c", str(confdir), "--apply", "--submission")
    assert rc == 0
    master = (confdir / "master.cf").read_text()
    assert "smtpd_tls_auth_only=yes" in master
    assert "milter_macro_daemon_name=ORIGINATING" in master
    rc, out = run(capsys, "-c", str(confdir), "--apply", "--submission")
    assert rc == 0 and "nothing to change" in out


def test_missing_config_dir_is_an_error(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["postfix-setup", "-c", str(tmp_path / "nope")])
    assert rc == 1
    assert "postfix-setup" in capsys.readouterr().err
