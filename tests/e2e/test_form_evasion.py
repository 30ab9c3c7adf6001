"""A form or local user that rotates what it controls (its own X-PHP-Originating-Script,
the envelope sender) is held exactly like one that does not: the source key comes from
Postfix's own Received header (local mail) or the SASL login, never from the message.
Through the private Postfix: PHP's own mail(), the sendmail command, SMTP submission."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SASL_USERS
from harness.milterproc import MilterProcess
from harness.php import run_php
from harness.postfix import Postfix
from harness.sink import Sink

pytestmark = pytest.mark.e2e
BURST = 5
# One unit a day refills nothing during the test: the count held is exact.
LIMITS = {"ratelimit": {"limits": [{"name": "form", "key": "source", "rate": 1,
                                    "window": 86400, "burst": BURST, "forms_only": True}]}}

ROTATING_PHP = r"""<?php
// mail.add_x_header is off: the script writes the header itself, a new name each time.
[$self, $count, $tag, $rotate] = $argv;
for ($i = 0; $i < (int)$count; $i++) {
    $n = $rotate === "yes" ? $i : 0;
    $headers = "X-PHP-Originating-Script: " . (1000 + $n) . ":/var/www/site$n/contact.php\r\n"
             . "From: Website <webmaster@example.com>\r\n"
             . "Message-ID: <$tag-$i@example.com>";
    if (!mail('owner@example.org', "Contact $i", "Visitor $i asks for a quote ($tag)\n",
              $headers)) {
        exit(1);
    }
}
"""


def held_of(postfix: Postfix, sink: Sink, milter: MilterProcess, tag: str,
            qids: list[str]) -> list[str]:
    for qid in qids:
        milter.wait_summary(qid, timeout=60)
    postfix.wait_idle(timeout=120)
    held = [q for q in qids if q in set(postfix.held())]
    assert len(sink.find(tag)) == len(qids) - len(held), "a message neither held nor delivered"
    return held


def burst(postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess],
          send: Callable[[str, int], str], count: int) -> tuple[int, set[str]]:
    """(held, source keys seen) for `count` messages sent by `send(tag, i)` through a
    fresh milter (its own store: an empty bucket)."""
    milter = start_milter(LIMITS)
    tag = uuid.uuid4().hex[:12]
    try:
        qids = [send(tag, i) for i in range(count)]
        held = held_of(postfix, sink, milter, tag, qids)
        sources = {milter.summaries(q)[-1]["source"] for q in qids}
        for q in held:
            postfix.postsuper("-d", q)
        return len(held), sources
    finally:
        milter.stop()


def test_php_mail_rotating_home_made_script_header(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess],
        tmp_path: Path) -> None:
    script = tmp_path / "rotate.php"
    script.write_text(ROTATING_PHP)
    results = {}
    for rotate in ("no", "yes"):
        qids: list[str] = []

        def send(tag: str, i: int, rotate: str = rotate, qids: list[str] = qids) -> str:
            if i == 0:  # one PHP run sends the whole burst
                run_php(script, postfix.conf, ["40", tag, rotate], add_x_header=False)
                qids[:] = [postfix.queue_id_for(f"{tag}-{n}@example.com") for n in range(40)]
            return qids[i]

        results[rotate] = burst(postfix, sink, start_milter, send, 40)
    fixed, rotating = results["no"], results["yes"]
    assert fixed[0] == 40 - BURST
    assert rotating[0] == fixed[0]
    # Postfix 3.7 hands non_smtpd_milters no header naming the uid (pickup's Received
    # is not among the headers they get): all local mail shares one key then.
    assert rotating[1] == fixed[1] and len(fixed[1]) == 1
    assert next(iter(fixed[1])) in ("local:unknown", f"uid:{os.getuid()}")


def test_phpmailer_via_sendmail_rotating_envelope_sender(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess]) -> None:
    def sender(rotate: bool) -> Callable[[str, int], str]:
        def send(tag: str, i: int) -> str:
            frm = f"form+{i if rotate else 0}@example.com"
            data = (f"From: Shop <{frm}>\nTo: <owner@example.org>\nSubject: order {i}\n"
                    f"Message-ID: <{tag}-{i}@example.com>\n"
                    "X-Mailer: PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)\n\n"
                    f"Order {i} received. {tag}\n").encode()
            postfix.sendmail(data, frm, ["owner@example.org"])
            return postfix.queue_id_for(f"{tag}-{i}@example.com")
        return send

    fixed = burst(postfix, sink, start_milter, sender(False), 40)
    rotating = burst(postfix, sink, start_milter, sender(True), 40)
    assert fixed[0] == 40 - BURST
    assert rotating == fixed


def test_sasl_form_account_rotating_header_sender_and_login_case(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess]) -> None:
    def sender(rotate: bool) -> Callable[[str, int], str]:
        def send(tag: str, i: int) -> str:
            n = i if rotate else 0
            frm = f"form+{n}@example.com"
            data = (f"X-PHP-Originating-Script: {1000 + n}:/var/www/s{n}/contact.php\n"
                    f"From: Site <{frm}>\nTo: <owner@example.org>\nSubject: contact {i}\n"
                    f"Message-ID: <{tag}-{i}@example.com>\n\nVisitor {i}. {tag}\n").encode()
            # Dovecot takes the login case-insensitively only if told to; ours is exact,
            # so the case test is the unit one (test_forms.py); here the login is fixed.
            return postfix.smtp(data, frm, ["owner@example.org"],
                                login=("forms", SASL_USERS["forms"]))
        return send

    fixed = burst(postfix, sink, start_milter, sender(False), 30)
    rotating = burst(postfix, sink, start_milter, sender(True), 30)
    assert fixed == (30 - BURST, {"sasl:forms"})
    assert rotating == fixed
