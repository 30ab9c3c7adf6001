"""milter.reachable: Postfix's milter lists parsed and resolved as Postfix does,
then a real milter-protocol negotiation against a socket."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

from postwarden.checks import milter_reach as mr
from postwarden.checks.postfix_audit import PostfixFacts


def test_parse_lists_with_braces_commas_and_spaces() -> None:
    got = mr.parse_milters("inet:127.0.0.1:8891, { unix:postwarden/postwarden.sock, "
                           "default_action=accept, command_timeout=10s } unix:/run/x.sock")
    assert got == [mr.Milter("inet:127.0.0.1:8891"),
                   mr.Milter("unix:postwarden/postwarden.sock",
                             (("default_action", "accept"), ("command_timeout", "10s"))),
                   mr.Milter("unix:/run/x.sock")]
    assert mr.parse_milters("") == []


def test_resolve_like_a_postfix_daemon() -> None:
    q = "/var/spool/postfix"
    assert mr.resolve("unix:postwarden/p.sock", q, False) == f"unix:{q}/postwarden/p.sock"
    assert mr.resolve("unix:postwarden/p.sock", q, True) == f"unix:{q}/postwarden/p.sock"
    assert mr.resolve("unix:/run/p.sock", q, False) == "unix:/run/p.sock"
    assert mr.resolve("unix:/run/p.sock", q, True) == f"unix:{q}/run/p.sock"  # chroot
    assert mr.resolve("local:/run/p.sock", q, False) == "unix:/run/p.sock"
    assert mr.resolve("inet:127.0.0.1:9999", q, True) == "inet:127.0.0.1:9999"


def _facts(smtpd: str, non: str, chroot: str = "n") -> PostfixFacts:
    return PostfixFacts("/etc/postfix", {"smtpd_milters": smtpd, "non_smtpd_milters": non,
                                         "queue_directory": "/q"},
                        {"submission/inet": {"smtpd_milters": "inet:127.0.0.1:1"}},
                        {"smtp/inet": "smtpd", "submission/inet": "smtpd",
                         "cleanup/unix": "cleanup"},
                        {"smtp/inet": chroot, "cleanup/unix": "n"})


def test_endpoints_are_postwardens_entries_deduplicated() -> None:
    spec = "{ unix:postwarden/postwarden.sock, default_action=accept }"
    eps = mr.endpoints(_facts(f"inet:127.0.0.1:8891, {spec}", spec), "postwarden.sock",
                       "unix:/q/postwarden/postwarden.sock")
    assert [(e.connect, e.named_by, e.default_action) for e in eps] == [
        ("unix:/q/postwarden/postwarden.sock", ["smtpd_milters", "non_smtpd_milters"],
         "accept")]
    # chrooted smtpd, absolute path: two different sockets as the processes see them
    eps = mr.endpoints(_facts("unix:/run/postwarden.sock", "unix:/run/postwarden.sock", "y"),
                       "postwarden.sock", "unix:/run/postwarden.sock")
    assert sorted(e.connect for e in eps) == ["unix:/q/run/postwarden.sock",
                                              "unix:/run/postwarden.sock"]
    # none named: the config's own socket is tested
    eps = mr.endpoints(_facts("", ""), "postwarden.sock", "unix:/run/pw.sock")
    assert [(e.connect, e.named_by) for e in eps] == [("unix:/run/pw.sock",
                                                       ["[socket] in config"])]


def _serve(path: Path, reply: bytes | None) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def run() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                conn.recv(17)
                if reply is not None:
                    conn.sendall(reply)
                conn.settimeout(2)
                conn.recv(16)
        except OSError:
            pass  # the client gave up first: that is the case under test
        finally:
            srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_negotiation_ok_and_failures(tmp_path: Path) -> None:
    good = tmp_path / "good.sock"
    payload = b"O" + struct.pack(">III", 6, 0x1FF, 0x1FFFFF)
    t = _serve(good, struct.pack(">I", len(payload)) + payload)
    res = mr.negotiate(f"unix:{good}")
    t.join(5)
    assert res.ok and res.version == 6

    bad = tmp_path / "bad.sock"
    t = _serve(bad, struct.pack(">I", 1) + b"r")  # not an OPTNEG answer
    res = mr.negotiate(f"unix:{bad}")
    t.join(5)
    assert not res.ok and "bad negotiation reply length" in res.error

    mute = tmp_path / "mute.sock"
    t = _serve(mute, None)
    res = mr.negotiate(f"unix:{mute}", timeout=0.3)
    t.join(5)
    assert not res.ok and "timeout" in res.error

    missing = mr.negotiate(f"unix:{tmp_path}/none.sock")
    assert not missing.ok and missing.errno == 2
    ep = mr.Endpoint("unix:postwarden/postwarden.sock", f"unix:{tmp_path}/none.sock",
                     ["smtpd_milters"])
    r = mr.check(ep, "unix:/elsewhere/postwarden.sock", lambda a: missing)
    assert r.status == "critical" and r.details["up"] is False
    assert any("postwarden listens on /elsewhere/postwarden.sock" in a for a in r.advice)
    denied = mr.Negotiation(False, "Permission denied", 13)
    assert mr.check(ep, "unix:/x", lambda a: denied).status == "unknown"
