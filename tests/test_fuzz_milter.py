"""Fuzzing the running milter over the milter protocol (issue 7).

Every generated message goes to a real `postwarden milter` process through the
same protocol Postfix speaks. Whatever the input, the milter must answer (never a
tempfail from its own exception), write exactly one summary line for the queue ID,
and log no internal error: a check that raised is a bug even though it failed open.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.knot import DnsServer
from harness.milter_client import MilterClient
from harness.milterproc import MilterProcess, standalone_settings

_ids = itertools.count(1)
CASES = {"n": 0}

HEADER_NAMES = ["From", "To", "Cc", "Subject", "Reply-To", "DKIM-Signature", "Received",
                "X-PHP-Originating-Script", "X-Mailer", "Content-Type", "Message-ID", "Sender",
                "Authentication-Results", "MIME-Version"]


@pytest.fixture(scope="module")
def fuzz_milter(dns_server: DnsServer, e2e_base: Path) -> Iterator[MilterProcess]:
    dns_server.zone("example.com", '@ TXT "v=spf1 ip4:192.0.2.25 -all"\n'
                    '_dmarc TXT "v=DMARC1; p=reject"\n')
    work = e2e_base / "fuzz"
    sock = work / "pw.sock"
    proc = MilterProcess(work, sock, standalone_settings(dns_server.port, work, f"unix:{sock}"))
    proc.start()
    yield proc
    print(f"\nfuzz cases sent to the milter: {CASES['n']}")
    assert proc.stop() == 0  # the daemon survived everything


def send(proc: MilterProcess, headers: list[tuple[str, str]], body: bytes,
         mail_from: str = "alice@example.com", rcpts: tuple[str, ...] = ("bob@example.net",),
         macros: dict[str, dict[str, str]] | None = None) -> tuple[str, bytes]:
    qid = f"FZ{next(_ids):08X}"
    m = {"C": {"{daemon_name}": "ORIGINATING", "j": "mail.example.com"},
         "M": {"{auth_authen}": "alice"}, "E": {"i": qid}}
    for stage, values in (macros or {}).items():
        m.setdefault(stage, {}).update(values)
    m["E"]["i"] = qid
    with MilterClient(f"unix:{proc.socket_path}", timeout=15) as c:
        c.negotiate()
        reply = c.message(("192.0.2.80", 41000), "client.example.net", mail_from,
                          list(rcpts), headers, body, m)
    CASES["n"] += 1
    return qid, reply.code


def check_outcome(proc: MilterProcess, qid: str, code: bytes) -> None:
    assert code in (b"a", b"c"), f"{qid}: milter answered {code!r}"
    deadline = time.monotonic() + 10
    while not proc.summaries(qid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(proc.summaries(qid)) == 1, f"{qid}: no single summary line"
    errors = [line for line in proc.lines() if qid in line and ": error:" in line]
    assert errors == []


def _text(b: bytes) -> str:
    return b.replace(b"\0", b"").decode("utf-8", "surrogateescape")


header_name = st.one_of(st.sampled_from(HEADER_NAMES),
                        st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                              blacklist_characters=":"), min_size=1,
                                max_size=30))
header_value = st.one_of(
    st.binary(max_size=300).map(_text),
    st.sampled_from([
        "", " ", "<>", "@", "a@", "@b", "\"Quoted, Name\" <x@example.com>",
        "=?utf-8?b?w6TDtsO8?= <user@xn--mnchen-3ya.example>", "user@müller.example",
        "a@example.com, b@example.org", "undisclosed-recipients:;",
        "v=1; a=rsa-sha256; d=; s=; b=", "v=1; a=ed25519-sha256; d=example.com; s=x; "
        "h=from; bh=!!!; b=???", "v=2; d=example.com", "=?bogus?q?x?=",
        "33:/var/www/contact.php", "0:", "\udcff\udcfe", "x" * 2000,
    ]),
)
address = st.one_of(st.sampled_from(["", "alice@example.com", "www-data@mail.example.com",
                                     "a@b", "no-at-sign", "<>", "x@xn--d1acufc.example",
                                     "user@[192.0.2.1]", "\"odd local\"@example.com"]),
                    st.emails().map(str))


@pytest.mark.e2e
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(header_name, header_value), max_size=40),
       body=st.binary(max_size=20000), mail_from=address,
       rcpts=st.lists(address, min_size=1, max_size=5),
       daemon=st.sampled_from(["ORIGINATING", "", "\udcff", "x" * 300]),
       auth=st.sampled_from(["alice", "", "we ird", "ä"]))
def test_any_message_is_answered_and_summarised(
        fuzz_milter: MilterProcess, headers: list[tuple[str, str]], body: bytes,
        mail_from: str, rcpts: list[str], daemon: str, auth: str) -> None:
    qid, code = send(fuzz_milter, headers, body, mail_from, tuple(rcpts),
                     {"C": {"{daemon_name}": daemon or "ORIGINATING"},
                      "M": {"{auth_authen}": auth or "alice"}})
    check_outcome(fuzz_milter, qid, code)


@pytest.mark.e2e
def test_thousands_of_headers(fuzz_milter: MilterProcess) -> None:
    headers = [("From", "alice@example.com")] + [(f"X-H{i}", f"v{i}") for i in range(5000)]
    check_outcome(fuzz_milter, *send(fuzz_milter, headers, b"hi\r\n"))


@pytest.mark.e2e
def test_folded_header_of_100kb(fuzz_milter: MilterProcess) -> None:
    value = "\r\n\t".join("word" * 20 for _ in range(1300))
    headers = [("From", "alice@example.com"), ("Subject", value), ("To", value)]
    check_outcome(fuzz_milter, *send(fuzz_milter, headers, b"hi\r\n"))


@pytest.mark.e2e
def test_fifty_megabyte_body(fuzz_milter: MilterProcess) -> None:
    body = (b"A" * 998 + b"\r\n") * (50 * 1024 * 1024 // 1000)
    headers = [("From", "alice@example.com"), ("To", "bob@example.net")]
    check_outcome(fuzz_milter, *send(fuzz_milter, headers, body))


@pytest.mark.e2e
def test_missing_multiple_and_garbage_from(fuzz_milter: MilterProcess) -> None:
    for headers in ([], [("From", "a@example.com"), ("From", "b@example.org")],
                    [("From", "a@example.com, b@example.org")], [("From", "<<<>>>")],
                    [("From", "\udcff\udcfe@\udcff")]):
        check_outcome(fuzz_milter, *send(fuzz_milter, headers, b"x\r\n"))
    summaries = [line for line in fuzz_milter.lines() if "origin=" in line]
    assert all(re.search(r"hdr_from=<[^ ]*>", s) for s in summaries)


@pytest.mark.e2e
def test_odd_macro_values(fuzz_milter: MilterProcess) -> None:
    headers = [("From", "alice@example.com")]
    for daemon, auth in (("\udcff\udcfe", "alice"), ("ORIGINATING", "\udcffuser"),
                         ("", "x" * 1000), ("ORIGINATING", " ")):
        check_outcome(fuzz_milter, *send(fuzz_milter, headers, b"x\r\n", macros={
            "C": {"{daemon_name}": daemon}, "M": {"{auth_authen}": auth}}))
