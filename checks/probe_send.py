"""`selfcheck --probe`: is the protection actually on, on every path mail takes?

Reading the config says what Postfix should do; a probe shows what it does. One
message per path: the local `sendmail` command (the web-form path, which only
`non_smtpd_milters` sees) and SMTP from 127.0.0.1 to every listener whose
effective `smtpd_milters` names postwarden (submission listeners that demand
authentication are skipped: they need credentials). Each carries an HMAC token
(postwarden.milter.probe); the milter records what it saw and discards it. A
path on which the milter never saw its probe within `probe_wait` is critical:
mail there passes uninspected.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from postwarden import probetoken as probe
from postwarden.checks.milter_reach import parse_milters
from postwarden.checks.postfix_audit import PostfixFacts, _is_submission
from postwarden.checks.report import CheckResult
from postwarden.findings import Finding


@dataclass(frozen=True)
class ProbePath:
    name: str  # "sendmail" or "HOST:PORT"
    kind: str  # "sendmail" | "smtp"
    host: str = ""
    port: int = 0
    service: str = ""
    auth: bool = False  # submission: STARTTLS and SASL login first


_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}


def _listen(service_name: str) -> tuple[str, int] | None:
    host, sep, port = service_name.rpartition(":")
    if not sep:
        host, port = "", service_name
    p = _PORTS.get(port) if not port.isdigit() else int(port)
    if p is None or p == 465:  # smtps wraps TLS first: not probed in plain SMTP
        return None
    host = host.strip("[]")
    return ("127.0.0.1" if host in ("", "0.0.0.0", "*") else "::1" if host == "::" else host,
            p)


def paths(facts: PostfixFacts | None, marker: str, credentials: bool = False
          ) -> tuple[list[ProbePath], list[str]]:
    """The paths to probe, and the listeners skipped (with why). Submission
    listeners are probed only with `credentials` ([selfcheck] probe_sasl_user)."""
    out = [ProbePath("sendmail", "sendmail")]
    skipped: list[str] = []
    if facts is None:
        return out, ["SMTP listeners unknown (postconf failed)"]
    for service, command in sorted(facts.commands.items()):
        if not service.endswith("/inet") or not command.startswith("smtpd"):
            continue
        milters = facts.effective(service, "smtpd_milters")
        if not any(marker in m.address or "postwarden" in m.address
                   for m in parse_milters(milters)):
            continue
        where = _listen(service.rsplit("/", 1)[0])
        if where is None:
            skipped.append(f"{service}: TLS-wrapped, not probed")
            continue
        submission = _is_submission(facts, service)
        if submission and not credentials:
            skipped.append(f"{service}: submission needs credentials "
                           "([selfcheck] probe_sasl_user), not probed")
            continue
        host, port = where
        out.append(ProbePath(f"{host}:{port}", "smtp", host, port, service, submission))
    return out, skipped


def login(user: str, password_file: str) -> tuple[str, str] | None:
    """Submission credentials, the password read from its own file (the config is
    readable by the monitoring group; the password file need not be)."""
    if not user or not password_file:
        return None
    try:
        with open(password_file, encoding="utf-8") as f:
            return user, f.readline().rstrip("\r\n")
    except OSError:
        return None


def message(sender: str, rcpt: str, token: str, hostname: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: postwarden self-check probe\r\n"
            f"Date: {formatdate(localtime=True)}\r\n"
            f"Message-ID: <probe.{token.split()[1]}@{hostname}>\r\n"
            f"{probe.HEADER}: {token}\r\n\r\n"
            "A postwarden self-check probe. The milter discards it; if you read this,\r\n"
            "postwarden did not inspect the path it was sent on.\r\n").encode()


def submit(path: ProbePath, data: bytes, sender: str, rcpt: str, config_dir: str,
           timeout: float, login: tuple[str, str] | None = None) -> str:
    """Send one probe; '' or why it could not be sent."""
    try:
        if path.kind == "sendmail":
            exe = shutil.which("sendmail") or "/usr/sbin/sendmail"
            cmd = [exe, *(["-C", config_dir] if config_dir else []), "-i", "-f", sender,
                   "--", rcpt]
            p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
            if p.returncode != 0:
                return f"sendmail exited {p.returncode}: " \
                       f"{p.stderr.decode(errors='replace').strip()[:200]}"
            return ""
        with smtplib.SMTP(path.host, path.port, timeout=timeout,
                          local_hostname="localhost") as s:
            if path.auth and login is not None:
                # Our own listener on loopback, usually with the host's certificate
                # for its public name: encrypt, but do not check the name.
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                s.starttls(context=ctx)
                s.login(*login)
            s.sendmail(sender, [rcpt], data)
        return ""
    except (OSError, smtplib.SMTPException, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"


def run(store: Any, facts: PostfixFacts | None, marker: str, domain: str, hostname: str,
        config_dir: str, wait: float, clock: Callable[[], float] = time.time,
        recipient: str = "", login: tuple[str, str] | None = None) -> list[Finding]:
    """Probe every path; one `probe.<kind>` result per path."""
    if store is None:
        return [CheckResult("probe.sendmail", "sendmail", "unknown",
                            "no store: probes cannot be verified (the milter records them "
                            "there)", ("Check [store]",), {"inspected": None})]
    try:
        secret = probe.ensure_secret(store)
    except Exception as e:  # read-only store (--no-record) without a secret yet
        return [CheckResult("probe.sendmail", "sendmail", "unknown",
                            f"cannot create the probe secret in the store: {e}",
                            ("Run `postwarden selfcheck --probe` once as root (or the "
                             "postwarden user), without --no-record",), {"inspected": None})]
    sender = f"postwarden-probe@{domain or hostname}"
    rcpt = recipient or sender
    todo, skipped = paths(facts, marker, login is not None)
    sent: dict[str, tuple[ProbePath, str, str]] = {}  # nonce -> path, error, token
    for p in todo:
        nonce, token = probe.make_token(secret, clock())
        err = submit(p, message(sender, rcpt, token, hostname), sender, rcpt, config_dir,
                     min(wait, 20.0), login)
        sent[nonce] = (p, err, token)
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait
    waiting = [n for n, (_p, err, _t) in sent.items() if not err]
    while waiting and time.monotonic() < deadline:
        for n in list(waiting):
            try:
                raw = store.get_meta(probe.SEEN_PREFIX + n)
            except Exception:  # a busy store: try again on the next round
                raw = None
            if raw:
                seen[n] = json.loads(raw)
                waiting.remove(n)
        if waiting:
            time.sleep(0.2)
    out = [_result(p, err, seen.get(n), wait) for n, (p, err, _t) in sent.items()]
    for s in skipped:
        out.append(CheckResult("probe.smtp", s.split(": ")[0], "info", s, (),
                               {"inspected": None}))
    return out


def _result(p: ProbePath, err: str, seen: dict[str, Any] | None, wait: float) -> Finding:
    rid = f"probe.{p.kind}"
    d: dict[str, Any] = {"path": p.name, "service": p.service, "inspected": None}
    if err:
        d["error"] = err
        return CheckResult(rid, p.name, "unknown", f"could not submit the probe: {err}",
                           ("Check that Postfix runs and accepts mail from this host",), d)
    if seen is None:
        d["inspected"] = False
        where = ("non_smtpd_milters (sendmail, PHP mail())" if p.kind == "sendmail"
                 else f"smtpd_milters of {p.service}")
        fix = ("postconf -e 'non_smtpd_milters = $smtpd_milters'" if p.kind == "sendmail"
               else f"check the -o smtpd_milters of {p.service} in master.cf")
        return CheckResult(rid, p.name, "critical",
                           f"postwarden never saw the probe sent via {p.name} within "
                           f"{wait:g}s: mail on this path passes uninspected ({where})",
                           (fix, "Check that postwarden runs: postwarden status"), d)
    d.update(inspected=True, **{k: seen.get(k) for k in (
        "queue_id", "origin", "source", "dkim", "spf", "dmarc", "signed_by", "action")})
    signed = f"signed by {seen['signed_by']}" if seen.get("signed_by") else "not signed"
    dmarc = seen.get("dmarc") or "unknown"
    summary = (f"inspected (origin={seen.get('origin')}, source={seen.get('source') or '-'}),"
               f" {signed}, DMARC {dmarc} predicted; discarded, not delivered")
    if dmarc == "fail":
        return CheckResult(rid, p.name, "warning", summary,
                           ("Mail from this path would fail DMARC at receivers: sign it "
                            "([[dkim.keys]]) or align the envelope sender with SPF",), d)
    return CheckResult(rid, p.name, "ok", summary, (), d)
