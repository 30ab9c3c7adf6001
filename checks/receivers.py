"""`feedback.receivers`: what receivers answered our mail over the window.

From the delivery results the feedback reader stored (postwarden.feedback.summary):
rejections by reply class and receiver domain, and the loud case, authentication
rejections of mail postwarden predicted to pass DMARC. No store is `unknown`;
no delivery result at all is `info` (nothing sent, or the reader is off: the
summary says to look), never `ok`.
"""

from __future__ import annotations

import json
from typing import Any

from postwarden.checks.report import CheckResult, Status
from postwarden.feedback import summary
from postwarden.feedback.logline import printable
from postwarden.findings import Finding
from postwarden.store.feedback import OUTBOUND_RETENTION

CHECK_ID = "feedback.receivers"
MISMATCH = "dmarc_report.mismatch"
FOREIGN = "dmarc_report.foreign_ip"
_SERIOUS = ("blocklist", "auth", "reputation", "rdns")


def check(store: Any, now: float, window: float = OUTBOUND_RETENTION) -> Finding:
    if store is None:
        return CheckResult(CHECK_ID, "", "unknown", "no store: receivers' replies unknown",
                           ("Check [store] in the config",), {})
    try:
        data = summary.collect(store, now, window)
    except Exception as e:  # any backend failure is a state here
        return CheckResult(CHECK_ID, "", "unknown", f"store failed: {e}", (), {})
    days = f"{window / 86400:g} days"
    details: dict[str, Any] = {
        "window_days": window / 86400, "attempts": data["attempts"], "sent": data["sent"],
        "by_class": data["by_class"],
        "by_receiver": {r["receiver"]: {k: r[k] for k in ("delivered", "deferred", "bounced",
                                                          "by_class")}
                        for r in data["receivers"]},
        "mismatches": data["mismatches"],
    }
    if not data["attempts"]:
        return CheckResult(CHECK_ID, "", "info",
                           f"no delivery results in {days}: is the feedback reader on?",
                           ("See the daemon's `feedback:` start-up line; set [feedback] "
                            "log_file",), details)
    rejected = sum(data["by_class"].values())
    classes = {k.split(":", 1)[1] for k in data["by_class"]}
    summary_text = (f"{data['attempts']} delivery attempts in {days}, {rejected} deferred or "
                    f"bounced" + (f" ({', '.join(f'{k}={n}' for k, n in data['by_class'].items())})"
                                  if rejected else ""))
    status: Status = "ok"
    advice: tuple[str, ...] = ()
    if data["mismatches"]:
        m = data["mismatches"][0]
        status = "critical"
        summary_text = (f"MISMATCH: predicted dmarc=pass; {m['receiver']} answered {m['dsn']} "
                        f"({len(data['mismatches'])} such); " + summary_text)
        advice = ("Compare the message's DKIM/SPF evidence with what the receiver saw: "
                  "a key rotated, a forwarder, or a signature broken in transit",)
    elif classes & set(_SERIOUS):
        status = "warning"
        advice = ("`postwarden status` shows the sources and the replies",)
    elif rejected:
        status = "info"
    return CheckResult(CHECK_ID, "", status, summary_text, advice, details)


def dmarc_report_checks(store: Any, now: float, window: float = OUTBOUND_RETENTION
                        ) -> list[Finding]:
    """The findings of the DMARC aggregate reports imported within the window
    (`postwarden dmarc-reports`), one result per finding."""
    if store is None:
        return []
    try:
        stored = store.reports(now - window)
    except Exception as e:
        return [CheckResult(MISMATCH, "", "unknown", f"store failed: {e}", (), {})]
    out: list[Finding] = []
    for _key, _when, digest in stored:
        try:
            findings = json.loads(digest).get("findings", [])
        except (ValueError, AttributeError):
            continue
        for f in findings:
            if not isinstance(f, dict):
                continue
            raw = f.get("data")
            data: dict[str, Any] = raw if isinstance(raw, dict) else {}
            target = printable(str(data.get("source_ip", "")), 64)
            text = printable(str(f.get("text", "")), 400)
            if f.get("id") == MISMATCH:
                out.append(CheckResult(MISMATCH, target, "critical", text,
                                       ("Compare with the message evidence: `postwarden "
                                        "status`, the mail log by queue ID",), data))
            elif f.get("id") == FOREIGN:
                status: Status = "info" if data.get("dmarc") == "pass" else "warning"
                out.append(CheckResult(FOREIGN, target, status, text,
                                       ("Add a legitimate sender to SPF and DKIM; "
                                        "otherwise the domain is being spoofed (p=reject "
                                        "stops it)",), data))
    return out
