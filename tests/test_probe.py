"""Probe tokens: only the holder of the store's secret can make one the milter takes."""

from __future__ import annotations

from pathlib import Path

from postwarden import probetoken as probe
from postwarden.checks import probe_send
from postwarden.checks.postfix_audit import PostfixFacts
from postwarden.store.sqlite_store import SqliteStore

NOW = 1_800_000_000.0


def test_a_token_verifies_only_with_its_secret_fresh_and_unaltered() -> None:
    nonce, token = probe.make_token("s3cret", NOW)
    assert probe.verify(token, "s3cret", NOW + 5) == nonce
    assert probe.verify(token, "other", NOW) is None
    assert probe.verify(token, "", NOW) is None
    assert probe.verify(token, "s3cret", NOW + probe.MAX_AGE + 1) is None  # no replay
    v, n, ts, mac = token.split()
    assert probe.verify(f"{v} {n} {int(ts) + 1} {mac}", "s3cret", NOW) is None
    assert probe.verify(f"{v} {'0' * 32} {ts} {mac}", "s3cret", NOW) is None
    assert probe.verify(token + "\r\nX-Evil: 1", "s3cret", NOW) is None


def test_the_secret_is_created_once_and_kept(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    first = probe.ensure_secret(s)
    assert len(first) == 64 and probe.ensure_secret(s) == first
    s.close()
    ro = SqliteStore(tmp_path / "s.db", readonly=True)
    assert probe.ensure_secret(ro) == first  # a reader can use an existing one
    ro.close()


def test_paths_are_sendmail_and_each_smtpd_listener_with_postwarden() -> None:
    spec = "{ unix:postwarden/postwarden.sock, default_action=accept }"
    facts = PostfixFacts("/etc/postfix", {"smtpd_milters": spec},
                         {"127.0.0.1:2526/inet": {"smtpd_milters": ""},
                          "submission/inet": {"smtpd_sasl_auth_enable": "yes"}},
                         {"smtp/inet": "smtpd", "127.0.0.1:2526/inet": "smtpd",
                          "submission/inet": "smtpd", "smtps/inet": "smtpd",
                          "pickup/unix": "pickup"})
    todo, skipped = probe_send.paths(facts, "postwarden.sock")
    assert [(p.kind, p.name) for p in todo] == [("sendmail", "sendmail"),
                                                 ("smtp", "127.0.0.1:25")]
    assert sorted(skipped) == ["smtps/inet: TLS-wrapped, not probed",
                               "submission/inet: submission needs credentials "
                               "([selfcheck] probe_sasl_user), not probed"]
    todo, skipped = probe_send.paths(facts, "postwarden.sock", credentials=True)
    assert [(p.name, p.auth) for p in todo] == [("sendmail", False), ("127.0.0.1:25", False),
                                                 ("127.0.0.1:587", True)]


def test_a_path_the_milter_never_saw_is_critical(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    p = probe_send.ProbePath("sendmail", "sendmail")
    r = probe_send._result(p, "", None, 3.0)
    assert r.status == "critical" and r.details["inspected"] is False
    assert "postconf -e 'non_smtpd_milters = $smtpd_milters'" in r.advice
    r = probe_send._result(p, "sendmail exited 75", None, 3.0)
    assert r.status == "unknown" and r.details["inspected"] is None
    r = probe_send._result(p, "", {"origin": "local", "dmarc": "fail", "signed_by": ""}, 3.0)
    assert r.status == "warning" and "not signed" in r.summary
    s.close()
