"""Which of postwarden's own switches would have fixed a defect it reports.

A fix that ran is judged by the outgoing message (postwarden.milter.pipeline), so
what it cured is not reported. What a fix could have cured while it is switched
off is reported with the switch named, so the admin knows the one line to change.
"""

from __future__ import annotations

from dataclasses import replace

from postwarden.config import Config
from postwarden.findings import Finding
from postwarden.message import Origin
from postwarden.milter.auth_results import is_ours
from postwarden.orgdomain import aligned


def sign_switch(cfg: Config, origin: Origin, domain: str) -> str:
    """`; ... ([dkim] sign = false)`: what keeps postwarden from signing for `domain`
    although a key of it is configured; '' when nothing does."""
    if not domain or not any(aligned(k.domain, domain) for k in cfg.dkim.keys):
        return ""
    if not cfg.dkim.sign:
        return "; postwarden has a key for it but does not sign ([dkim] sign = false)"
    if origin.value not in cfg.dkim.sign_origins:
        return (f"; postwarden has a key for it but does not sign {origin} mail "
                f"([dkim] sign_origins = {cfg.dkim.sign_origins})")
    return ""


def rewrite_switch(cfg: Config, origin: Origin, domain: str) -> str:
    """What keeps the From rewrite from curing a DMARC fail of the foreign `domain`."""
    fr = cfg.from_rewrite
    if not domain or is_ours(cfg, domain):
        return ""
    if not fr.enabled:
        return ("postwarden would send it with a From of your own domain and the visitor "
                "in Reply-To ([from_rewrite] enabled = false)")
    if origin.value not in fr.origins:
        return (f"postwarden does not rewrite the From of {origin} mail "
                f"([from_rewrite] origins = {fr.origins})")
    return ""


def with_switch(cfg: Config, origin: Origin, f: Finding) -> Finding:
    """A DMARC fail with the switch that would cure it first in its advice."""
    if f.id != "dmarc.fail" and not (f.id == "dmarc.generations_differ"
                                     and f.data.get("result") == "fail"):
        return f
    domain = str(f.data.get("domain", ""))
    why = rewrite_switch(cfg, origin, domain) or sign_switch(cfg, origin, domain).lstrip("; ")
    if not why:
        return f
    return replace(f, advice=(why, *f.advice))  # the same finding, one more step
