"""Postfix audit: read the live config with `postconf` / `postconf -P`, judge it.

Gathering (subprocess) is apart from judging (pure functions on `PostfixFacts`),
so the rules are unit-tested on plain data and end-to-end on a private instance
(`postconf -c DIR`). Every problem comes with the exact `postconf -e` line or
master.cf line that fixes it. If postconf cannot run, the audit is `unknown`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from postwarden.checks.report import CheckResult
from postwarden.findings import Finding

PARAMS = (
    "smtpd_milters", "non_smtpd_milters", "milter_default_action", "myhostname",
    "smtp_helo_name", "inet_protocols", "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions", "mynetworks", "content_filter", "smtp_bind_address",
    "smtp_bind_address6", "mydomain", "config_directory", "smtpd_sasl_auth_enable",
    "smtpd_tls_security_level", "smtpd_tls_auth_only", "smtpd_client_restrictions",
    "queue_directory",
)
SPAM_FILTERS = ("rspamd", "spamass", "spamassassin", "amavis", "mailscanner", "mimedefang",
                "clamav-milter", "spampd")
_OPEN_NETS = ("0.0.0.0/0", "::/0", "[::]/0", "0/0", "0.0.0.0/1", "128.0.0.0/1")


@dataclass
class PostfixFacts:
    """What `postconf` says: main.cf values and per-service overrides."""

    config_dir: str
    main: dict[str, str]
    services: dict[str, dict[str, str]] = field(default_factory=dict)  # "name/type" -> -o
    commands: dict[str, str] = field(default_factory=dict)  # "name/type" -> command
    chroot: dict[str, str] = field(default_factory=dict)  # "name/type" -> y / n / -

    def effective(self, service: str, param: str) -> str:
        return self.services.get(service, {}).get(param, self.main.get(param, ""))


def _postconf(args: list[str], config_dir: str) -> str:
    exe = shutil.which("postconf") or "/usr/sbin/postconf"
    cmd = [exe, *(["-c", config_dir] if config_dir else []), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=20).stdout


def gather(config_dir: str = "") -> PostfixFacts:
    """Read main.cf values, master.cf services and -o overrides. OSError/CalledProcessError
    propagate: the caller reports the audit unknown."""
    main: dict[str, str] = {}
    for line in _postconf(["-x", *PARAMS], config_dir).splitlines():
        k, sep, v = line.partition(" = ")
        if sep:
            main[k.strip()] = v.strip()
        elif line.endswith(" ="):
            main[line[:-2].strip()] = ""
    services: dict[str, dict[str, str]] = {}
    for line in _postconf(["-P"], config_dir).splitlines():
        left, sep, v = line.partition(" = ")
        if not sep:
            left, v = line.rstrip(" ="), ""
        parts = left.strip().rsplit("/", 2)
        if len(parts) == 3:
            services.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = v.strip()
    commands: dict[str, str] = {}
    chroot: dict[str, str] = {}
    for line in _postconf(["-M"], config_dir).splitlines():
        f = line.split()
        if len(f) >= 8:
            commands[f"{f[0]}/{f[1]}"] = " ".join(f[7:])
            chroot[f"{f[0]}/{f[1]}"] = f[4]
    return PostfixFacts(config_dir or main.get("config_directory", "/etc/postfix"), main,
                        services, commands, chroot)


def _items(value: str) -> list[str]:
    return [x for x in value.replace(",", " ").split() if x]


def _has_postwarden(milters: str, marker: str) -> bool:
    return any(m in milters for m in (marker, "postwarden"))


def audit(facts: PostfixFacts, socket_marker: str = "postwarden",
          ipv6_without_ptr: list[str] | None = None) -> list[Finding]:
    """Judge the facts: one result per aspect (`postfix.<aspect>`)."""
    t = facts.config_dir
    out = [
        _milters(facts, t, socket_marker),
        _default_action(facts, t),
        _submission(facts, t),
        _relay(facts, t),
        _myhostname(facts, t),
        _inet_protocols(facts, t, ipv6_without_ptr or []),
    ]
    return out


def _milters(f: PostfixFacts, t: str, marker: str) -> Finding:
    smtpd, non = f.main.get("smtpd_milters", ""), f.main.get("non_smtpd_milters", "")
    d: dict[str, Any] = {"smtpd_milters": smtpd, "non_smtpd_milters": non}
    spec = "{ unix:postwarden/postwarden.sock, default_action=accept }"
    missing = []
    if not _has_postwarden(smtpd, marker):
        missing.append("smtpd_milters")
    if not _has_postwarden(non, marker):
        missing.append("non_smtpd_milters")
    advice = []
    if "smtpd_milters" in missing:
        advice.append(f"postconf -e 'smtpd_milters = {smtpd + ', ' if smtpd else ''}{spec}'")
    if "non_smtpd_milters" in missing:
        advice.append("postconf -e 'non_smtpd_milters = $smtpd_milters' "
                      "(PHP mail() and sendmail never pass smtpd)")
    bypass = [s for s, o in f.services.items()
              if "smtpd_milters" in o and not _has_postwarden(o["smtpd_milters"], marker)
              and _is_submission(f, s)]
    if bypass:
        d["bypassing_services"] = bypass
    if missing:
        return CheckResult("postfix.milters", t, "critical",
                           f"postwarden is not in {' and '.join(missing)}", tuple(advice), d)
    if bypass:
        return CheckResult("postfix.milters", t, "warning",
                           f"submission service {', '.join(bypass)} overrides smtpd_milters "
                           "without postwarden",
                           (f"Remove '-o smtpd_milters=...' from {bypass[0]} in master.cf",), d)
    return CheckResult("postfix.milters", t, "ok",
                       "postwarden is in smtpd_milters and non_smtpd_milters", (), d)


def _default_action(f: PostfixFacts, t: str) -> Finding:
    action = f.main.get("milter_default_action", "tempfail")
    milters = f.main.get("smtpd_milters", "") + f.main.get("non_smtpd_milters", "")
    per_milter = "default_action=accept" in milters.replace(" ", "")
    d = {"milter_default_action": action, "per_milter_accept": per_milter}
    if action == "tempfail" and not per_milter:
        return CheckResult("postfix.milter_default_action", t, "warning",
                           "milter_default_action = tempfail: mail stops while postwarden "
                           "is down", ("postconf -e 'milter_default_action = accept'",), d)
    return CheckResult("postfix.milter_default_action", t, "ok",
                       f"a dead milter does not stop mail ({action}"
                       f"{', per-milter accept' if per_milter else ''})", (), d)


def _is_submission(f: PostfixFacts, service: str) -> bool:
    name, _, kind = service.partition("/")
    o = f.services.get(service, {})
    return kind == "inet" and (
        name in ("submission", "587") or name.endswith(":587") or name.endswith(":submission")
        or o.get("milter_macro_daemon_name") == "ORIGINATING"
        or o.get("smtpd_sasl_auth_enable") == "yes")


def _submission(f: PostfixFacts, t: str) -> Finding:
    subs = sorted(s for s in set(f.services) | set(f.commands)
                  if _is_submission(f, s) and f.commands.get(s, "smtpd").startswith("smtpd"))
    if not subs:
        return CheckResult("postfix.submission", t, "warning",
                           "no submission service (port 587 with SASL and TLS)",
                           ("Add the submission service to master.cf (postfix-examples/"
                            "master.cf): submission inet n - y - - smtpd -o "
                            "smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes "
                            "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject",),
                           {"services": []})
    problems: list[str] = []
    advice: list[str] = []
    for s in subs:
        sasl = f.effective(s, "smtpd_sasl_auth_enable") == "yes"
        tls = (f.effective(s, "smtpd_tls_security_level") == "encrypt"
               or f.effective(s, "smtpd_tls_auth_only") == "yes")
        relay = f.effective(s, "smtpd_relay_restrictions")
        name = s.split("/")[0]
        if not sasl:
            problems.append(f"{name}: SASL not enabled")
            advice.append(f"master.cf {name}: -o smtpd_sasl_auth_enable=yes")
        if not tls:
            problems.append(f"{name}: TLS not required")
            advice.append(f"master.cf {name}: -o smtpd_tls_security_level=encrypt")
        if sasl and "permit_sasl_authenticated" not in relay:
            problems.append(f"{name}: relay not limited to authenticated clients")
            advice.append(f"master.cf {name}: "
                          "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject")
    d = {"services": [s.split("/")[0] for s in subs], "problems": problems}
    if problems:
        return CheckResult("postfix.submission", t, "warning", "; ".join(problems),
                           tuple(advice), d)
    return CheckResult("postfix.submission", t, "ok",
                       f"submission ({', '.join(d['services'])}) requires SASL and TLS", (), d)


def open_relay_reason(restrictions: str, mynetworks: str) -> str:
    """Why this restriction list relays for anyone, or '' if it does not."""
    for net in _items(mynetworks):
        if net in _OPEN_NETS:
            return f"mynetworks contains {net}"
    for r in _items(restrictions):
        if r in ("reject_unauth_destination", "defer_unauth_destination", "reject", "defer"):
            return ""
        if r in ("permit", "permit_auth_destination_or_relay"):
            return f"'{r}' comes before reject_unauth_destination"
    return "no reject_unauth_destination (or final reject)"


def _relay(f: PostfixFacts, t: str) -> Finding:
    relay = f.main.get("smtpd_relay_restrictions", "")
    rcpt = f.main.get("smtpd_recipient_restrictions", "")
    nets = f.main.get("mynetworks", "")
    reason = open_relay_reason(relay, nets) if relay else ""
    if reason and rcpt:  # postfix applies both: the recipient list may still stop relaying
        reason = open_relay_reason(rcpt, nets) and reason
    elif not relay:
        reason = open_relay_reason(rcpt, nets)
    d = {"smtpd_relay_restrictions": relay, "smtpd_recipient_restrictions": rcpt,
         "mynetworks": nets}
    if reason:
        return CheckResult("postfix.relay", t, "critical", f"open relay: {reason}",
                           ("postconf -e 'smtpd_relay_restrictions = permit_mynetworks, "
                            "permit_sasl_authenticated, reject_unauth_destination'",
                            "postconf -e 'mynetworks = 127.0.0.0/8 [::1]/128'"), d)
    return CheckResult("postfix.relay", t, "ok", "not an open relay", (), d)


def _myhostname(f: PostfixFacts, t: str) -> Finding:
    from postwarden.checks.rdns import is_fqdn

    name = f.main.get("myhostname", "")
    if not is_fqdn(name):
        return CheckResult("postfix.myhostname", t, "critical",
                           f"myhostname = {name or '(empty)'} is not an FQDN",
                           ("postconf -e 'myhostname = mail.example.com' (your PTR name)",),
                           {"myhostname": name})
    return CheckResult("postfix.myhostname", t, "ok", f"myhostname = {name}", (),
                       {"myhostname": name})


def _inet_protocols(f: PostfixFacts, t: str, ipv6_without_ptr: list[str]) -> Finding:
    proto = f.main.get("inet_protocols", "all")
    v6 = proto in ("all", "") or "ipv6" in proto
    d = {"inet_protocols": proto, "ipv6_without_ptr": ipv6_without_ptr}
    if v6 and ipv6_without_ptr:
        return CheckResult("postfix.inet_protocols", t, "warning",
                           f"Postfix sends over IPv6 but {', '.join(ipv6_without_ptr)} has "
                           "no PTR: IPv6 receivers (Gmail) reject it",
                           ("Publish a PTR for the IPv6 address, or "
                            "postconf -e 'inet_protocols = ipv4'",), d)
    return CheckResult("postfix.inet_protocols", t, "ok", f"inet_protocols = {proto}", (), d)


def spam_filter(f: PostfixFacts) -> list[str]:
    """Content filters / milters that are spam filters (for the seed's checklist)."""
    blob = " ".join([f.main.get("smtpd_milters", ""), f.main.get("non_smtpd_milters", ""),
                     f.main.get("content_filter", ""),
                     *(o.get("content_filter", "") + " " + o.get("smtpd_milters", "")
                       for o in f.services.values()),
                     *f.commands.values(), *f.commands.keys()]).lower()
    return sorted({name for name in SPAM_FILTERS if name in blob})


def bind_addresses(f: PostfixFacts) -> list[str]:
    """Distinct smtp_bind_address values (main.cf and per transport)."""
    found = {f.main.get("smtp_bind_address", ""), f.main.get("smtp_bind_address6", "")}
    for o in f.services.values():
        found.add(o.get("smtp_bind_address", ""))
        found.add(o.get("smtp_bind_address6", ""))
    return sorted(a for a in found if a)
