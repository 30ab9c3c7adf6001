"""The automatic reaction's per-message side: flag form mail while we are listed.

The periodic self-check turns `periodic.reaction` on while a sending IP is
UCEPROTECT L1- or L2-listed and `[selfcheck] hold_forms_when_listed` is true.
This check only reports `uceprotect.listed_form` for form-classified mail
(forms_check put the Source in ctx.memo); postwarden.policy decides the hold.
"""

from __future__ import annotations

from postwarden.checks.periodic import reaction
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.forms import MEMO_SOURCE
from postwarden.milter.pipeline import CheckContext

FINDING = "uceprotect.listed_form"


def listed_form_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    if not reaction.active:
        return []
    source = ctx.memo.get(MEMO_SOURCE)
    if source is None or not getattr(source, "form", False):
        return []
    return [Finding(FINDING, Severity.WARNING,
                    f"form mail while {reaction.why} is listed on UCEPROTECT",
                    {"source": getattr(source, "key", ""), "listed": reaction.why})]
