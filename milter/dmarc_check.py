"""The receiver's DMARC verdict (aligned SPF pass or aligned DKIM pass), both generations.

The verdict itself is postwarden.milter.dmarc_verdict.judge, on the message's
evidence (the DKIM and SPF results the other checks see, the policy discovered
once per message for RFC 7489 and RFC 9989 receivers); this module says what it
means for the sender.

When both generations agree: dmarc.fail (data: the published policy; p=reject is
critical, the most severe finding), dmarc.none (no usable DMARC record: the text
says why), dmarc.temperror (record or evidence could not be fetched: no verdict).
When they disagree (a policy at an intermediate label, psd=, np= for a
non-existent subdomain, pct= vs t=, several records at the From domain): one
dmarc.generations_differ naming both outcomes, with the severity of the stricter
one, which is what a receiver may do. When one generation cannot be evaluated
(a DNS failure on the tree walk), the other's fail still stands as dmarc.fail and
anything else is dmarc.temperror. dmarc.no_from and dmarc.multiple_from as before
(receivers reject or junk such mail).
"""

from __future__ import annotations

from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.auth_results import FOREIGN_FIX, our_domains
from postwarden.milter.context import CheckContext
from postwarden.milter.dmarc_verdict import DomainVerdict, Outcome
from postwarden.orgdomain import aligned

_SEVERITY = {"reject": Severity.CRITICAL, "quarantine": Severity.ERROR,
             "none": Severity.WARNING}
_AT_RECEIVER = {
    "reject": "this message will be rejected at the receiver",
    "quarantine": "this message will go to the receiver's spam folder",
    "none": "receivers apply no DMARC policy but count it against the domain's reputation",
}


def _fix(domain: str, ours: bool | None) -> str:
    """ours: the domain is one of ours (True), foreign (False), unknown (None)."""
    own = (f"sign it with a key of {domain} ([dkim] sign, or OpenDKIM before postwarden) "
           f"or send it with an envelope sender in {domain} whose SPF covers this host")
    foreign = FOREIGN_FIX
    if ours is None:
        return f"{own}; if {domain} is not yours, {foreign}"
    return own if ours else f"{domain} is not a domain of this host: {foreign}"


def _data(domain: str, o: Outcome) -> dict[str, object]:
    p, rec = o.policy, o.policy.record
    return {"domain": domain, "result": o.result, "policy": p.worst or p.policy,
            "requested": p.policy, "tag": p.tag, "p": rec.p if rec else "",
            "sp": rec.sp if rec else "", "pct": rec.pct if rec else 100,
            "record_at": p.found_at, "adkim": rec.adkim if rec else "r",
            "aspf": rec.aspf if rec else "r"}


def _agreed(domain: str, o: Outcome, ours: set[str], gen: str = "both") -> Finding | None:
    p = o.policy
    if o.result == "temperror":
        return Finding("dmarc.temperror", Severity.WARNING,
                       f"DMARC verdict for {domain} unknown: {o.error or p.error}; check the "
                       "DNS resolver postwarden uses ([dns] nameservers)",
                       {**_data(domain, o), "error": o.error or p.error, "generation": gen})
    if o.result == "none":
        why = "; ".join(p.notes) or "no DMARC record"
        return Finding("dmarc.none", Severity.WARNING,
                       f"no usable DMARC record for the From domain {domain}, receivers "
                       f"apply no DMARC to it ({why}); publish one record \"v=DMARC1; p=none; "
                       f"rua=mailto:dmarc@{domain}\" at _dmarc.{domain}, then move to "
                       "p=quarantine once reports show your mail passes",
                       {"domain": domain, "notes": list(p.notes), "generation": gen})
    if o.result == "fail":
        org_ours = any(aligned(domain, d) for d in ours) if ours else None
        applied, said = p.worst, p.describe()
        how = f"p={applied}" + ("" if said == f"p={applied}" else f" (from {said})")
        return Finding("dmarc.fail", _SEVERITY[applied],
                       f"the From domain {domain} publishes {how} and this message passes "
                       "neither aligned SPF nor aligned DKIM; "
                       f"{_AT_RECEIVER[applied]}: {_fix(domain, org_ours)}",
                       {**_data(domain, o), "generation": gen})
    return None


def _differ(domain: str, a: Outcome, b: Outcome, ours: set[str]) -> Finding:
    strict = max((a, b), key=lambda o: o.rank)
    p = strict.policy
    severity = _SEVERITY[p.worst] if strict.result == "fail" else Severity.WARNING
    tail = ""
    if strict.result == "fail":
        org_ours = any(aligned(domain, d) for d in ours) if ours else None
        tail = (f"; under RFC {p.generation} {_AT_RECEIVER[p.worst]}: "
                f"{_fix(domain, org_ours)}")
    return Finding(
        "dmarc.generations_differ", severity,
        f"DMARC receivers disagree on the From domain {domain}: RFC 7489 {a.describe()}; "
        f"RFC 9989 {b.describe()}{tail}; publish one explicit record at _dmarc.{domain} "
        "so both read the same policy",
        {**_data(domain, strict), "generation": p.generation,
         "rfc7489": {"result": a.result, **a.policy.to_dict()},
         "rfc9989": {"result": b.result, **b.policy.to_dict()}})


def _finding(d: DomainVerdict, ours: set[str]) -> Finding | None:
    if d.kind == "differ":
        return _differ(d.domain, d.rfc7489, d.rfc9989, ours)
    gen = "both" if d.kind == "agree" else d.strict.policy.generation
    return _agreed(d.domain, d.strict, ours, gen)


def check_dmarc(msg: Message, ctx: CheckContext) -> list[Finding]:
    ev = ctx.evidence(msg)
    domains = ev.from_domains()
    if not domains:
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
    ours = our_domains(ctx.services.config)
    for d in ev.dmarc().domains:
        f = _finding(d, ours)
        if f is not None:
            out.append(f)
    return out


def dmarc_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """The pipeline entry point: findings from the one verdict (dmarc_verdict.judge)."""
    return check_dmarc(msg, ctx)
