"""Issue 4 end-to-end: PHP mail() bursts through the private Postfix are held with a
reason; SASL users are not; limits survive restarts (SQLite) and are shared by two
MTAs through one Redis; a Redis outage fails open with one error line."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import SASL_USERS
from harness.milterproc import BIN, MilterProcess, deep_merge
from harness.php import run_php
from harness.postfix import Postfix
from harness.redis_server import RedisServer
from harness.sink import Sink
from postwarden.config import Config, from_dict

pytestmark = pytest.mark.e2e
DEFAULTS: Config = from_dict({})
FORM = next(lim for lim in DEFAULTS.ratelimit.limits if lim.name == "form")
_prefix = itertools.count()

CONTACT_PHP = r"""<?php
// A contact form handler, as on countless small sites: one mail() per submission.
[$self, $count, $tag] = $argv;
for ($i = 0; $i < (int)$count; $i++) {
    $name = "Visitor $i";
    $text = "Hello, this is $name. I would like a quote for job number $i. ($tag-$i)";
    $headers = "From: Website <webmaster@example.com>\r\n"
             . "Message-ID: <$tag-$i@example.com>\r\n"
             . "Content-Type: text/plain; charset=utf-8";
    if (!mail('owner@example.org', "Contact form: $name", $text . "\n", $headers)) {
        fwrite(STDERR, "mail() failed at $i\n");
        exit(1);
    }
}
"""


class Run:
    """One burst of PHP contact-form mail and where each message ended up."""

    def __init__(self, tag: str, qids: list[str]) -> None:
        self.tag = tag
        self.qids = qids


def php_burst(postfix: Postfix, directory: Path, script: str, count: int) -> Run:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / script
    path.write_text(CONTACT_PHP)
    tag = uuid.uuid4().hex[:12]
    run_php(path, postfix.conf, [str(count), tag])
    return Run(tag, [postfix.queue_id_for(f"{tag}-{i}@example.com") for i in range(count)])


def outcome(postfix: Postfix, sink: Sink, milter: MilterProcess, run: Run
            ) -> tuple[list[str], list[str]]:
    """(delivered queue IDs, held queue IDs) once every message was inspected and
    everything not held has been delivered."""
    for qid in run.qids:
        milter.wait_summary(qid, timeout=60)
    postfix.wait_idle(timeout=120)
    held = set(postfix.held())
    held_mine = [q for q in run.qids if q in held]
    delivered = [q for q in run.qids if q not in held]
    got = sink.find(run.tag)
    assert len(got) == len(delivered), "a message neither held nor delivered"
    return delivered, held_mine


def inspection_order(milter: MilterProcess, qids: list[str]) -> list[str]:
    """`qids` in the order of their summary lines in the milter's log."""
    wanted, order = set(qids), []
    for line in milter.lines():
        m = re.search(r"\]: (\w+): origin=", line)
        if m and m.group(1) in wanted and m.group(1) not in order:
            order.append(m.group(1))
    assert sorted(order) == sorted(qids)
    return order


def php_source(script: str) -> str:
    """The key of local mail: the uid if Postfix names it, else the one local key (the
    script name is only a claim, logged as claimed=)."""
    return "local:unknown"


def delete(postfix: Postfix, qids: list[str]) -> None:
    for q in qids:
        postfix.postsuper("-d", q)


def hold_line(milter: MilterProcess, qid: str) -> dict[str, str]:
    line = milter.wait_line(rf"\]: {qid}: hold: ")
    return dict(re.findall(r"(\w+)=([^\s;]+)", line))


def admitted_bound(burst: int, rate: int, window: int, seconds: float) -> int:
    """GCRA: at most burst + one per interval elapsed."""
    return burst + int(seconds // (window / rate)) + 1


# --- PHP contact form ---------------------------------------------------------------------

def test_php_form_burst_first_delivered_rest_held_with_reason(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess],
        tmp_path: Path) -> None:
    milter = start_milter()
    t0 = time.monotonic()
    run = php_burst(postfix, tmp_path, "contact.php", 50)
    elapsed = time.monotonic() - t0
    delivered, held = outcome(postfix, sink, milter, run)
    try:
        assert len(delivered) + len(held) == 50  # nothing lost
        assert FORM.burst <= len(delivered) <= admitted_bound(FORM.burst, FORM.rate,
                                                              FORM.window, elapsed)
        # The first ones pass: first in the order postwarden saw them. pickup hands
        # over one file at a time but scans the maildrop in directory order, not in
        # the order PHP wrote them.
        seen = inspection_order(milter, run.qids)
        assert set(seen[:FORM.burst]) <= set(delivered)
        assert seen[-1] in held
        source = php_source("contact.php")
        for qid in held:
            kv = hold_line(milter, qid)
            assert kv["source"] == source
            assert "ratelimit.exceeded" in kv["reason"].split(",")
            assert milter.summaries(qid)[-1]["action"] == "hold"
        assert milter.summaries(delivered[0])[-1]["source"] == source

        env = dict(os.environ, MAIL_CONFIG=str(postfix.conf))

        def status_json() -> dict[str, Any]:
            out = subprocess.run([str(BIN), "--config", str(milter.config_path), "status",
                                  "--json"], capture_output=True, text=True, env=env,
                                 check=True, timeout=60).stdout
            return cast(dict[str, Any], json.loads(out))

        # The daemon writes activity events in batches, at least twice a second.
        deadline = time.monotonic() + 5
        data = status_json()
        while (data["last_hour"]["findings"].get("ratelimit.exceeded", 0) < len(held)
               and time.monotonic() < deadline):
            time.sleep(0.2)
            data = status_json()
        listed = {h["queue_id"]: h for h in data["held"]}
        assert set(held) <= set(listed)
        for qid in held:
            assert listed[qid]["on_hold"] is True
            assert listed[qid]["source"] == source
            assert listed[qid]["release"] == f"postsuper -H {qid}"
        bucket = next(b for b in data["buckets"] if b["key"] == f"form:{source}")
        assert bucket["used"] == pytest.approx(FORM.burst, abs=1.0)
        assert data["last_hour"]["findings"]["ratelimit.exceeded"] >= len(held)
        text = subprocess.run([str(BIN), "--config", str(milter.config_path), "status"],
                              capture_output=True, text=True, env=env, check=True,
                              timeout=60).stdout
        assert f"postsuper -H {held[0]}" in text
    finally:
        delete(postfix, held)


# --- SASL users ----------------------------------------------------------------------------

def test_sasl_user_fifty_messages_not_held(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess]) -> None:
    milter = start_milter()
    tag = uuid.uuid4().hex[:12]
    qids = []
    for i in range(50):
        data = (f"From: Alice <alice@example.com>\nTo: <team{i}@example.org>\n"
                f"Subject: note {i}\nMessage-ID: <{tag}-{i}@example.com>\n\n"
                f"Note number {i} of the day. {tag}\n").encode()
        qids.append(postfix.smtp(data, "alice@example.com", [f"team{i}@example.org"],
                                 login=("alice", SASL_USERS["alice"])))
    for qid in qids:
        s = milter.wait_summary(qid)
        assert s["source"] == "sasl:alice" and s["action"] == "accept"
        assert "ratelimit.exceeded" not in s["findings"]
    postfix.wait_idle()
    assert not set(qids) & set(postfix.held())
    assert len(sink.find(tag)) == 50


# --- persistence ---------------------------------------------------------------------------

def test_limits_survive_milter_restart_sqlite(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess],
        tmp_path: Path) -> None:
    limit = {"name": "form", "key": "source", "rate": 1, "window": 86400, "burst": 4,
             "forms_only": True}
    milter = start_milter({"ratelimit": {"limits": [limit]}})
    first = php_burst(postfix, tmp_path, "restart.php", 3)
    d1, h1 = outcome(postfix, sink, milter, first)
    assert (len(d1), len(h1)) == (3, 0)
    milter.stop()
    milter.start()
    second = php_burst(postfix, tmp_path, "restart.php", 3)
    d2, h2 = outcome(postfix, sink, milter, second)
    try:
        assert (len(d2), len(h2)) == (1, 2)  # 3 + 1 = burst: the restart forgot nothing
    finally:
        delete(postfix, h2)


# --- Redis: two MTAs, one limit; outage -----------------------------------------------------

@pytest.fixture(scope="module")
def postfix2(e2e_base: Path, _sink: Sink) -> Iterator[Postfix]:
    """A second MTA (own queue, own postwarden socket) relaying to the same sink."""
    pf = Postfix(e2e_base / "postfix-second", _sink.port)
    pf.start()
    yield pf
    pf.stop()


def redis_settings(server: RedisServer) -> dict[str, Any]:
    return {"store": {"backend": "redis", "redis_url": server.url,
                      "redis_prefix": f"e2e{next(_prefix)}-{uuid.uuid4().hex[:6]}:"}}


def test_two_mtas_sharing_redis_enforce_one_limit(
        postfix: Postfix, postfix2: Postfix, sink: Sink, redis_server: RedisServer,
        start_milter: Callable[..., MilterProcess], e2e_base: Path, tmp_path: Path) -> None:
    settings = redis_settings(redis_server)
    a = start_milter(settings)
    b = MilterProcess(e2e_base / f"milter-b-{uuid.uuid4().hex[:6]}", postfix2.milter_socket,
                      {**a.settings, "socket": f"unix:{postfix2.milter_socket}"})
    b.start()
    runs: list[tuple[Postfix, MilterProcess, Run]] = []
    held_by: dict[str, list[str]] = {}
    try:
        t0 = time.monotonic()
        for _ in range(3):  # interleaved bursts, 6 messages per MTA per round
            runs.append((postfix, a, php_burst(postfix, tmp_path, "shared.php", 6)))
            runs.append((postfix2, b, php_burst(postfix2, tmp_path, "shared.php", 6)))
        elapsed = time.monotonic() - t0
        admitted, per_mta = 0, {id(postfix): 0, id(postfix2): 0}
        for pf, milter, run in runs:
            d, h = outcome(pf, sink, milter, run)
            held_by.setdefault(str(pf.conf), []).extend(h)
            admitted += len(d)
            per_mta[id(pf)] += len(d)
            assert len(d) + len(h) == 6
        assert FORM.burst <= admitted <= admitted_bound(FORM.burst, FORM.rate, FORM.window,
                                                        elapsed)
        assert admitted < 2 * FORM.burst  # separate stores would admit a burst each
        assert per_mta[id(postfix)] >= 1  # the first burst went to MTA a
    finally:
        b.stop()
        delete(postfix, held_by.get(str(postfix.conf), []))
        delete(postfix2, held_by.get(str(postfix2.conf), []))


def test_redis_outage_fails_open_and_counting_resumes(
        postfix: Postfix, sink: Sink, redis_server: RedisServer,
        start_milter: Callable[..., MilterProcess], tmp_path: Path) -> None:
    # degraded_fraction 0, the off switch: no local budgets, fail open unlimited (the
    # degraded mode itself is test_cluster_e2e's subject)
    milter = start_milter(deep_merge(redis_settings(redis_server),
                                     {"ratelimit": {"degraded_fraction": 0}}))
    held: list[str] = []
    try:
        before = php_burst(postfix, tmp_path, "outage.php", 2)
        d, h = outcome(postfix, sink, milter, before)
        assert (len(d), len(h)) == (2, 0)
        redis_server.stop()
        try:
            during = php_burst(postfix, tmp_path, "outage.php", 12)
            d, h = outcome(postfix, sink, milter, during)
            assert (len(d), len(h)) == (12, 0)  # more than the burst, all delivered
            errors = [ln for ln in milter.lines()
                      if "error: " in ln and ("store" in ln or "redis" in ln)]
            assert len(errors) == 1, errors
            assert "store unavailable" in errors[0]
        finally:
            redis_server.start()
        after = php_burst(postfix, tmp_path, "outage.php", FORM.burst + 3)
        d, h = outcome(postfix, sink, milter, after)
        held = h
        assert len(d) + len(h) == FORM.burst + 3
        assert FORM.burst <= len(d) <= FORM.burst + 1 and len(h) >= 2  # limits are back
        milter.wait_line("store reachable again")
    finally:
        delete(postfix, held)
