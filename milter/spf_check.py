"""SPF as the receiver will see it: our public sending IP(s), not the client.

For local mail the client is 127.0.0.1, which tells nothing: a receiver checks
the address our Postfix connects from, so the envelope sender's domain (the
HELO name, `[host] hostname`, for the null sender) is evaluated for every IP in
`[host] ips`, by the shared evaluator in postwarden.spf (pyspf, its DNS through
our Resolver, so the message budget and the TTL cache apply). Results are kept
per (domain, identity, IP) for the shortest TTL seen while evaluating
(postwarden.spf.SpfResults). The outcome is evidence (Evidence.spf): the DMARC
verdict reads the same one.

Findings: spf.fail, spf.softfail, spf.neutral, spf.none, spf.permerror,
spf.temperror (DNS failure or budget spent: not cached, mail goes on), and
spf.unaligned (MAIL FROM organizational domain differs from the From domain;
exact domain when the From domain's DMARC record says aspf=s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from postwarden.config import Config
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.auth_results import FOREIGN_FIX, SpfOutcome, foreign
from postwarden.milter.context import CheckContext
from postwarden.milter.dmarc_verdict import dkim_passes
from postwarden.orgdomain import aligned
from postwarden.spf import SpfResults

if TYPE_CHECKING:
    from postwarden.milter.evidence import Evidence

# Worst first: the outcome over several IPs is the worst one a receiver may see.
_WORST = ("permerror", "fail", "temperror", "softfail", "neutral", "none", "pass")


def outcome(msg: Message, cfg: Config, resolver: Resolver, budget: Budget | None,
            results: SpfResults) -> SpfOutcome | None:
    """SPF for this message at the receiver; None when no sending IP is configured."""
    ips = cfg.host.ips
    if not ips:
        return None
    helo = cfg.host.hostname
    domain = msg.mail_from_domain
    identity, sender = "mailfrom", msg.mail_from
    if not msg.mail_from or not domain:
        identity, domain, sender = "helo", helo.lower().rstrip("."), ""
    if not domain:
        return SpfOutcome("", identity, "none", explanation="no domain to check")
    per_ip: list[tuple[str, str]] = []
    explanation = ""
    for ip in ips:
        ev = results.evaluate(domain, identity, ip, sender, helo, resolver, budget)
        per_ip.append((ip, ev.result))
        explanation = explanation or (ev.explanation if ev.result != "pass" else "")
    worst = min((r for _, r in per_ip), key=_WORST.index)
    return SpfOutcome(domain, identity, worst, tuple(per_ip), explanation)


_SEVERITY = {"fail": Severity.ERROR, "permerror": Severity.ERROR,
             "softfail": Severity.WARNING, "neutral": Severity.WARNING,
             "none": Severity.WARNING, "temperror": Severity.WARNING}


def _text(o: SpfOutcome) -> str:
    ips = " ".join(ip for ip, r in o.per_ip if r != "pass") or "our IPs"
    who = f"HELO name {o.domain}" if o.identity == "helo" else f"envelope sender domain {o.domain}"
    mech = " ".join(f"ip{'6' if ':' in ip else '4'}:{ip}" for ip, r in o.per_ip if r != "pass")
    if o.result == "none":
        return f"{who} publishes no SPF record; publish \"v=spf1 {mech} -all\" at {o.domain}"
    if o.result == "permerror":
        return (f"SPF record of {who} is broken ({o.explanation}); receivers treat it as "
                f"a failure: fix the record (at most 10 DNS-querying terms) and include {mech}")
    if o.result == "temperror":
        return (f"SPF of {who} could not be evaluated ({o.explanation}); check the DNS "
                "resolver postwarden uses ([dns] nameservers)")
    return (f"SPF {o.result} for {who} from {ips}: receivers will see this host as "
            f"{'not allowed' if o.result in ('fail', 'softfail') else 'not authorised'}; "
            f"add {mech} to the SPF record of {o.domain}")


def check_spf(msg: Message, ctx: CheckContext, results: SpfResults | None = None
              ) -> list[Finding]:
    ev = ctx.evidence(msg)
    o = ev.spf(results)
    if o is None:
        return []
    out: list[Finding] = []
    if o.result != "pass":
        out.append(Finding(f"spf.{o.result}", _SEVERITY.get(o.result, Severity.WARNING),
                           _text(o), {"domain": o.domain, "identity": o.identity,
                                      "ips": dict(o.per_ip), "explanation": o.explanation}))
    for dom in ev.from_domains():
        mode = ev.alignment_mode(dom, "aspf")
        if o.domain and not aligned(o.domain, dom, mode):
            dkim_ok = dkim_passes(ev, dom)
            exact = " (its DMARC record asks aspf=s: exact domain)" if mode == "s" else ""
            if foreign(ctx.services.config, dom):
                fix = f"{dom} is not one of this host's domains: {FOREIGN_FIX}"
            else:
                fix = (f"send with an envelope sender in {dom} (sendmail -f, PHP mail() fifth "
                       f"argument) or sign with a key of {dom}")
            out.append(Finding(
                "spf.unaligned", Severity.INFO if dkim_ok else Severity.WARNING,
                f"envelope sender domain {o.domain} does not align with the From domain "
                f"{dom}{exact}, so SPF cannot make DMARC pass"
                f"{'; DKIM does' if dkim_ok else ''}; {fix}",
                {"mail_from_domain": o.domain, "from_domain": dom, "aspf": mode}))
            break
    return out


def summary(ev: Evidence) -> str:
    """`spf=` of the summary line: the worst result over our IPs, unknown without IPs."""
    o = ev.spf()
    return o.result if o is not None else "unknown"


class SpfCheck:
    """The pipeline's SPF check; `results`: the (domain, identity, IP) cache it uses."""

    def __init__(self, clock: Callable[[], float] | None = None,
                 results: SpfResults | None = None) -> None:
        self.results = results or (SpfResults(clock) if clock else SpfResults())

    def __call__(self, msg: Message, ctx: CheckContext) -> list[Finding]:
        return check_spf(msg, ctx, self.results)
