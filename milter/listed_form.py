"""Form mail while a sending IP is UCEPROTECT L1/L2-listed: `uceprotect.listed_form`.

The periodic self-check publishes the listings in the HostState (Services.host);
this check reports every form-classified message (Evidence.source) while one is
listed, whatever `[selfcheck] hold_forms_when_listed` says:
that switch only makes postwarden.policy hold it. Before the first self-check run
nothing is known to be listed, so nothing is reported.
"""

from __future__ import annotations

from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.context import CheckContext

FINDING = "uceprotect.listed_form"


def listed_form_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    listed = ctx.services.host.snapshot().listed()
    if not listed:
        return []
    source = ctx.evidence(msg).source()
    if not source.form:
        return []
    why = ", ".join(str(x) for x in listed)
    advice = ("check what the form sends (postqueue -p, the mail log)" if
              ctx.services.config.selfcheck.hold_forms_when_listed else
              "stop the form, or hold such mail with [selfcheck] hold_forms_when_listed = true",)
    return [Finding(FINDING, Severity.WARNING,
                    f"form mail from {source.key} while {why} is listed on UCEPROTECT",
                    {"source": source.key, "listed": why}, advice)]
