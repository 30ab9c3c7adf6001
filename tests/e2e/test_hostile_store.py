"""The daemon against a store that answers nonsense: a RESP server replying `:1` to
every command, and a real Redis with a string where a bucket hash should be. Mail
flows (fail open) or stays limited; the daemon never exits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from harness.fake_redis import FakeRedis
from harness.milterproc import MilterProcess
from harness.postfix import Postfix
from harness.redis_server import RedisServer
from harness.sink import Sink

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake() -> Iterator[FakeRedis]:
    server = FakeRedis().start()
    yield server
    server.stop()


def send_local(postfix: Postfix, tag: str, n: int) -> list[str]:
    qids = []
    for i in range(n):
        data = (f"From: Site <webmaster@example.com>\nTo: <owner@example.org>\n"
                f"X-PHP-Originating-Script: 33:contact.php\nSubject: contact {i}\n"
                f"Message-ID: <{tag}-{i}@example.com>\n\nVisitor {i}. {tag}\n").encode()
        postfix.sendmail(data, "www-data@example.com", ["owner@example.org"])
        qids.append(postfix.queue_id_for(f"{tag}-{i}@example.com"))
    return qids


def test_server_answering_one_to_everything_never_kills_the_daemon(
        postfix: Postfix, sink: Sink, fake: FakeRedis,
        start_milter: Callable[..., MilterProcess]) -> None:
    # degraded_fraction 0: no local budgets, so every failed call is an error line and
    # the mail passes unlimited (the degraded mode is test_cluster_e2e's subject)
    milter = start_milter({"store": {"backend": "redis", "redis_url": fake.url},
                           "ratelimit": {"degraded_fraction": 0}})
    tag = uuid.uuid4().hex[:12]
    qids = send_local(postfix, tag, 8)  # more than the form burst: limits are off (open)
    for q in qids:
        assert milter.wait_summary(q, timeout=60)["action"] == "accept"
    time.sleep(2)  # four event flushes of the main thread against the fake server
    assert milter.proc is not None and milter.proc.poll() is None, "\n".join(milter.lines())
    postfix.wait_idle(timeout=120)
    assert len(sink.find(tag)) == 8
    assert fake.commands > 0
    errors = [ln for ln in milter.lines() if "error:" in ln]
    assert errors and all("Traceback" not in ln for ln in milter.lines())
    assert any("unexpected reply" in ln for ln in errors), errors


def test_string_under_a_bucket_key_does_not_switch_the_limit_off(
        postfix: Postfix, sink: Sink, redis_server: RedisServer,
        start_milter: Callable[..., MilterProcess]) -> None:
    prefix = f"poison-{uuid.uuid4().hex[:6]}:"
    milter = start_milter({"store": {"backend": "redis", "redis_url": redis_server.url,
                                     "redis_prefix": prefix},
                           "ratelimit": {"limits": [{"name": "form", "key": "source",
                                                     "rate": 1, "window": 86400, "burst": 3,
                                                     "forms_only": True}]}})
    tag = uuid.uuid4().hex[:12]
    first = send_local(postfix, tag, 1)
    source = milter.wait_summary(first[0], timeout=60)["source"]
    with redis.Redis(port=redis_server.port) as r:
        r.set(f"{prefix}{{rl:form:{source}}}", "switched off?")
    rest = send_local(postfix, tag + "b", 6)
    actions = [milter.wait_summary(q, timeout=60)["action"] for q in rest]
    try:
        assert actions == ["accept"] * 3 + ["hold"] * 3  # reset to empty, then limited
        assert milter.wait_line(r"error: store redis .*bad value under bucket form:")
        assert milter.proc is not None and milter.proc.poll() is None
    finally:
        for q in set(postfix.held()) & set(rest):
            postfix.postsuper("-d", q)
