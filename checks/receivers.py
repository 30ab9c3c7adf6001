"""`feedback.receivers`: what receivers answered our mail over the window.

From the delivery results the feedback reader stored (postwarden.feedback.summary):
rejections by reply class and receiver domain, and the loud case, authentication
rejections of mail postwarden predicted to pass DMARC. No store is `unknown`;
no delivery result at all is `info` (nothing sent, or the reader is off: the
summary says to look), never `ok`.
"""

from __future__ import annotations

from typing import Any

from postwarden.checks.report import CheckResult, Status
from postwarden.feedback import summary
from postwarden.store.feedback import OUTBOUND_RETENTION

CHECK_ID = "feedback.receivers"
_SERIOUS = ("blocklist", "auth", "reputation", "rdns")


def check(store: Any, now: float, window: float = OUTBOUND_RETENTION) -> CheckResult:
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
