"""Property-based fuzzing of every per-message check, in process (issue 7).

The full default check list runs on generated messages against a fake resolver
and a real SQLite store. No check may raise (a raise fails open but is a bug: it
shows up as an `internal.error` finding), and the summary line is always built.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auth_fakes import FakeResolver, config
from postwarden.message import Message, Origin
from postwarden.milter.app import summary_line
from postwarden.milter.pipeline import Inspector, Services, default_checks, default_fixers
from postwarden.store.sqlite_store import SqliteStore

_tmp = Path(tempfile.mkdtemp(prefix="postwarden-fuzz-"))
RESOLVER = FakeResolver({
    ("example.com", "TXT"): ["v=spf1 ip4:192.0.2.25 -all"],
    ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; adkim=s"],
    ("example.org", "TXT"): ["v=spf1 include:_spf.example.org ~all"],
    ("_spf.example.org", "TXT"): ["v=spf1 redirect=example.org"],  # a loop: permerror
    ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=quarantine; pct=x; rua=mailto:"],
})
CFG = config(domains=["example.com"])
SERVICES = Services(config=CFG, resolver=RESOLVER, store=SqliteStore(_tmp / "state.db"))
INSPECTOR = Inspector(SERVICES, default_checks(SERVICES), default_fixers(SERVICES))
RUNS = {"n": 0}


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    print(f"\ngenerated messages inspected: {RUNS['n']}")
    SERVICES.store.close()  # type: ignore[union-attr]
    shutil.rmtree(_tmp, ignore_errors=True)


def _text(b: bytes) -> str:
    return b.replace(b"\0", b"").decode("utf-8", "surrogateescape")


value = st.one_of(
    st.binary(max_size=200).map(_text),
    st.text(max_size=200),
    st.sampled_from([
        " Alice <alice@example.com>", " a@example.com, b@example.org", " <>", " @", "",
        " =?utf-8?q?=C3=A4?= <x@xn--mller-kva.example>", " v=1; a=rsa-sha256; d=example.com;"
        " s=sel; h=from:to; bh=AAAA; b=BBBB", " v=1; d=; b=", " 33:/var/www/contact.php",
        " PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)",
        ' multipart/alternative; boundary="b1_abc"', " user@müller.example",
        " by mail.example.com (Postfix, from userid 33)\n\tid 4F9D42A0B1; Mon, 1 Jan 2024",
        " mailto:x@example.org", " " + "x" * 5000,
    ]),
)
name = st.one_of(st.sampled_from(["From", "To", "Cc", "Reply-To", "DKIM-Signature",
                                  "X-PHP-Originating-Script", "Received", "X-Mailer",
                                  "Content-Type", "Sender", "Subject"]),
                 st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                       blacklist_characters=":"), min_size=1, max_size=20))
address = st.one_of(st.sampled_from(["", "www-data@mail.example.com", "wordpress@example.com",
                                     "a@b", "x@example.org", "nobody", "@", "a@[192.0.2.1]"]),
                    st.emails().map(str), st.text(max_size=60))


@settings(max_examples=2000, deadline=None)
@given(headers=st.lists(st.tuples(name, value), max_size=30),
       body=st.binary(max_size=5000),
       mail_from=address, rcpts=st.lists(address, max_size=8),
       origin=st.sampled_from([Origin.LOCAL, Origin.SUBMISSION, Origin.INTERNAL]),
       auth=st.sampled_from(["", "alice", "forms", "\udcff"]),
       truncated=st.booleans())
def test_no_check_raises_and_the_summary_is_built(
        headers: list[tuple[str, str]], body: bytes, mail_from: str, rcpts: list[str],
        origin: Origin, auth: str, truncated: bool) -> None:
    msg = Message(queue_id="FUZZ", origin=origin, client_addr="127.0.0.1", auth_user=auth,
                  mail_from=mail_from, rcpts=rcpts, headers=headers, body=body,
                  body_truncated=truncated)
    verdict = INSPECTOR.inspect(msg)
    RUNS["n"] += 1
    assert "internal.error" not in [f.id for f in verdict.findings], verdict.findings
    line = summary_line(msg, verdict, "monitor")
    assert "\n" not in line and line.startswith(f"origin={origin}")
    assert "findings=" in line and "action=" in line
