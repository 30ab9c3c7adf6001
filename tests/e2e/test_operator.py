"""held / release / delete / ratelimit show|reset against held PHP mail in the private
Postfix, on SQLite and on Redis; every action shows up in the audit trail of status."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.milterproc import BIN, MilterProcess
from harness.php import run_php
from harness.postfix import Postfix
from harness.redis_server import RedisServer
from harness.sink import Sink
from postwarden.config import from_dict

pytestmark = pytest.mark.e2e
FORM = next(lim for lim in from_dict({}).ratelimit.limits if lim.name == "form")

CONTACT_PHP = r"""<?php
// A contact form handler: one mail() per submission.
[$self, $count, $tag] = $argv;
for ($i = 0; $i < (int)$count; $i++) {
    $headers = "From: Website <webmaster@example.com>\r\nMessage-ID: <$tag-$i@example.com>";
    if (!mail('owner@example.org', "Contact form $i", "Quote for job $i ($tag-$i)\n", $headers)) {
        exit(1);
    }
}
"""


def php_burst(postfix: Postfix, directory: Path, script: str, count: int
              ) -> tuple[str, list[str]]:
    path = directory / script
    path.write_text(CONTACT_PHP)
    tag = uuid.uuid4().hex[:12]
    run_php(path, postfix.conf, [str(count), tag])
    return tag, [postfix.queue_id_for(f"{tag}-{i}@example.com") for i in range(count)]


def cli(milter: MilterProcess, postfix: Postfix, *args: str, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAIL_CONFIG=str(postfix.conf), SUDO_USER="opsperson")
    return subprocess.run([str(BIN), "--config", str(milter.config_path), *args],
                          capture_output=True, text=True, env=env, check=check, timeout=60)


def as_json(milter: MilterProcess, postfix: Postfix, *args: str) -> Any:
    return json.loads(cli(milter, postfix, *args, "--json").stdout)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_operator_commands_on_held_php_mail(
        backend: str, postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess],
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    settings: dict[str, Any] = {}
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = {"store": {"backend": "redis", "redis_url": server.url,
                              "redis_prefix": f"ops-{uuid.uuid4().hex[:8]}:"}}
    milter = start_milter(settings)
    script = f"ops-{backend}.php"
    tag, qids = php_burst(postfix, tmp_path, script, FORM.burst + 3)
    # The source key is what the sender cannot choose (the script name is only a
    # claim): take it from postwarden's own summary line.
    sources = {milter.wait_summary(qid, timeout=60)["source"] for qid in qids}
    assert len(sources) == 1
    source = sources.pop()
    assert script not in source
    postfix.wait_idle(timeout=120)
    held = [q for q in qids if q in set(postfix.held())]
    delivered = [q for q in qids if q not in held]
    assert len(held) >= 2
    try:
        listed = {h["queue_id"]: h for h in as_json(milter, postfix, "held")}
        for qid in held:
            assert "ratelimit.exceeded" in listed[qid]["reason"].split(",")
            assert listed[qid]["source"] == source
            assert listed[qid]["age"] >= 0 and listed[qid]["recipients"] == 1
        assert as_json(milter, postfix, "held", "--source", "php:0:nobody.php") == []
        assert cli(milter, postfix, "held").stdout.count(source) >= len(held)

        # The source's buckets: the form limit (full), the local-mail limit and the
        # recipient budgets of each.
        buckets = {b["key"]: b for b in as_json(milter, postfix, "ratelimit", "show", source)}
        assert set(buckets) == {f"{limit}:{source}" for limit in
                                ("form", "local", "form_rcpts", "local_rcpts")}
        form = buckets[f"form:{source}"]
        assert form["level"] == pytest.approx(FORM.burst, abs=1.0)
        assert form["burst"] == FORM.burst and form["rate"] == FORM.rate
        assert form["refill_seconds"] > 0

        first, rest = held[0], held[1:]
        out = cli(milter, postfix, "release", first, "--note", "customer asked").stdout
        assert f"{first}: released" in out
        assert first not in postfix.held()
        out = cli(milter, postfix, "delete", "--source", source).stdout
        for qid in rest:
            assert f"{qid}: deleted" in out
        assert not set(held) & set(postfix.held())
        bad = cli(milter, postfix, "release", first, check=False)
        assert bad.returncode == 1 and "not on the hold queue" in bad.stderr

        out = cli(milter, postfix, "ratelimit", "reset", source, "--note", "fixed form").stdout
        assert f"form:{source}: reset" in out
        assert as_json(milter, postfix, "ratelimit", "show", source) == []

        status = as_json(milter, postfix, "status")
        audit = [(a["actor"], a["action"], a["target"]) for a in status["audit"]]
        assert ("opsperson", "release", first) in audit
        for qid in rest:
            assert ("opsperson", "delete", qid) in audit
        assert ("opsperson", "ratelimit.reset", f"form:{source}") in audit
        release = next(a for a in status["audit"] if a["action"] == "release")
        assert "note=customer asked" in release["detail"]
        assert "reason=ratelimit.exceeded" in release["detail"]
        text = cli(milter, postfix, "status").stdout
        assert "Operator actions" in text and f"release          {first}" in text
        sink.wait_for(len(delivered) + 1, timeout=60)  # the released one is delivered too
        assert len(sink.find(tag)) == len(delivered) + 1
    finally:
        for qid in set(held) & set(postfix.held()):
            postfix.postsuper("-d", qid)
