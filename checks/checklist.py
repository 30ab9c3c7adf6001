"""The seed article's yes/no checklist, answered from facts, and its verdict.

The article (../shared/seed/) ends: "If you answered NO to any of the above and
have sent emails from your domain within the last 7 days, you are at risk of
blacklisting." Each item here is answered from the other checks' results and a
few host facts. Items the issue marks informational (spam filter, separate IPs,
web forms) answer `no` as info; the verdict is a warning only when a core item
(records, hostname/ports, authentication) is `no` and mail was (or may have been)
sent in the last 7 days.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postwarden.checks.postfix_audit import PostfixFacts, bind_addresses, spam_filter
from postwarden.checks.report import CheckResult, Status
from postwarden.findings import Finding

_GOOD = ("ok", "info")
PHP_INI_GLOB = "/etc/php/*/*/php.ini"
_ADD_X_HEADER = re.compile(r"^\s*mail\.add_x_header\s*=\s*(\S+)", re.I | re.M)


@dataclass(frozen=True)
class Facts:
    facts: PostfixFacts | None
    forms_enabled: bool
    ratelimit_enabled: bool
    php_ini: tuple[str, ...] = ()


def php_ini_sets() -> list[list[str]]:
    """The files PHP reads, one list per SAPI, in the order PHP reads them.

    `php --ini` names the CLI's php.ini and every conf.d snippet it parses (where
    Debian admins set mail.add_x_header and sendmail_path). The web SAPIs (fpm,
    apache2, cgi) keep their own php.ini and conf.d beside it, read the same way.
    """
    sets: list[list[str]] = []
    php = shutil.which("php")
    if php:
        try:
            out = subprocess.run([php, "--ini"], capture_output=True, text=True,
                                 timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        loaded = re.search(r"^Loaded Configuration File:\s*(\S+)", out, re.M)
        extra = out.split("Additional .ini files parsed:", 1)[1] if \
            "Additional .ini files parsed:" in out else ""
        files = ([loaded.group(1)] if loaded and loaded.group(1) != "(none)" else [])
        files += [f.strip() for f in extra.replace("\n", " ").split(",")
                  if f.strip().endswith(".ini")]
        if files:
            sets.append(files)
    seen = {s[0] for s in sets if s}
    for ini in sorted(glob.glob(PHP_INI_GLOB)):
        if ini not in seen:
            sets.append(with_snippets(ini))
    return sets


def with_snippets(ini: str) -> list[str]:
    """php.ini and the conf.d/*.ini snippets PHP reads after it (later ones win)."""
    return [ini, *sorted(glob.glob(str(Path(ini).parent / "conf.d" / "*.ini")))]


def php_add_x_header(paths: Sequence[str]) -> dict[str, bool]:
    """php.ini path -> mail.add_x_header is On after its conf.d snippets (the last
    setting wins, as in PHP). A SAPI none of whose files can be read is left out:
    not looked at is not "off"."""
    sets = [with_snippets(p) for p in paths] if paths else php_ini_sets()
    out = {}
    for files in sets:
        value: str | None = None
        readable = False
        for f in files:
            try:
                text = Path(f).read_text(errors="replace")
            except OSError:
                continue
            readable = True
            values = _ADD_X_HEADER.findall(text)
            if values:
                value = values[-1]
        if readable:
            out[files[0]] = value is not None and value.strip('"\'').lower() in (
                "on", "1", "true", "yes")
    return out


def _answer(results: list[Finding], prefixes: tuple[str, ...]) -> tuple[str, list[str]]:
    """yes / no / unknown from every result whose id starts with one of the prefixes."""
    hits = [r for r in results if r.id.startswith(prefixes)]
    if not hits or any(not any(r.id.startswith(p) for r in hits) for p in prefixes):
        return "unknown", [f"{p}* not checked" for p in prefixes
                           if not any(r.id.startswith(p) for r in hits)]
    bad = [f"{r.id} {r.target}".strip() for r in hits if r.status not in _GOOD]
    if any(r.status in ("warning", "critical") for r in hits):
        return "no", bad
    # unknown, or an info result that says it did not look (no DKIM selector)
    blind = [f"{r.id} {r.target}".strip() for r in hits
             if r.status == "unknown" or r.details.get("checked") is False]
    if blind:
        return "unknown", blind
    return "yes", []


def _item(item_id: str, question: str, answer: str, why: str, core: bool,
          advice: tuple[str, ...] = (), details: dict[str, Any] | None = None) -> Finding:
    # An unknown core answer makes the run unknown; an informational one stays info
    # (its answer still says "unknown", never "yes").
    status: Status = "ok" if answer == "yes" else "unknown" if answer == "unknown" and core \
        else "info"
    d = {"question": question, "answer": answer, "core": core, **(details or {})}
    return CheckResult(f"checklist.{item_id}", "", status,
                       f"{question} {answer.upper()}{': ' + why if why else ''}", advice, d)


def answer(results: list[Finding], facts: Facts) -> list[Finding]:
    """Every checklist item plus `checklist.verdict`."""
    items: list[Finding] = []
    a, bad = _answer(results, ("spf.",))
    items.append(_item("spf", "Valid SPF record?", a, ", ".join(bad), True))
    a, bad = _answer(results, ("dkim.", "dmarc."))
    items.append(_item("dkim_dmarc", "DMARC and DKIM records configured correctly?", a,
                       ", ".join(bad), True))
    a, bad = _answer(results, ("helo", "postfix.myhostname", "postfix.submission"))
    items.append(_item("hostname_ports", "Correct hostname and submission port set up?", a,
                       ", ".join(bad), True))
    a, bad = _answer(results, ("postfix.submission", "postfix.relay"))
    items.append(_item("auth", "Authentication required before sending?", a, ", ".join(bad),
                       True))

    pf = facts.facts
    if pf is None:
        items.append(_item("spam_filter", "Internal spam filter in place?", "unknown",
                           "Postfix config not readable", False))
        items.append(_item("separate_ips", "Separate IPs for clean and filtered mail?",
                           "unknown", "Postfix config not readable", False))
    else:
        filters = spam_filter(pf)
        items.append(_item(
            "spam_filter", "Internal spam filter in place?", "yes" if filters else "no",
            ", ".join(filters) if filters else "no rspamd/SpamAssassin/amavis in the Postfix "
            "config", False,
            () if filters else ("Add a content filter or milter (rspamd: smtpd_milters = "
                                "..., inet:localhost:11332) that scores outbound mail too",),
            {"filters": filters}))
        binds = bind_addresses(pf)
        items.append(_item(
            "separate_ips", "Separate IPs for clean and filtered mail?",
            "yes" if len(binds) >= 2 else "no",
            f"smtp_bind_address: {', '.join(binds) or 'none'}", False,
            () if len(binds) >= 2 else ("A second transport with its own smtp_bind_address "
                                        "for mail your filter flags (info only)",),
            {"bind_addresses": binds}))

    php = php_add_x_header(facts.php_ini)
    forms_ok = facts.forms_enabled and facts.ratelimit_enabled
    php_ok = bool(php) and all(php.values())
    why = []
    if not forms_ok:
        why.append("postwarden form checks or rate limits are off")
    if not php:
        why.append("no readable PHP configuration (php --ini, /etc/php/*/*/php.ini)")
    elif not php_ok:
        why.append("mail.add_x_header is off in " +
                   ", ".join(p for p, on in php.items() if not on))
    forms_answer = "yes" if forms_ok and php_ok else "no" if not forms_ok or php else "unknown"
    items.append(_item(
        "forms", "Web forms protected against spam?",
        forms_answer, "; ".join(why), False,
        () if forms_ok and php_ok else ("Set mail.add_x_header = On in php.ini (shows which "
                                        "script sent each mail) and keep [forms] and "
                                        "[ratelimit] enabled; add a CAPTCHA to the forms",),
        {"php_ini": php}))

    act = next((r for r in results if r.id == "activity.7d"), None)
    sent: bool | None = None
    if act is not None and act.status != "unknown":
        sent = int(act.details.get("messages", 0)) > 0
    items.append(_item("sent_7d", "Mail sent from this host in the last 7 days?",
                       {True: "yes", False: "no", None: "unknown"}[sent], "", False))

    no_core = [i.id for i in items[:4] if i.details["answer"] == "no"]
    no_any = [i.id for i in items[:-1] if i.details["answer"] == "no"]
    unknown_core = [i.id for i in items[:4] if i.details["answer"] == "unknown"]
    d = {"no": no_any, "no_core": no_core, "unknown_core": unknown_core, "sent_7d": sent}
    if no_any and sent is not False:
        status: Status = "warning" if no_core else "info"
        when = "mail was sent in the last 7 days" if sent else "mail activity is unknown"
        verdict = CheckResult("checklist.verdict", "", status,
                              f"AT RISK of blacklisting: {len(no_any)} answer(s) NO and {when}",
                              ("Fix every NO above, then watch UCEPROTECT L1 for 7 days",), d)
    elif unknown_core:
        verdict = CheckResult("checklist.verdict", "", "unknown",
                              f"cannot tell: {len(unknown_core)} core answer(s) unknown "
                              f"({', '.join(unknown_core)})",
                              ("Fix what made those checks unknown (see above), then run "
                               "the self-check again",), d)
    elif no_any:
        verdict = CheckResult("checklist.verdict", "", "info",
                              "not at risk now (no mail in 7 days), but fix the NO answers "
                              "before sending", (), d)
    else:
        verdict = CheckResult("checklist.verdict", "", "ok", "every checklist answer is YES",
                              (), d)
    return [*items, verdict]
