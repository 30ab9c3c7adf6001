"""Issue 3 end-to-end: DKIM, SPF, DMARC and the fixes through a real private Postfix.

This module runs its own Postfix instance (its milter lists differ from the shared
one): port 25 goes through OpenDKIM (Debian's, configured here, its keys in the
fixture zones) and then postwarden; local mail (sendmail) goes through postwarden
only. Every name queried lives in a fixture zone on the Knot server. postwarden's
own signatures are verified by Debian's dkimpy under /usr/bin/python3, a separate
process with its own DNS lookups against the fixture server.
"""

from __future__ import annotations

import base64
import itertools
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from conftest import HOST_IP, SASL_USERS
from harness import HarnessError, need
from harness.bad_dns import BadDns
from harness.dkimverify import OpenDkimMilter, split_message
from harness.knot import DnsServer
from harness.milterproc import MilterProcess, deep_merge
from harness.php import run_php
from harness.postfix import Postfix
from harness.sasl import Dovecot
from harness.sink import Delivered, Sink
from postwarden.logsafe import unescape

pytestmark = pytest.mark.e2e

SPF_OK = '@ TXT "v=spf1 ip4:192.0.2.0/24 -all"'
VERIFIER = r"""
import sys, dkim, dns.resolver
res = dns.resolver.Resolver(configure=False)
res.nameservers, res.port = ["127.0.0.1"], int(sys.argv[1])
def dnsfunc(name, timeout=5):
    a = res.resolve(name.decode().rstrip("."), "TXT", lifetime=5)
    return b"".join(a[0].strings)
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
for i in range(n):
    ok = d.verify(idx=i, dnsfunc=dnsfunc)
    print(i, d.domain.decode(), d.selector.decode(), "pass" if ok else "fail")
"""


def _rsa(path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return _txt(f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")


def _ed25519(path: Path) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return _txt(f"v=DKIM1; k=ed25519; p={base64.b64encode(pub).decode()}")


def _txt(text: str) -> str:
    """A zone-file TXT value: long strings split into 200-byte chunks."""
    return " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))


class World:
    def __init__(self, base: Path, dns: DnsServer, sink: Sink) -> None:
        self.base, self.dns, self.sink = base, dns, sink
        self.od_dir = base / "opendkim"
        self.od_dir.mkdir(parents=True, exist_ok=True)
        self.pw_keys = base / "pwkeys"
        self.pw_keys.mkdir(exist_ok=True)
        self.postfix = Postfix(base / "postfix", sink.port)
        self.od_socket = self.postfix.queue / "opendkim" / "opendkim.sock"
        self.opendkim: subprocess.Popen[bytes] | None = None
        self.counter = itertools.count()

    def publish(self) -> None:
        z = self.dns.zone
        od_signed = _rsa(self.od_dir / "signed.pem")
        od_other = _rsa(self.od_dir / "other.pem")
        pw_rsa = _rsa(self.pw_keys / "rsa.pem")
        pw_ed = _ed25519(self.pw_keys / "ed.pem")
        z("signed.test", f'{SPF_OK}\n_dmarc TXT "v=DMARC1; p=reject"\n'
                         f"od._domainkey TXT {od_signed}")
        z("other.test", f"{SPF_OK}\nod._domainkey TXT {od_other}")
        z("wrong.test", f'{SPF_OK}\n_dmarc TXT "v=DMARC1; p=none"')
        z("fail.test", '@ TXT "v=spf1 ip4:198.51.100.1 -all"\n'
                       '_dmarc TXT "v=DMARC1; p=quarantine"')
        z("soft.test", '@ TXT "v=spf1 ip4:198.51.100.1 ~all"\n_dmarc TXT "v=DMARC1; p=none"')
        z("nospf.test", "www A 192.0.2.80")
        includes = " ".join(f"include:i{n}.perm.test" for n in range(11))
        z("perm.test", f'@ TXT "v=spf1 {includes} -all"\n' + "\n".join(
            f'i{n} TXT "v=spf1 ip4:198.51.100.9 -all"' for n in range(11)))
        z("relaxed.test", 'bounce TXT "v=spf1 ip4:192.0.2.25 -all"\n'
                          '_dmarc TXT "v=DMARC1; p=reject"')
        z("strict.test", 'bounce TXT "v=spf1 ip4:192.0.2.25 -all"\n'
                         '_dmarc TXT "v=DMARC1; p=reject; aspf=s"')
        z("foreign.test", '@ TXT "v=spf1 ip4:203.0.113.7 -all"\n_dmarc TXT "v=DMARC1; p=reject"')
        z("pw.test", f'{SPF_OK}\n_dmarc TXT "v=DMARC1; p=reject"\n'
                     f"rsa._domainkey TXT {pw_rsa}\ned._domainkey TXT {pw_ed}")

    def start_opendkim(self) -> None:
        d = self.od_dir
        (d / "KeyTable").write_text(f"ksigned signed.test:od:{d}/signed.pem\n"
                                    f"kother other.test:od:{d}/other.pem\n")
        (d / "SigningTable").write_text("*@signed.test ksigned\n*@wrong.test kother\n")
        self.od_socket.parent.mkdir(parents=True, exist_ok=True)
        self.od_socket.parent.chmod(0o755)
        (d / "opendkim.conf").write_text(
            "Syslog no\nMode s\nCanonicalization relaxed/relaxed\n"
            f"KeyTable file:{d}/KeyTable\nSigningTable refile:{d}/SigningTable\n"
            f"Socket local:{self.od_socket}\nUMask 000\nPidFile {d}/opendkim.pid\n"
            "RequireSafeKeys no\nInternalHosts 127.0.0.1\n")
        with open(d / "opendkim.log", "ab") as log:
            self.opendkim = subprocess.Popen(
                [need("opendkim"), "-f", "-x", str(d / "opendkim.conf")], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while not self.od_socket.exists():
            if self.opendkim.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"opendkim did not start: {(d / 'opendkim.log').read_text()}")
            time.sleep(0.05)

    def start(self) -> None:
        self.publish()
        self.postfix.write_config()
        self.start_opendkim()
        self.postfix.extra_main = (
            "smtpd_milters = { unix:opendkim/opendkim.sock, default_action=accept },"
            " { unix:postwarden/postwarden.sock, default_action=accept }\n"
            "non_smtpd_milters = { unix:postwarden/postwarden.sock, default_action=accept }\n")
        self.postfix.start()
        self.sasl = Dovecot(self.base / "dovecot", self.postfix.queue / "private" / "auth",
                            SASL_USERS)
        self.sasl.start()

    def stop(self) -> None:
        if getattr(self, "sasl", None) is not None:
            self.sasl.stop()
        self.postfix.stop()
        if self.opendkim is not None:
            self.opendkim.terminate()
            self.opendkim.wait(10)

    def settings(self, dns_port: int | None = None) -> dict[str, Any]:
        return {
            "socket": f"unix:{self.postfix.milter_socket}",
            "mode": "monitor",
            "outbound": {"internal_networks": ["127.0.0.0/8"]},
            "host": {"ips": [HOST_IP], "hostname": "mail.signed.test",
                     "domains": ["signed.test", "pw.test"]},
            "dns": {"nameservers": ["127.0.0.1"], "port": dns_port or self.dns.port,
                    "timeout": 1.0, "message_budget": 2.0},
            "store": {"backend": "sqlite",
                      "path": str(self.base / f"state{next(self.counter)}.db")},
            "log": {"target": "stderr", "repeat_interval": 600},
        }

    def milter(self, overrides: dict[str, Any] | None = None,
               dns_port: int | None = None) -> MilterProcess:
        settings = deep_merge(self.settings(dns_port), overrides or {})
        proc = MilterProcess(self.base / f"milter-{next(self.counter)}",
                             self.postfix.milter_socket, settings)
        proc.start()
        return proc


@pytest.fixture(scope="module")
def world(dns_server: DnsServer, e2e_base: Path, _sink: Sink) -> Iterator[World]:
    w = World(e2e_base / "auth", dns_server, _sink)
    try:
        w.start()
        yield w
    finally:
        w.stop()


@pytest.fixture
def milter(world: World, sink: Sink) -> Iterator[Callable[..., MilterProcess]]:
    started: list[MilterProcess] = []

    def start(overrides: dict[str, Any] | None = None,
              dns_port: int | None = None) -> MilterProcess:
        for p in started:
            p.stop()
        started.append(world.milter(overrides, dns_port))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def mail(from_: str, to: str = "bob@example.net", extra: str = "") -> tuple[str, bytes]:
    mid = f"{uuid.uuid4().hex}@auth.test"
    data = (f"From: {from_}\nTo: <{to}>\nSubject: auth test\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0000\nMessage-ID: <{mid}>\n{extra}"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
            f"Hello,\n\nthis is {mid}.\n.dot line\n").encode()
    return mid, data


def findings(summary: dict[str, str]) -> set[str]:
    return set(summary["findings"].split(",")) - {"none"}


def family(summary: dict[str, str], name: str) -> set[str]:
    return {f for f in findings(summary) if f.startswith(name + ".")}


def warning(m: MilterProcess, qid: str, fid: str) -> str:
    return m.wait_line(rf"\]: {qid}: warning: {fid}: ", timeout=10)


def unquoted(value: str) -> str:
    """A summary value as logsafe wrote it, without its quotes (`"none->pass(signed)"`)."""
    return unescape(value)


def independent_verify(msg: Delivered, dns_port: int) -> list[str]:
    out = subprocess.run(["/usr/bin/python3", "-c", VERIFIER, str(dns_port)], input=msg.data,
                         capture_output=True, check=True, timeout=60)
    return out.stdout.decode().split("\n")[:-1]


# --- DKIM with a real signer before postwarden -------------------------------------------

def test_opendkim_signature_aligned_missing_unaligned(world: World, sink: Sink,
                                                      milter: Callable[..., MilterProcess]
                                                      ) -> None:
    m = milter()
    pf = world.postfix
    _, signed = mail("Alice <alice@signed.test>")
    q_signed = pf.smtp(signed, "alice@signed.test", ["bob@example.net"])
    # the same message by the sendmail command: no OpenDKIM on that path
    mid_local, _ = mail("Alice <alice@signed.test>")
    local = signed.replace(signed.split(b"Message-ID: <")[1].split(b">")[0], mid_local.encode())
    pf.sendmail(local, "alice@signed.test", ["bob@example.net"])
    q_local = pf.queue_id_for(mid_local)
    _, wrong = mail("Walt <walt@wrong.test>")
    q_wrong = pf.smtp(wrong, "walt@wrong.test", ["bob@example.net"])
    sink.wait_for(3)

    s = m.wait_summary(q_signed)
    assert family(s, "dkim") == set() and s["dkim"] == "pass"
    assert s["spf"] == "pass" and s["dmarc"] == "pass" and findings(s) & {"dmarc.fail"} == set()

    s = m.wait_summary(q_local)
    assert family(s, "dkim") == {"dkim.missing"}
    assert "dmarc" in s and s["dmarc"] == "pass"  # SPF still aligns for signed.test
    assert "sign with a key of signed.test" in warning(m, q_local, "dkim.missing")

    s = m.wait_summary(q_wrong)
    assert family(s, "dkim") == {"dkim.unaligned"}
    assert "d=other.test" in warning(m, q_wrong, "dkim.unaligned")
    delivered = [d for d in sink.messages if b"walt@wrong.test" in d.data]
    assert b"d=other.test" in delivered[0].data


# --- SPF for the configured host IP, alignment and the DMARC outcome --------------------

CASES = [
    # (MAIL FROM, From, expected spf=, spf findings, dmarc findings, policy)
    ("b@signed.test", "A <a@signed.test>", "pass", set(), set(), None),
    ("b@fail.test", "A <a@fail.test>", "fail", {"spf.fail"}, {"dmarc.fail"}, "quarantine"),
    ("b@soft.test", "A <a@soft.test>", "softfail", {"spf.softfail"}, {"dmarc.fail"}, "none"),
    ("b@nospf.test", "A <a@nospf.test>", "none", {"spf.none"}, {"dmarc.none"}, None),
    ("b@perm.test", "A <a@perm.test>", "permerror", {"spf.permerror"}, {"dmarc.none"}, None),
    ("b@bounce.relaxed.test", "A <a@relaxed.test>", "pass", set(), set(), None),
    ("b@bounce.strict.test", "A <a@strict.test>", "pass", {"spf.unaligned"}, {"dmarc.fail"},
     "reject"),
]


def test_spf_results_alignment_and_dmarc(world: World, sink: Sink,
                                         milter: Callable[..., MilterProcess]) -> None:
    m = milter()
    queued = []
    for mail_from, from_, *_ in CASES:
        _, data = mail(from_)
        queued.append(world.postfix.smtp(data, mail_from, ["bob@example.net"]))
    # the web-form case: www-data on our host, the visitor's address in From
    mid, form = mail("Visitor <visitor@foreign.test>")
    world.postfix.sendmail(form, "www-data@signed.test", ["owner@example.org"])
    q_form = world.postfix.queue_id_for(mid)
    sink.wait_for(len(CASES) + 1)
    for qid, (_, _, spf, spf_ids, dmarc_ids, policy) in zip(queued, CASES, strict=True):
        s = m.wait_summary(qid)
        assert s["spf"] == spf, (qid, s)
        assert family(s, "spf") == spf_ids, (qid, s)
        assert family(s, "dmarc") == dmarc_ids, (qid, s)
        if policy:
            assert f"publishes p={policy}" in warning(m, qid, "dmarc.fail")
    s = m.wait_summary(q_form)
    assert s["origin"] == "local" and s["spf"] == "pass"
    assert family(s, "spf") == {"spf.unaligned"} and family(s, "dmarc") == {"dmarc.fail"}
    text = warning(m, q_form, "dmarc.fail")
    assert "p=reject" in text and "will be rejected at the receiver" in text
    assert "from_rewrite" in text
    assert "not one of this host's domains" in warning(m, q_form, "dkim.missing")
    assert s["action"] == "accept" and s["would"] == "hold"  # monitor: says what enforce does


# --- postwarden's own signatures, the From rewrite ---------------------------------------

def _signing(world: World, rewrite: bool = False) -> dict[str, Any]:
    keys = [{"domain": "pw.test", "selector": "rsa", "key_file": str(world.pw_keys / "rsa.pem")},
            {"domain": "pw.test", "selector": "ed", "key_file": str(world.pw_keys / "ed.pem")}]
    out: dict[str, Any] = {"dkim": {"sign": True, "keys": keys}}
    if rewrite:
        out["from_rewrite"] = {"enabled": True, "address": "noreply@pw.test",
                               "site_name": "PW Site"}
    return out


def test_own_rsa_and_ed25519_signatures_verify_independently(
        world: World, sink: Sink, milter: Callable[..., MilterProcess]) -> None:
    m = milter(_signing(world))
    mid, data = mail("Paula <paula@pw.test>")
    world.postfix.sendmail(data, "paula@pw.test", ["bob@example.net"])
    qid = world.postfix.queue_id_for(mid)
    (delivered,) = sink.wait_for(1)
    s = m.wait_summary(qid)
    assert s["signed"] == "pw.test/rsa+pw.test/ed"
    assert family(s, "dkim") == set()  # judged as it leaves: signed, nothing missing
    assert unquoted(s["dkim"]) == "none->pass(signed)"
    assert f"{qid}: warning: dkim.missing" not in m.log_path.read_text()
    results = independent_verify(delivered, world.dns.port)
    assert sorted(results) == ["0 pw.test ed pass", "1 pw.test rsa pass"] or \
        sorted(results) == ["0 pw.test rsa pass", "1 pw.test ed pass"]
    assert b"a=ed25519-sha256" in delivered.data and b"a=rsa-sha256" in delivered.data


def test_sasl_submission_postwarden_signs_logs_no_dkim_missing(
        world: World, sink: Sink, milter: Callable[..., MilterProcess]) -> None:
    """Mail a SASL user submits, signed by postwarden: judged as it leaves, so no
    dkim.missing on the summary line and no warning line for it."""
    m = milter(_signing(world))
    _mid, data = mail("Alice <alice@pw.test>")
    qid = world.postfix.smtp(data, "alice@pw.test", ["bob@example.net"],
                             login=("alice", SASL_USERS["alice"]))
    (delivered,) = sink.wait_for(1)
    s = m.wait_summary(qid)
    assert s["origin"] == "submission" and s["source"] == "sasl:alice"
    assert s["signed"] == "pw.test/rsa+pw.test/ed"
    assert family(s, "dkim") == set() and unquoted(s["dkim"]) == "none->pass(signed)"
    assert f"{qid}: warning: dkim.missing" not in m.log_path.read_text()
    assert sorted(r.split()[-1] for r in independent_verify(delivered, world.dns.port)) \
        == ["pass", "pass"]


def test_already_signed_mail_is_not_signed_again(
        world: World, sink: Sink, milter: Callable[..., MilterProcess]) -> None:
    m = milter(_signing(world))
    _, data = mail("Alice <alice@signed.test>")
    qid = world.postfix.smtp(data, "alice@signed.test", ["bob@example.net"])
    (delivered,) = sink.wait_for(1)
    s = m.wait_summary(qid)
    assert "signed" not in s and s["dkim"] == "pass"
    assert delivered.data.count(b"DKIM-Signature:") == 1


def test_from_rewrite_at_the_sink_with_a_valid_signature(
        world: World, sink: Sink, milter: Callable[..., MilterProcess]) -> None:
    m = milter(_signing(world, rewrite=True))
    mid, data = mail('"Vera Visitor" <visitor@foreign.test>')
    world.postfix.sendmail(data, "www-data@pw.test", ["owner@example.org"])
    qid = world.postfix.queue_id_for(mid)
    (delivered,) = sink.wait_for(1)
    assert delivered.header("From") == '"Vera Visitor via PW Site" <noreply@pw.test>'
    assert delivered.header("Reply-To") == '"Vera Visitor" <visitor@foreign.test>'
    assert sorted(independent_verify(delivered, world.dns.port))[0].endswith(" pass")
    assert all(r.endswith(" pass") for r in independent_verify(delivered, world.dns.port))
    line = m.wait_line(rf"\]: {qid}: from rewritten: <visitor@foreign.test> -> "
                       r"<noreply@pw.test> \(DMARC p=reject at foreign.test\)")
    assert "Reply-To" in line
    s = m.wait_summary(qid)
    assert s["from_rewritten"] == "foreign.test" and s["signed"] == "pw.test/rsa+pw.test/ed"


def test_existing_reply_to_is_kept_at_the_sink(
        world: World, sink: Sink, milter: Callable[..., MilterProcess]) -> None:
    milter(_signing(world, rewrite=True))
    _, data = mail("visitor@foreign.test", extra="Reply-To: <desk@example.org>\n")
    world.postfix.sendmail(data, "www-data@pw.test", ["owner@example.org"])
    (delivered,) = sink.wait_for(1)
    assert delivered.header("From") == '"visitor@foreign.test via PW Site" <noreply@pw.test>'
    assert delivered.header("Reply-To") == "<desk@example.org>"
    assert all(r.endswith(" pass") for r in independent_verify(delivered, world.dns.port))


# A contact form with PHP's mail(): the visitor's address in From, the site's own
# envelope sender (-f, mail()'s fifth argument) in signed.test: SPF passes but aligns
# with neither the visitor's From nor the rewritten one (pw.test).
CONTACT_FORM = r"""<?php
$id = $argv[1];
mail("Owner <owner@example.org>", "Contact form", "Hello, please call me back.\r\n",
     "From: Vera Visitor <visitor@foreign.test>\r\nMessage-ID: <$id@form.test>",
     "-fwww-data@signed.test");
"""


def _contact_form(world: World, tmp_path: Path) -> str:
    script = tmp_path / "contact.php"
    script.write_text(CONTACT_FORM)
    mid = uuid.uuid4().hex
    run_php(script, world.postfix.conf, [mid])
    return world.postfix.queue_id_for(f"{mid}@form.test")


def test_enforce_delivers_a_form_it_rewrites_and_signs(
        world: World, sink: Sink, milter: Callable[..., MilterProcess],
        tmp_path: Path) -> None:
    """Judged as it leaves: the foreign p=reject From fails DMARC as it arrived, but the
    rewritten and signed message passes, so enforce mode delivers it, not holds it."""
    m = milter({**_signing(world, rewrite=True), "mode": "enforce"})
    qid = _contact_form(world, tmp_path)
    (delivered,) = sink.wait_for(1)
    assert delivered.header("From") == '"Vera Visitor via PW Site" <noreply@pw.test>'
    assert all(r.endswith(" pass") for r in independent_verify(delivered, world.dns.port))
    s = m.wait_summary(qid)
    assert s["origin"] == "local" and s["action"] == "accept"
    assert unquoted(s["dmarc"]) == "fail->pass(rewritten)"  # as sent, and the fix shown
    assert unquoted(s["dkim"]) == "none->pass(signed)"
    assert s["from_rewritten"] == "foreign.test" and s["hdr_from"] == "<noreply@pw.test>"
    assert family(s, "dmarc") == set() and family(s, "dkim") == set()
    log = m.log_path.read_text()
    assert f"{qid}: warning: dmarc.fail" not in log and f"{qid}: hold:" not in log
    assert qid not in world.postfix.held()


def test_enforce_holds_the_form_when_signing_is_off_and_names_the_switch(
        world: World, sink: Sink, milter: Callable[..., MilterProcess],
        tmp_path: Path) -> None:
    settings = _signing(world, rewrite=True)
    settings["dkim"]["sign"] = False
    m = milter({**settings, "mode": "enforce"})
    qid = _contact_form(world, tmp_path)
    s = m.wait_summary(qid)
    assert s["action"] == "hold" and family(s, "dmarc") == {"dmarc.fail"}
    text = warning(m, qid, "dmarc.fail")
    assert "pw.test" in text and "([dkim] sign = false)" in text
    world.postfix.wait_queue(lambda es: any(e["queue_id"] == qid and e["queue_name"] == "hold"
                                            for e in es))
    world.postfix.postsuper("-d", qid)


# A PHPMailer message as PHP's mail() hands it to sendmail: MIME-Version,
# Content-Type with its boundary folded onto a second line, Content-Transfer-Encoding,
# Reply-To, X-Mailer. Its signed-header list cannot fit one line.
PHPMAILER = r"""<?php
$id = $argv[1];
$b = "b1_" . $id;
$headers = "Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n"
  . "From: Paula Web <paula@pw.test>\r\n"
  . "Reply-To: Visitor <visitor@example.org>\r\n"
  . "Message-ID: <$id@pw.test>\r\n"
  . "X-Mailer: PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)\r\n"
  . "MIME-Version: 1.0\r\n"
  . "Content-Type: multipart/alternative;\r\n boundary=\"$b\"\r\n"
  . "Content-Transfer-Encoding: 8bit";
$body = "This is a multi-part message in MIME format.\r\n\r\n--$b\r\n"
  . "Content-Type: text/plain; charset=utf-8\r\n\r\nGrüße from the contact form.\r\n\r\n"
  . "--$b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Grüße</p>\r\n\r\n--$b--\r\n";
mail("Bob <bob@example.net>", "Contact form: Grüße", $body, $headers);
"""


@pytest.fixture(scope="module")
def opendkim_verifier(world: World) -> Iterator[OpenDkimMilter]:
    od = OpenDkimMilter(world.base / "opendkim-verify", world.dns.port)
    od.start()
    yield od
    od.stop()


def _verified_by_both(delivered: Delivered, world: World, od: OpenDkimMilter
                      ) -> tuple[dict[str, str], dict[str, str]]:
    by_dkimpy = {line.split()[2]: line.split()[3]
                 for line in independent_verify(delivered, world.dns.port)}
    return by_dkimpy, od.verify(*split_message(delivered.data))


def test_phpmailer_mime_message_signed_by_postwarden_verifies_everywhere(
        world: World, sink: Sink, milter: Callable[..., MilterProcess],
        opendkim_verifier: OpenDkimMilter, tmp_path: Path) -> None:
    m = milter(_signing(world))
    script = tmp_path / "phpmailer.php"
    script.write_text(PHPMAILER)
    mid = uuid.uuid4().hex
    run_php(script, world.postfix.conf, [mid])
    (delivered,) = sink.wait_for(1)
    s = m.wait_summary(world.postfix.queue_id_for(f"{mid}@pw.test"))
    assert s["signed"] == "pw.test/rsa+pw.test/ed"
    h = delivered.data.split(b"h=", 1)[1].split(b";", 1)[0]
    assert b"content-transfer-encoding" in h.replace(b"\r\n", b"").replace(b" ", b"")
    by_dkimpy, by_opendkim = _verified_by_both(delivered, world, opendkim_verifier)
    assert by_dkimpy == {"rsa": "pass", "ed": "pass"}, by_dkimpy
    assert by_opendkim == {"rsa": "pass", "ed": "pass"}, by_opendkim


def test_simple_signature_over_headers_without_space_and_no_final_newline(
        world: World, sink: Sink, milter: Callable[..., MilterProcess],
        opendkim_verifier: OpenDkimMilter) -> None:
    """c=simple through Postfix: `Subject:x` reaches the receiver as sent, and the body
    submitted without a final newline is signed as Postfix passes it (newline added)."""
    m = milter(deep_merge(_signing(world), {"dkim": {"canonicalization": "simple/simple"}}))
    mid = f"{uuid.uuid4().hex}@pw.test"
    data = (f"From:Paula <paula@pw.test>\nTo:bob@example.net\nSubject:no space here\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0000\nMessage-ID:<{mid}>\nMIME-Version:1.0\n"
            "Content-Type: text/plain; charset=utf-8\n\nno final newline").encode()
    world.postfix.sendmail(data, "paula@pw.test", ["bob@example.net"])
    (delivered,) = sink.wait_for(1)
    s = m.wait_summary(world.postfix.queue_id_for(mid))
    assert s["signed"] == "pw.test/rsa+pw.test/ed"
    assert b"\r\nSubject:no space here\r\n" in delivered.data
    assert b"c=simple/simple" in delivered.data
    by_dkimpy, by_opendkim = _verified_by_both(delivered, world, opendkim_verifier)
    assert by_dkimpy == {"rsa": "pass", "ed": "pass"}, by_dkimpy
    assert by_opendkim == {"rsa": "pass", "ed": "pass"}, by_opendkim


# --- a DNS server that does not answer ----------------------------------------------------

def test_silent_dns_still_delivers_within_the_budget(
        world: World, sink: Sink, milter: Callable[..., MilterProcess]) -> None:
    bad = BadDns()
    bad.mode = "silent"
    bad.start()
    try:
        m = milter({"dns": {"timeout": 1.0, "message_budget": 1.5}}, dns_port=bad.port)
        _, data = mail("Alice <alice@signed.test>")
        before = bad.udp_queries + bad.tcp_queries
        qid = world.postfix.smtp(data, "alice@signed.test", ["bob@example.net"])
        sink.wait_for(1)
        s = m.wait_summary(qid)
        asked = bad.udp_queries + bad.tcp_queries - before
    finally:
        bad.stop()
    # the budget bounds the wait: the first lookup gets its 1 s, the next the 0.5 s
    # left, and every later one fails at once without being sent
    assert 1 <= asked <= 2, asked
    assert {"dkim.temperror", "spf.temperror", "dmarc.temperror"} <= findings(s)
    assert s["action"] == "accept"
    warning(m, qid, "spf.temperror")
