"""Two relays (private Postfix + postwarden each) sharing a 3-master Redis Cluster:
one form limit whatever relay and whatever its clock, a retried message counted once,
and a cluster node killed mid-burst (degraded mode, visible, nothing counted twice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from e2e.test_forms_ratelimit import Run, delete, outcome, php_burst, php_source
from redis.crc import key_slot

from conftest import base_settings
from harness import HarnessError, need, stop_process
from harness.knot import DnsServer
from harness.milter_client import handshake
from harness.milterproc import BIN, MilterProcess
from harness.postfix import Postfix
from harness.redis_server import RedisCluster
from harness.sink import Sink
from postwarden.store.redis_store import RedisStore, slot_key

pytestmark = pytest.mark.e2e
# 6 per hour: one unit every 10 minutes, so a relay 10 minutes ahead on the callers'
# clock would see a unit more; a burst of 10 the relays must share.
LIMIT = {"name": "form", "key": "source", "rate": 6, "window": 3600, "burst": 10,
         "forms_only": True}
SOURCE = php_source("any.php")


@pytest.fixture(scope="module")
def relay2(e2e_base: Path, _sink: Sink) -> Iterator[Postfix]:
    pf = Postfix(e2e_base / "postfix-relay2", _sink.port)
    pf.start()
    yield pf
    pf.stop()


def cluster_settings(cluster: RedisCluster, prefix: str, **ratelimit: Any) -> dict[str, Any]:
    # costly_score out of reach: every message costs one unit, so the counts are exact
    return {"store": {"backend": "redis", "redis_url": cluster.url, "redis_prefix": prefix},
            "ratelimit": {"limits": [LIMIT], "costly_score": 1000, **ratelimit}}


def second_milter(e2e_base: Path, pf: Postfix, first: MilterProcess) -> MilterProcess:
    return MilterProcess(e2e_base / f"milter-r2-{uuid.uuid4().hex[:6]}", pf.milter_socket,
                         {**first.settings, "socket": f"unix:{pf.milter_socket}"})


def held_after(runs: list[tuple[Postfix, MilterProcess, Run]], sink: Sink,
               held_by: dict[str, list[str]]) -> tuple[int, int]:
    delivered = held = 0
    for pf, milter, run in runs:
        d, h = outcome(pf, sink, milter, run)
        held_by.setdefault(str(pf.conf), []).extend(h)
        delivered += len(d)
        held += len(h)
    return delivered, held


@pytest.mark.parametrize("skew", [False, True], ids=["same-clock", "relay2-plus-10min"])
def test_burst_split_over_two_relays_holds_what_one_relay_holds(
        postfix: Postfix, relay2: Postfix, sink: Sink, redis_cluster: RedisCluster,
        start_milter: Callable[..., MilterProcess], e2e_base: Path, tmp_path: Path,
        skew: bool) -> None:
    held_by: dict[str, list[str]] = {}
    one = start_milter(cluster_settings(redis_cluster, f"one-{uuid.uuid4().hex[:8]}:"))
    try:
        alone = held_after([(postfix, one, php_burst(postfix, tmp_path, "one.php", 40))],
                           sink, held_by)
    finally:
        one.stop()
        delete(postfix, held_by.pop(str(postfix.conf), []))
    assert alone == (10, 30)  # the limit itself, on one relay

    a = start_milter(cluster_settings(redis_cluster, f"two-{uuid.uuid4().hex[:8]}:"))
    b = second_milter(e2e_base, relay2, a)
    if skew:
        b.wrapper = [need("faketime"), "-f", "+10m"]
    b.start()
    try:
        if skew:  # the milter really runs 10 minutes ahead
            assert b.proc is not None
            # faketime runs the milter as its child, with libfaketime preloaded
            kids = Path(f"/proc/{b.proc.pid}/task/{b.proc.pid}/children").read_text().split()
            env = b"".join(Path(f"/proc/{k}/environ").read_bytes() for k in kids) \
                + Path(f"/proc/{b.proc.pid}/environ").read_bytes()
            probe = subprocess.run([need("faketime"), "-f", "+10m", sys.executable, "-c",
                                    "import time; print(time.time())"],
                                   capture_output=True, text=True, check=True)
            assert b"libfaketime" in env
            assert float(probe.stdout) - time.time() == pytest.approx(600, abs=30)
        runs = []
        for i in range(4):  # 40 messages, interleaved 5 + 5
            runs.append((postfix, a, php_burst(postfix, tmp_path, f"split{i}.php", 5)))
            runs.append((relay2, b, php_burst(relay2, tmp_path, f"split{i}.php", 5)))
        both = held_after(runs, sink, held_by)
        assert both == alone
        # both relays took part: each delivered some and held some
        for pf in (postfix, relay2):
            mine = [q for p, _, run in runs if p is pf for q in run.qids]
            held_here = set(held_by.get(str(pf.conf), []))
            assert held_here and len(held_here) < len(mine), str(pf.conf)
    finally:
        b.stop()
        for pf in (postfix, relay2):
            delete(pf, held_by.get(str(pf.conf), []))


# --- one message, one unit ---------------------------------------------------------------

@pytest.fixture
def tempfail_relay(e2e_base: Path, _sink: Sink) -> Iterator[Postfix]:
    """A relay whose second milter tempfails each message once, after postwarden."""
    base = e2e_base / f"postfix-tempfail-{uuid.uuid4().hex[:6]}"
    sockdir = base / "queue" / "tempfail"
    sockdir.mkdir(parents=True)
    os.chmod(sockdir, 0o755)
    sock = sockdir / "tempfail.sock"
    log = open(base / "tempfail.log", "ab")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "harness"
                                                 / "tempfail_milter.py"), f"unix:{sock}"],
                            stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while not handshake(f"unix:{sock}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise HarnessError("tempfail milter did not start: "
                               + (base / "tempfail.log").read_text()[-2000:])
        time.sleep(0.05)
    pf = Postfix(base, _sink.port, extra_main=(
        "smtpd_milters = { unix:postwarden/postwarden.sock, default_action=accept }, "
        "{ unix:tempfail/tempfail.sock, default_action=accept }"))
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()
        stop_process(proc)
        log.close()


def test_tempfailed_and_retried_message_takes_one_unit(
        tempfail_relay: Postfix, sink: Sink, redis_cluster: RedisCluster,
        dns_server: DnsServer, e2e_base: Path) -> None:
    prefix = f"retry-{uuid.uuid4().hex[:8]}:"
    workdir = e2e_base / f"milter-retry-{uuid.uuid4().hex[:6]}"
    settings = base_settings(tempfail_relay, dns_server, workdir)
    settings["outbound"] = {"internal_networks": ["127.0.0.0/8"]}
    settings["store"] = {"backend": "redis", "redis_url": redis_cluster.url,
                         "redis_prefix": prefix}
    settings["ratelimit"] = {"limits": [{"name": "app", "key": "client_ip", "rate": 10,
                                         "window": 3600, "burst": 5,
                                         "origins": ["internal"]}]}
    milter = MilterProcess(workdir, tempfail_relay.milter_socket, settings)
    milter.start()
    store = RedisStore(redis_cluster.url, prefix=prefix, timeout=2.0)
    tag = uuid.uuid4().hex[:12]

    def message(n: int) -> bytes:
        return (f"From: App <app@example.com>\nTo: <owner@example.org>\nSubject: n {n}\n"
                f"Message-ID: <{tag}-{n}@example.com>\n\nReport {n}. {tag}\n").encode()

    def used() -> float:
        (bucket,) = [b for b in store.buckets(time.time()) if b.key == "app:127.0.0.1"]
        return bucket.used

    try:
        import smtplib

        with pytest.raises(smtplib.SMTPDataError) as first:
            tempfail_relay.smtp(message(1), "app@example.com", ["owner@example.org"])
        assert first.value.smtp_code == 451
        assert used() == pytest.approx(1, abs=0.01)  # postwarden counted it
        qid = tempfail_relay.smtp(message(1), "app@example.com", ["owner@example.org"])
        milter.wait_summary(qid)
        assert used() == pytest.approx(1, abs=0.01)  # the retry took nothing
        tempfail_relay.wait_idle()
        assert len(sink.find(tag)) == 1
        summaries = [ln for ln in milter.lines() if "origin=internal" in ln]
        assert len(summaries) == 2  # postwarden saw the message twice
        # a different message does take a unit
        with pytest.raises(smtplib.SMTPDataError):
            tempfail_relay.smtp(message(2), "app@example.com", ["owner@example.org"])
        assert used() == pytest.approx(2, abs=0.01)
    finally:
        milter.stop()
        store.close()


# --- a node killed mid-burst ---------------------------------------------------------------

def _owner(cluster: RedisCluster, key: str) -> int:
    slot = int(key_slot(key.encode()))
    with cluster.nodes[0].client() as c:
        for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
    raise AssertionError(f"no owner for slot {slot}")


def _wait_state(cluster: RedisCluster, port: int, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_timeout=1) as c:
                if c.cluster("info").get("cluster_state") == state:  # type: ignore[union-attr]
                    return
        except redis.RedisError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"cluster never reached {state}")


def test_cluster_node_killed_mid_burst(
        postfix: Postfix, sink: Sink, own_cluster: RedisCluster,
        start_milter: Callable[..., MilterProcess], tmp_path: Path) -> None:
    # The node to kill holds none of the keys the counters and the notices live in (a
    # node restarted without persistence comes back empty: what it held is another
    # test's subject). The prefix is outside the hash tag, so the limit's name is
    # what moves its bucket to another slot.
    prefix = f"kill-{uuid.uuid4().hex[:8]}:"
    for i in range(100):
        name = f"form{i}"
        kept = [slot_key(prefix, "rl", f"{name}:{SOURCE}"), slot_key(prefix, "events"),
                slot_key(prefix, "notices")]
        owners = {_owner(own_cluster, k) for k in kept}
        spare = [n for n in own_cluster.nodes if n.port not in owners]
        if spare:
            victim = spare[0]
            break
    else:
        raise AssertionError("no layout with a node to spare")
    survivor = next(n for n in own_cluster.nodes if n is not victim)
    settings = cluster_settings(own_cluster, prefix, degraded_fraction=0.5)
    settings["ratelimit"]["limits"] = [{**LIMIT, "name": name}]
    milter = start_milter(settings)
    held: list[str] = []
    try:
        before = php_burst(postfix, tmp_path, "kill.php", 6)
        d, h = outcome(postfix, sink, milter, before)
        assert (len(d), len(h)) == (6, 0)
        victim.kill()
        _wait_state(own_cluster, survivor.port, "fail")  # the cluster noticed
        during = php_burst(postfix, tmp_path, "kill.php", 34)
        d_during, h_during = outcome(postfix, sink, milter, during)
        t_last = time.time()  # the last probe that failed was before this
        held += h_during
        # mail kept flowing; the local budget (half of burst 10) held the tail
        assert len(d_during) + len(h_during) == 34
        assert len(d_during) == 5
        lines = milter.lines()
        entered = [ln for ln in lines if "degraded mode:" in ln]
        assert len(entered) == 1 and "warning:" in entered[0], entered
        assert len([ln for ln in lines if "]: error: " in ln]) <= 1  # the flush, maybe
        assert not [ln for ln in lines if "Traceback" in ln]
        victim.start()
        own_cluster.wait_ok()
        time.sleep(max(0.0, 6 - (time.time() - t_last)))  # RECOVER_AFTER without failures
        after = php_burst(postfix, tmp_path, "kill.php", 2)
        d_after, h_after = outcome(postfix, sink, milter, after)
        held += h_after
        left = milter.wait_line("store reachable again", timeout=30)
        assert "warning:" in left and "5 messages passed and 29 held" in left
        assert len([ln for ln in milter.lines() if "store reachable again" in ln]) == 1
        assert len(d_after) == 2  # shared counting resumed: 6 + 2 of burst 10

        env = dict(os.environ, MAIL_CONFIG=str(postfix.conf))

        def status() -> dict[str, Any]:
            out = subprocess.run([str(BIN), "--config", str(milter.config_path), "status",
                                  "--json"], capture_output=True, text=True, env=env,
                                 check=True, timeout=60).stdout
            return dict(json.loads(out))

        deadline = time.monotonic() + 10
        data = status()
        while (sum(s["messages"] for s in data["sources_24h"]) < 42
               and time.monotonic() < deadline):
            time.sleep(0.3)
            data = status()
        # the activity counters agree with what was delivered and held
        (src,) = [s for s in data["sources_24h"] if s["source"] == SOURCE]
        assert src["messages"] == 6 + 34 + 2 and src["holds"] == len(h_during) + len(h_after)
        # the shared bucket holds the shared-counted messages only: none counted twice
        (bucket,) = [b for b in data["buckets"] if b["key"] == f"{name}:{SOURCE}"]
        assert 6 < bucket["used"] <= 8
        notices = [n["text"] for n in data["store_notices"]]
        assert any("degraded mode for" in t and "5 messages passed" in t for t in notices)
        text = subprocess.run([str(BIN), "--config", str(milter.config_path), "status"],
                              capture_output=True, text=True, env=env, check=True,
                              timeout=60).stdout
        assert "warning: store: degraded mode for" in text
    except BaseException:
        print("\n".join([ln for ln in milter.lines() if "origin=" not in ln][-40:]))
        print(sum("origin=" in ln for ln in milter.lines()), "summaries")
        raise
    finally:
        delete(postfix, held)
