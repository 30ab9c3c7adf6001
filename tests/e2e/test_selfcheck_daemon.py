"""End-to-end: the self-check is never green while blind.

A stopped milter, a dead resolver, a selection that checks nothing, an
unprivileged monitoring user with a read-only store, and the cheap cached mode,
all against the private Postfix (whose smtpd_milters names postwarden by the
relative path `unix:postwarden/postwarden.sock`) and the fixture Knot.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemas
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import SASL_USERS
from harness import free_port
from harness.dns_dropper import DnsDropper
from harness.knot import DnsServer
from harness.milterproc import MilterProcess
from harness.postfix import Postfix
from harness.sink import Sink
from postwarden.checks.rootcause import DNS_FAMILIES
from postwarden.store.sqlite_store import SqliteStore
from selfcheck_world import World, selfcheck, write_config

pytestmark = pytest.mark.e2e
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
BIN = Path(sys.executable).parent / "postwarden"
# every fixture name ends in one of these; "" is the root the resolver check asks for
EVERYTHING = ("", "net", "com", "org", "arpa")
FEW_LISTS = ["zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net",
             "psbl.surriel.com", "bl.mailspike.net", "all.s5h.net", "all.spamrats.com",
             "ix.dnsbl.manitu.net", "truncate.gbudb.net", "dnsbl.dronebl.org"]


@pytest.fixture
def world(dns_server: DnsServer) -> World:
    w = World(key=KEY)
    w.publish(dns_server)
    return w


@pytest.fixture
def make_config(e2e_base: Path, dns_server: DnsServer, postfix: Postfix
                ) -> Callable[..., Path]:
    """A self-check config in a directory any user may read (0755), store inside."""
    n = [0]

    def make(port: int | None = None, **selfcheck: Any) -> Path:
        n[0] += 1
        d = e2e_base / f"selfcheck-{os.getpid()}-{time.monotonic_ns()}-{n[0]}"
        d.mkdir(mode=0o755)
        key = d / "mail.private"
        key.write_bytes(KEY.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        os.chmod(key, 0o600)  # postwarden refuses a signing key others may read
        return write_config(d / "postwarden.toml", port or dns_server.port, d, key,
                            postfix.conf, **selfcheck)

    return make


@pytest.fixture
def no_daemon(postfix: Postfix) -> Iterator[None]:
    """Nothing listens on the socket Postfix names (a previous test's daemon is gone)."""
    postfix.milter_socket.unlink(missing_ok=True)
    yield


def _cli(*args: str, user: str | None = None, group: str | None = None,
         timeout: float = 60) -> tuple[int, str, str]:
    cmd = [str(BIN), *args]
    if user:  # the venv's interpreter lives under /root: use the system's, same 3.11
        site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
        cmd = ["/usr/bin/python3", "-c", f"import site, sys; site.addsitedir({str(site)!r}); "
               "from postwarden.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       user=user, group=group, extra_groups=[] if user else None, cwd="/")
    return p.returncode, p.stdout, p.stderr


def _daemon_config(cfg: Path, **over: Any) -> dict[str, Any]:
    """The daemon's settings: the self-check config's store, DNS and Postfix."""
    import tomllib

    settings: dict[str, Any] = tomllib.loads(cfg.read_text())
    settings["socket"] = ""  # replaced by start()
    for k, v in over.items():
        if isinstance(v, dict):
            settings.setdefault(k, {}).update(v)
        else:
            settings[k] = v
    return settings


def _start_daemon(postfix: Postfix, cfg: Path, **over: Any) -> MilterProcess:
    settings = _daemon_config(cfg, **over)
    settings["socket"] = f"unix:{postfix.milter_socket}"
    proc = MilterProcess(cfg.parent / "daemon", postfix.milter_socket, settings)
    proc.start()
    return proc


def test_milter_stopped_is_critical_everywhere(
        world: World, make_config: Callable[..., Path], postfix: Postfix, no_daemon: None,
        capsys: Any, tmp_path: Path) -> None:
    cfg = make_config()
    # a daemon ran with this store and stopped: its heartbeat says so
    daemon = _start_daemon(postfix, cfg)
    daemon.stop()
    assert not postfix.milter_socket.exists() or postfix.milter_socket.is_socket()
    code, report = selfcheck(cfg, capsys, "--no-record")
    schemas.selfcheck_report(report)
    reach = [c for c in report["checks"] if c["id"] == "milter.reachable"]
    assert [(c["target"], c["status"]) for c in reach] == [
        ("unix:postwarden/postwarden.sock", "critical")]
    assert reach[0]["details"]["connect"] == f"unix:{postfix.queue}/postwarden/postwarden.sock"
    assert set(reach[0]["details"]["named_by"]) == {"smtpd_milters", "non_smtpd_milters"}
    hb = next(c for c in report["checks"] if c["id"] == "milter.heartbeat")
    assert hb["status"] == "warning" and "stopped" in hb["summary"]
    assert code == 2 and report["status"] == "critical"

    prom = tmp_path / "postwarden.prom"
    code, out, err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--no-record",
                          "--prometheus", str(prom))
    assert code == 2 and out.startswith("SELFCHECK CRITICAL - milter.reachable"), (out, err)
    assert len(out.splitlines()) == 1
    assert "postwarden_milter_up 0\n" in prom.read_text()

    code, out, err = _cli("-c", str(cfg), "status")
    assert "daemon: NOT RUNNING: nothing answers on" in out, (out, err)
    assert "last heartbeat: postwarden" in out

    # and with the daemon up again: reachable, heartbeat fresh, status says running
    daemon = _start_daemon(postfix, cfg)
    try:
        code, report = selfcheck(cfg, capsys, "--no-record", "--only", "milter")
        assert {c["id"]: c["status"] for c in report["checks"]} == {
            "milter.reachable": "ok", "milter.heartbeat": "ok"}
        _code, out, _err = _cli("-c", str(cfg), "status")
        assert "daemon: running: postwarden" in out
        _cli("-c", str(cfg), "selfcheck", "--no-record", "--only", "milter",
                                "--prometheus", str(prom))
        text = prom.read_text()
        assert "postwarden_milter_up 1\n" in text and "postwarden_heartbeat_age_seconds" in text
    finally:
        daemon.stop()


def test_dns_dead_is_one_root_cause_and_nothing_dns_based_is_ok(
        world: World, make_config: Callable[..., Path], capsys: Any) -> None:
    cfg = make_config(port=free_port())  # nothing answers there
    code, report = selfcheck(cfg, capsys, "--no-record", "--skip", "milter")
    schemas.selfcheck_report(report)
    roots = [c for c in report["checks"] if c["id"] == "resolver.reachable"]
    assert len(roots) == 1 and roots[0]["status"] == "unknown"
    assert "127.0.0.1" in roots[0]["summary"] and roots[0]["advice"]
    dns_based = [c for c in report["checks"] if c["id"].startswith(DNS_FAMILIES)]
    assert dns_based and not [c for c in dns_based if c["status"] == "ok"]
    lists = [c for c in report["checks"] if c["id"].startswith(("uceprotect.", "dnsbl."))]
    assert len(lists) >= 10 and all(c["details"].get("cause") == "resolver.reachable"
                                    for c in lists)
    assert next(c for c in report["checks"]
                if c["id"] == "resolver.public")["status"] == "unknown"
    assert code == 3

    # text: the cause once, the per-list unknowns under it in one line
    capsys.readouterr()
    from postwarden import cli

    cli.main(["-c", str(cfg), "selfcheck", "--no-record", "--skip", "milter"])
    text = capsys.readouterr().out
    assert text.count("resolver.reachable") == 1
    assert "result(s) unknown because of this: uceprotect.l1 192.0.2.25" in text
    assert "UNKNOWN  uceprotect.l1" not in text


def test_daemon_logs_dns_unknown_once_then_recovery(
        world: World, make_config: Callable[..., Path], postfix: Postfix, dns_server: DnsServer,
        no_daemon: None) -> None:
    relay = DnsDropper(dns_server.port, ())
    relay.start()
    cfg = make_config(port=relay.port)
    daemon = _start_daemon(postfix, cfg, selfcheck={
        "interval": 1, "startup_delay": 0.2, "query_timeout": 0.3, "run_timeout": 3.0,
        "lists_remove": FEW_LISTS})
    try:
        relay.silent = EVERYTHING  # the DNS server stops answering
        daemon.wait_line(r"warning: selfcheck: \d+ check\(s\) unknown, not watched: "
                         r"resolver\.reachable", timeout=30)
        runs = _stored_runs(cfg)
        while _stored_runs(cfg) < runs + 3:  # three more periodic runs while it lasts
            time.sleep(0.3)
        unknown_lines = [ln for ln in daemon.lines() if "check(s) unknown" in ln]
        assert len(unknown_lines) == 1, unknown_lines
        assert "fix: Start or fix the resolver" in unknown_lines[0]
        relay.silent = ()  # back
        daemon.wait_line(r"selfcheck: every check answers again \(was unknown: "
                         r"resolver\.reachable", timeout=30)
        assert len([ln for ln in daemon.lines() if "check(s) unknown" in ln]) == 1
    finally:
        daemon.stop()
        relay.stop()


def _stored_runs(cfg: Path) -> int:
    db = cfg.parent / "state.db"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return int(c.execute("SELECT count(*) FROM selfcheck").fetchone()[0])


def test_selection_of_nothing_is_unknown(world: World, make_config: Callable[..., Path],
                                         capsys: Any) -> None:
    cfg = make_config()
    code, report = selfcheck(cfg, capsys, "--no-record", "--only", "nosuchprefix")
    assert code == 3
    assert [(c["id"], c["status"]) for c in report["checks"]] == [
        ("selfcheck.selection", "unknown")]
    code, out, _err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--no-record",
                           "--only", "nosuchprefix")
    assert code == 3 and out.startswith("SELFCHECK UNKNOWN - selfcheck.selection nosuchprefix")


def test_nagios_as_unprivileged_user_with_read_only_store(
        world: World, make_config: Callable[..., Path], postfix: Postfix,
        no_daemon: None) -> None:
    # a monitoring user: not root, in group postwarden, which may read config and store
    user, group = "nobody", "postwarden"
    pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid
    cfg = make_config()
    daemon = _start_daemon(postfix, cfg)  # creates the store
    daemon.stop()
    store_dir = cfg.parent
    for p in store_dir.iterdir():
        if p.is_file():
            os.chown(p, 0, gid)
            os.chmod(p, 0o640)  # read-only for the group
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store_dir.iterdir()}
    code, out, err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--no-record", user=user,
                          group=group)
    assert len(out.splitlines()) == 1 and out.startswith("SELFCHECK "), (out, err)
    assert code in (0, 1, 2, 3)
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store_dir.iterdir()}
    assert after == before  # --no-record wrote nothing
    print(f"\nunprivileged nagios: exit {code}: {out.strip()[:200]}")

    # an internal failure (config unreadable for this user) is still one line, exit 3
    os.chmod(cfg, 0o600)
    code, out, err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--no-record", user=user,
                          group=group)
    assert code == 3 and out.startswith("SELFCHECK UNKNOWN - selfcheck.run") and \
        len(out.splitlines()) == 1, (out, err)


def test_nagios_cached_answers_from_the_daemons_report_without_dns(
        world: World, make_config: Callable[..., Path], postfix: Postfix, dns_server: DnsServer,
        no_daemon: None, capsys: Any) -> None:
    relay = DnsDropper(dns_server.port, ())
    relay.start()
    cfg = make_config(port=relay.port)
    daemon = _start_daemon(postfix, cfg, selfcheck={
        "interval": 3600, "startup_delay": 0.2, "lists_remove": FEW_LISTS})
    try:
        deadline = time.monotonic() + 30
        while _stored_runs(cfg) < 1:
            assert time.monotonic() < deadline, daemon.lines()[-20:]
            time.sleep(0.2)
        before = relay.forwarded
        t0 = time.monotonic()
        code, out, err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--cached", "3600")
        wall = time.monotonic() - t0
        assert relay.forwarded == before  # no DNS query at all
        assert len(out.splitlines()) == 1 and out.startswith("SELFCHECK "), (out, err)
        assert code in (0, 1, 2, 3)
        from postwarden import cli

        capsys.readouterr()
        t0 = time.monotonic()
        cli.main(["-c", str(cfg), "selfcheck", "--nagios", "--cached", "3600"])
        inproc = time.monotonic() - t0
        assert capsys.readouterr().out.startswith("SELFCHECK ")
        assert relay.forwarded == before
        print(f"\n--nagios --cached 3600: {wall:.3f}s wall as a process (interpreter start "
              f"included), {inproc:.3f}s in-process, exit {code}, "
              f"{relay.forwarded - before} DNS queries")
        # too old for the caller: unknown, never the stale status
        code, out, _err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--cached", "0")
        assert code == 3 and "selfcheck.cached" in out
        # the daemon dies: a fresh-enough cached report still says so at once
        daemon.stop()
        code, out, _err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--cached", "3600")
        assert code == 2 and out.startswith("SELFCHECK CRITICAL - milter.heartbeat"), out
        assert relay.forwarded == before
    finally:
        daemon.stop()
        relay.stop()


def test_status_json_says_daemon_state(world: World, make_config: Callable[..., Path],
                                       no_daemon: None) -> None:
    cfg = make_config()
    SqliteStore(cfg.parent / "state.db").close()
    code, out, err = _cli("-c", str(cfg), "status", "--json")
    assert code == 0, err
    data = json.loads(out)
    schemas.status(data)
    assert data["daemon"]["running"] is False and data["daemon"]["heartbeat"] is None, err


def test_probe_sees_each_path_and_nothing_is_delivered(
        world: World, make_config: Callable[..., Path], postfix: Postfix, sink: Sink,
        no_daemon: None, capsys: Any) -> None:
    cfg = make_config(probe_wait=8.0, probe_sasl_user="alice",
                      probe_sasl_password_file="/nonexistent")
    (cfg.parent / "probe.pw").write_text(SASL_USERS["alice"] + "\n")
    os.chmod(cfg.parent / "probe.pw", 0o600)
    cfg.write_text(cfg.read_text().replace('"/nonexistent"', f'"{cfg.parent / "probe.pw"}"'))
    key = {"domain": "example.com", "selector": "mail",
           "key_file": str(cfg.parent / "mail.private")}
    daemon = _start_daemon(postfix, cfg, dkim={"sign": True, "keys": [key]})
    try:
        code, report = selfcheck(cfg, capsys, "--probe", "--only", "probe")
        schemas.selfcheck_report(report)
        got = {(c["id"], c["target"]): c for c in report["checks"]}
        smtp_path = f"127.0.0.1:{postfix.smtp_port}"
        sub_path = f"127.0.0.1:{postfix.submission_port}"
        for path in (("probe.sendmail", "sendmail"), ("probe.smtp", smtp_path),
                     ("probe.smtp", sub_path)):
            c = got[path]
            assert c["status"] == "ok" and c["details"]["inspected"] is True, c
            assert c["details"]["signed_by"].startswith("example.com"), c
            assert c["details"]["dmarc"] == "pass" and "DMARC pass predicted" in c["summary"]
        assert got[("probe.sendmail", "sendmail")]["details"]["origin"] == "local"
        assert got[("probe.smtp", sub_path)]["details"]["origin"] == "submission"
        assert got[("probe.smtp", sub_path)]["details"]["source"] == "sasl:alice"
        # the listener without postwarden is not probed
        assert not any(t.endswith(f":{postfix.plain_port}") for _i, t in got)
        assert code == 0
        postfix.wait_idle()
        time.sleep(1.0)
        assert sink.messages == []  # every probe discarded, none delivered
        assert len([ln for ln in daemon.lines() if "discarded (a self-check probe" in ln]) == 3

        # a forged header (no valid HMAC) is ordinary mail: inspected and delivered
        postfix.sendmail(b"From: a@example.com\nTo: b@example.net\nSubject: x\n"
                         b"X-Postwarden-Probe: v1 " + b"0" * 32 + b" 1 " + b"f" * 64 +
                         b"\n\nhello\n", "a@example.com", ["b@example.net"])
        sink.wait_for(1)

        # postwarden removed from non_smtpd_milters: the sendmail path is critical
        before = postfix.extra_main
        postfix.write_config(extra_main=before + "\nnon_smtpd_milters =\n")
        postfix.reload()
        try:
            code, report = selfcheck(cfg, capsys, "--probe", "--only", "probe")
            got = {(c["id"], c["target"]): c for c in report["checks"]}
            sm = got[("probe.sendmail", "sendmail")]
            assert sm["status"] == "critical" and sm["details"]["inspected"] is False
            assert "non_smtpd_milters" in sm["summary"]
            assert got[("probe.smtp", smtp_path)]["status"] == "ok"
            assert code == 2
        finally:
            postfix.write_config(extra_main=before)
            postfix.reload()
    finally:
        daemon.stop()


def test_timeout_bounds_the_whole_run_with_one_line(
        world: World, make_config: Callable[..., Path], dns_server: DnsServer) -> None:
    relay = DnsDropper(dns_server.port, EVERYTHING)  # a resolver that never answers
    relay.start()
    cfg = make_config(port=relay.port, query_timeout=5.0, run_timeout=20.0)
    try:
        t0 = time.monotonic()
        code, out, err = _cli("-c", str(cfg), "selfcheck", "--nagios", "--no-record",
                              "--skip", "milter", "--timeout", "2")
        wall = time.monotonic() - t0
    finally:
        relay.stop()
    assert code == 3 and len(out.splitlines()) == 1 and out.startswith("SELFCHECK UNKNOWN"), \
        (out, err)
    assert relay.dropped > 0
    print(f"\n--timeout 2 against a silent resolver: {wall:.2f}s wall (process), "
          f"{relay.dropped} queries unanswered: {out.strip()[:120]}")
