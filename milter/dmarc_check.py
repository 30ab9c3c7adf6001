"""The receiver's DMARC verdict (RFC 7489): aligned SPF pass or aligned DKIM pass.

Runs after the DKIM and SPF checks and reads their results from ctx.memo; the
From domain's DMARC record (with organizational-domain fallback) is fetched
once per message. Findings: dmarc.fail (data: the published policy; p=reject
is critical, the most severe finding), dmarc.none (no DMARC published),
dmarc.temperror (record or the evidence could not be fetched: no verdict),
dmarc.no_from and dmarc.multiple_from (receivers reject or junk such mail).
"""

from __future__ import annotations

from postwarden.dmarc_record import DmarcLookup
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.auth_results import (
    DKIM,
    FOREIGN_FIX,
    SPF,
    DkimSignature,
    SpfOutcome,
    dmarc_for,
    from_domains,
    our_domains,
)
from postwarden.milter.pipeline import CheckContext
from postwarden.orgdomain import aligned

_SEVERITY = {"reject": Severity.CRITICAL, "quarantine": Severity.ERROR,
             "none": Severity.WARNING}
_AT_RECEIVER = {
    "reject": "this message will be rejected at the receiver",
    "quarantine": "this message will go to the receiver's spam folder",
    "none": "receivers apply no DMARC policy but count it against the domain's reputation",
}


def verdict(domain: str, rec: DmarcLookup, spf: SpfOutcome | None,
            sigs: list[DkimSignature]) -> tuple[str, list[str]]:
    """('pass'|'fail'|'temperror', what passed) for one From domain with a record."""
    assert rec.record is not None
    passed: list[str] = []
    # RFC 7489 3.1.2: for the null sender the SPF identity is the HELO name.
    if spf is not None and spf.result == "pass" and aligned(spf.domain, domain,
                                                            rec.record.aspf):
        passed.append(f"spf:{spf.domain}")
    passed += [f"dkim:{s.domain}" for s in sigs
               if s.counts and aligned(s.domain, domain, rec.record.adkim)]
    if passed:
        return "pass", passed
    temp = (spf is not None and spf.result == "temperror") or any(
        s.status == "temperror" and aligned(s.domain, domain, rec.record.adkim) for s in sigs)
    return ("temperror" if temp else "fail"), passed


def _fix(domain: str, ours: bool | None) -> str:
    """ours: the domain is one of ours (True), foreign (False), unknown (None)."""
    own = (f"sign it with a key of {domain} ([dkim] sign, or OpenDKIM before postwarden) "
           f"or send it with an envelope sender in {domain} whose SPF covers this host")
    foreign = FOREIGN_FIX
    if ours is None:
        return f"{own}; if {domain} is not yours, {foreign}"
    return own if ours else f"{domain} is not a domain of this host: {foreign}"


def check_dmarc(msg: Message, ctx: CheckContext) -> list[Finding]:
    domains = from_domains(msg)
    if not domains:
        ctx.summary["dmarc"] = "none"
        return [Finding("dmarc.no_from", Severity.ERROR,
                        "the message has no From address; receivers reject or junk it: "
                        "make the sending program set a From header with one address", {})]
    out: list[Finding] = []
    if len(msg.from_addresses) > 1 or len(msg.header_all("From")) > 1:
        out.append(Finding(
            "dmarc.multiple_from", Severity.ERROR,
            f"the message has {len(msg.from_addresses)} From addresses; many receivers "
            "reject such mail (RFC 7489 6.6.1): use one From address and put the others "
            "in Reply-To", {"domains": domains}))
    spf: SpfOutcome | None = ctx.memo.get(SPF)
    sigs: list[DkimSignature] = ctx.memo.get(DKIM, [])
    ours = our_domains(ctx.services.config)
    states: list[str] = []
    for domain in domains:
        rec = dmarc_for(ctx, domain)
        if rec.status == "temperror":
            states.append("temperror")
            out.append(Finding(
                "dmarc.temperror", Severity.WARNING,
                f"DMARC record of {domain} could not be fetched ({rec.error}); check the DNS "
                "resolver postwarden uses ([dns] nameservers)",
                {"domain": domain, "error": rec.error}))
            continue
        if rec.record is None:
            states.append("none")
            note = f" ({rec.notes[0]})" if rec.notes else ""
            out.append(Finding(
                "dmarc.none", Severity.WARNING,
                f"the From domain {domain} publishes no DMARC record{note}; publish "
                f"\"v=DMARC1; p=none; rua=mailto:dmarc@{domain}\" at _dmarc.{domain}, "
                "then move to p=quarantine once reports show your mail passes",
                {"domain": domain}))
            continue
        state, _passed = verdict(domain, rec, spf, sigs)
        states.append(state)
        policy = rec.policy
        data = {"domain": domain, "policy": policy, "p": rec.record.p,
                "sp": rec.record.sp, "pct": rec.record.pct, "record_at": rec.found_at,
                "adkim": rec.record.adkim, "aspf": rec.record.aspf}
        if state == "temperror":
            out.append(Finding(
                "dmarc.temperror", Severity.WARNING,
                f"DMARC verdict for {domain} unknown: SPF or DKIM evidence could not be "
                "fetched in time; check the DNS resolver postwarden uses", data))
        elif state == "fail":
            org_ours = any(aligned(domain, d) for d in ours) if ours else None
            out.append(Finding(
                "dmarc.fail", _SEVERITY[policy],
                f"the From domain {domain} publishes p={policy} and this message passes "
                f"neither aligned SPF nor aligned DKIM; {_AT_RECEIVER[policy]}: "
                f"{_fix(domain, org_ours)}", data))
    ctx.summary["dmarc"] = ("fail" if "fail" in states else "temperror" if "temperror" in states
                            else "none" if "none" in states else "pass")
    return out


def dmarc_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """The pipeline entry point (after the DKIM and SPF checks)."""
    return check_dmarc(msg, ctx)
