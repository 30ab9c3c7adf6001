"""The daemon's Prometheus metrics, scraped during an end-to-end run, match the mail
sent; promtool (Debian's prometheus package) accepts the exposition."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SASL_USERS
from harness import free_port, need
from harness.milterproc import MilterProcess
from harness.postfix import Postfix
from harness.sink import Sink
from postwarden.config import ConfigError, from_dict

pytestmark = pytest.mark.e2e


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def message(tag: str, i: int) -> bytes:
    return (f"From: <alice@example.com>\nTo: <bob@example.net>\nSubject: m {i}\n"
            f"Message-ID: <{tag}-{i}@example.com>\n\nhello {tag}\n").encode()


def test_metrics_count_the_messages_sent(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess],
        tmp_path: Path) -> None:
    port = free_port()
    textfile = tmp_path / "textfile" / "postwarden-milter.prom"
    milter = start_milter({"metrics": {"listen": f"127.0.0.1:{port}",
                                       "textfile": str(textfile), "textfile_interval": 0.5}})
    tag = uuid.uuid4().hex[:10]
    local, submitted = 3, 2
    qids = []
    for i in range(local):
        postfix.sendmail(message(tag, i), "alice@example.com", ["bob@example.net"])
        qids.append(postfix.queue_id_for(f"{tag}-{i}@example.com"))
    for i in range(local, local + submitted):
        qids.append(postfix.smtp(message(tag, i), "alice@example.com", ["bob@example.net"],
                                 login=("alice", SASL_USERS["alice"])))
    summaries = [milter.wait_summary(q) for q in qids]
    sink.wait_for(local + submitted)

    text = scrape(f"http://127.0.0.1:{port}/metrics")
    got = samples(text)
    assert got['postwarden_messages_total{action="accept",origin="local"}'] == local
    assert got['postwarden_messages_total{action="accept",origin="submission"}'] == submitted
    assert got["postwarden_inspect_seconds_count"] == local + submitted
    # Every finding in the summary lines is counted, once per message.
    expected: dict[str, int] = {}
    for s in summaries:
        for fid in s["findings"].split(","):
            if fid and fid != "none":
                expected[fid] = expected.get(fid, 0) + 1
    assert expected  # dkim.missing at least: these messages are unsigned
    for fid, n in expected.items():
        assert got[f'postwarden_findings_total{{id="{fid}"}}'] == n, fid
    assert re.search(r'postwarden_build_info\{version="\d+\.\d+\.\d+"\} 1\.0', text)

    r = subprocess.run([need("promtool"), "check", "metrics"], input=text,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if textfile.exists() and samples(textfile.read_text()).get(
                "postwarden_inspect_seconds_count") == local + submitted:
            break
        time.sleep(0.2)
    assert samples(textfile.read_text())["postwarden_inspect_seconds_count"] == local + submitted


def test_metrics_endpoint_only_on_loopback() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        from_dict({"metrics": {"listen": "0.0.0.0:9851"}})
    assert from_dict({"metrics": {"listen": "[::1]:9851"}}).metrics.listen == "[::1]:9851"
    with pytest.raises(ConfigError, match="HOST:PORT"):
        from_dict({"metrics": {"listen": "9851"}})


def test_grafana_dashboard_queries_only_metrics_the_daemon_exports() -> None:
    import json

    from postwarden.metrics import Metrics

    dash = json.loads((Path(__file__).resolve().parents[2] / "packaging"
                       / "grafana-postwarden.json").read_text())
    m = Metrics()
    m.message("local", "hold", ["dkim.missing"], "ratelimit.exceeded", ["From"],
              {"spf": "temperror"}, 0.01)
    m.store_errors.inc()
    m.internal_errors.inc()
    exported = {line.split("{")[0].split(" ")[0] for line in m.text().decode().splitlines()
                if line and not line.startswith("#")}
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 7
    for expr in exprs:
        for name in re.findall(r"postwarden_\w+", expr):
            assert name in exported, (name, expr)


def test_last_periodic_selfcheck_is_exported_as_gauges() -> None:
    from postwarden.checks.report import CheckResult, Report
    from postwarden.metrics import Metrics

    m = Metrics()
    assert b"postwarden_selfcheck_status" not in m.text()  # no run yet: nothing claimed
    m.selfcheck_done(Report(1_800_000_000.0, [
        CheckResult("uceprotect.l1", "192.0.2.25", "critical", "listed"),
        CheckResult("ptr.match", "192.0.2.25", "ok", "fine")]).metrics_run())
    text = m.text().decode()
    got = samples(text)
    assert got['postwarden_selfcheck_status{id="uceprotect.l1",target="192.0.2.25"}'] == 4
    assert got['postwarden_selfcheck_status{id="ptr.match",target="192.0.2.25"}'] == 0
    assert got["postwarden_selfcheck_exit_code"] == 2
    assert got["postwarden_selfcheck_last_run_timestamp_seconds"] == 1_800_000_000.0
    r = subprocess.run([need("promtool"), "check", "metrics"], input=text,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
