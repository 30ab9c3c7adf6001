"""DKIM as a receiver will see it: present, aligned with From, valid, strong key.

Every DKIM-Signature counts, including one a signer before postwarden in the
milter chain added. Keys come through the shared Resolver (TTL cache, message
budget) and are read by the shared key-record parser (postwarden.dkimkeys), so a
key the self-check calls unusable is unusable here too. Findings: dkim.missing,
dkim.unaligned, dkim.invalid, dkim.weak_key, dkim.temperror. On temperror (DNS
timeout, budget spent) the signature is `temperror`, never `fail`: the finding
says so and mail goes on.

An rsa-sha1 signature is `fail`, whether or not it would verify, and without a
key lookup: RFC 8301 §3.1 says verifiers MUST NOT consider it valid. It is
`fail` rather than `permerror` because nothing in it is malformed or missing
(RFC 8601 §2.7.1 keeps permerror for syntax errors and absent keys): it is a
signature that does not authenticate the message, which is what DMARC sees at
the receiver, so it never counts as an aligned DKIM pass here either.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import dkim

from postwarden.dkimkeys import REFUSED_ALGORITHMS, TagError, parse_key_record, parse_tags
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.auth_results import FOREIGN_FIX, MIN_RSA_BITS, DkimSignature, foreign
from postwarden.milter.context import CheckContext
from postwarden.milter.dmarc_verdict import dkim_passes
from postwarden.milter.switches import sign_switch
from postwarden.orgdomain import aligned, org_domain

if TYPE_CHECKING:
    from postwarden.milter.evidence import Evidence

MAX_SIGNATURES = 8  # more are not verified (each may cost a DNS lookup)
GOOD_RSA_BITS = 2048

_quiet = logging.getLogger("postwarden.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class _KeyFetcher:
    """dkimpy's `dnsfunc`, through our Resolver; remembers a temporary failure, and
    withholds a key record that cannot verify a signature of `algorithm` (the
    shared parser says why), so dkimpy never sees a key receivers would refuse."""

    def __init__(self, resolver: Resolver, budget: Budget) -> None:
        self.resolver, self.budget = resolver, budget
        self.algorithm = ""
        self.temperror = ""
        self.missing = False
        self.problem = ""

    def __call__(self, name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        self.temperror, self.missing, self.problem = "", False, ""
        answer = self.resolver.txt(qname.rstrip("."), self.budget)
        if answer.failed:
            self.temperror = answer.error or "DNS failure"
            return None
        keys = [r for r in answer.records if "p=" in r] if answer.ok else []
        if not keys:
            self.missing = True
            return None
        self.problem = parse_key_record(keys[0]).refuses(self.algorithm)
        if self.problem:
            return None
        return keys[0].encode("utf-8", "replace")


def verify_one(d: dkim.DKIM, idx: int, tags: dict[str, str], fetch: _KeyFetcher
               ) -> DkimSignature:
    domain, selector = tags.get("d", "").lower(), tags.get("s", "")
    alg = tags.get("a", "")
    keyname = f"{selector}._domainkey.{domain}"
    fetch.algorithm = alg
    try:
        ok = d.verify(idx=idx, dnsfunc=fetch)
    except dkim.ValidationError as e:
        return DkimSignature(domain, selector, alg, "fail", _ktype(d), d.keysize or 0, str(e))
    except dkim.DKIMException as e:
        return DkimSignature(domain, selector, alg, "permerror", error=str(e))
    if ok:
        return DkimSignature(domain, selector, alg, "pass", _ktype(d), d.keysize or 0)
    if fetch.temperror:
        return DkimSignature(domain, selector, alg, "temperror",
                             error=f"key {keyname}: {fetch.temperror}")
    if fetch.missing:
        return DkimSignature(domain, selector, alg, "permerror",
                             error=f"no key published at {keyname}")
    if fetch.problem:
        return DkimSignature(domain, selector, alg, "permerror",
                             error=f"key {keyname}: {fetch.problem}",
                             fix=f"publish a usable key record at {keyname}")
    if getattr(d, "pk", None) is None:
        return DkimSignature(domain, selector, alg, "permerror",
                             error=f"the key at {keyname} cannot be used")
    return DkimSignature(domain, selector, alg, "fail", _ktype(d), d.keysize or 0,
                         "signature does not match the headers")


def _ktype(d: dkim.DKIM) -> str:
    k = getattr(d, "ktag", b"") or b""
    return k.decode("ascii", "replace") if isinstance(k, bytes) else str(k)


def evaluate(msg: Message, resolver: Resolver, budget: Budget, verify: bool
             ) -> list[DkimSignature]:
    """Every signature's result, in header order (DKIM-Signature values only)."""
    values = msg.header_all("DKIM-Signature")
    results: list[DkimSignature] = []
    d: dkim.DKIM | None = None
    fetch = _KeyFetcher(resolver, budget)
    for idx, value in enumerate(values):
        try:
            tags = parse_tags(value)
        except TagError as e:
            results.append(DkimSignature("", "", "", "permerror", error=f"unparsable: {e}"))
            continue
        domain, selector = tags.get("d", "").lower(), tags.get("s", "")
        alg = tags.get("a", "").lower()
        if alg in REFUSED_ALGORITHMS:  # known without a key: never a pass at a receiver
            results.append(DkimSignature(domain, selector, alg, "fail",
                                         error=REFUSED_ALGORITHMS[alg],
                                         fix="sign with rsa-sha256 (or ed25519-sha256 as well)"))
            continue
        if not verify or idx >= MAX_SIGNATURES:
            results.append(DkimSignature(domain, selector, tags.get("a", ""), "unverified"))
            continue
        if d is None:
            try:
                d = dkim.DKIM(msg.raw(), logger=_quiet, minkey=0)
            except dkim.DKIMException as e:  # headers dkimpy cannot parse: no signature holds
                results.append(DkimSignature(domain, selector, tags.get("a", ""), "permerror",
                                             error=f"message cannot be parsed: {e}"))
                continue
        results.append(verify_one(d, idx, tags, fetch))
    return results


def _sig_name(s: DkimSignature) -> str:
    return f"d={s.domain or '?'} s={s.selector or '?'}"


def check_dkim(msg: Message, ctx: CheckContext) -> list[Finding]:
    ev = ctx.evidence(msg)
    sigs = ev.dkim()
    domains = ev.from_domains()
    shown = domains[0] if domains else ""
    if not sigs:
        if shown and foreign(ctx.services.config, shown):
            text = (f"no DKIM signature, and the From domain {shown} is not one of this "
                    f"host's domains, so only its owner could sign for it: {FOREIGN_FIX}")
        else:
            key = (f"a key of {shown} and publish it at SELECTOR._domainkey.{shown}" if shown
                   else "a key of the From domain")
            switch = sign_switch(ctx.services.config, msg.origin, shown)
            text = (f"no DKIM signature; sign with {key} (OpenDKIM before postwarden in the "
                    f"milter list, or [dkim] sign = true){switch}")
        return [Finding("dkim.missing", Severity.WARNING, text, {"from_domain": shown})]
    out: list[Finding] = []
    modes = {dom: ev.alignment_mode(dom, "adkim") for dom in domains}
    unaligned = [dom for dom in domains
                 if not any(aligned(s.domain, dom, modes[dom]) for s in sigs)]
    if unaligned:
        dom = unaligned[0]
        strict = modes[dom] == "s"
        signers = ",".join(sorted({s.domain for s in sigs if s.domain})) or "?"
        out.append(Finding(
            "dkim.unaligned", Severity.WARNING,
            f"DKIM signed by d={signers}, which does not align with the From domain {dom}"
            f"{' (its DMARC record asks adkim=s: exact domain)' if strict else ''}; "
            f"sign with a key of {dom}{'' if strict else ' or of its organizational domain'}",
            {"from_domain": dom, "signers": signers, "adkim": modes[dom]}))
    bad = [s for s in sigs if s.status in ("fail", "permerror")]
    if bad:
        s = bad[0]
        out.append(Finding(
            "dkim.invalid", Severity.ERROR,
            f"DKIM signature {_sig_name(s)} does not verify ({s.error}); " + (
                s.fix or f"check that the key published at {s.selector}._domainkey."
                f"{s.domain} matches the signer's private key and that nothing changes "
                "the message after signing"),
            {"signatures": [_sig_name(b) for b in bad], "error": s.error}))
    weak = [s for s in sigs if s.key_type == "rsa" and 0 < s.key_bits < GOOD_RSA_BITS]
    if weak:
        s = min(weak, key=lambda w: w.key_bits)
        sev = Severity.ERROR if s.key_bits < MIN_RSA_BITS else Severity.WARNING
        verdict = "receivers ignore it" if sev is Severity.ERROR else "RFC 8301 asks 2048"
        out.append(Finding(
            "dkim.weak_key", sev,
            f"DKIM key {s.selector}._domainkey.{s.domain} has only {s.key_bits} bits "
            f"({verdict}); generate a 2048-bit RSA key, publish it under a new selector "
            "and sign with it",
            {"bits": s.key_bits, "key": f"{s.selector}._domainkey.{s.domain}"}))
    temp = [s for s in sigs if s.status == "temperror"]
    if temp and not _good(ev):
        s = temp[0]
        out.append(Finding(
            "dkim.temperror", Severity.WARNING,
            f"DKIM signature {_sig_name(s)} not verified: {s.error}; check the DNS "
            "resolver postwarden uses ([dns] nameservers)",
            {"error": s.error}))
    return out


def _good(ev: Evidence) -> bool:
    """An aligned DKIM pass for every From domain (dmarc_verdict's rule)."""
    domains = ev.from_domains()
    return bool(domains) and all(dkim_passes(ev, dom) for dom in domains)


def summary(ev: Evidence) -> str:
    """`dkim=` of the summary line: none | pass | unverified | temperror | fail."""
    sigs = ev.dkim()
    if not sigs:
        return "none"
    good = _good(ev)
    verified = ev.services.config.dkim.verify or any(s.status == "pass" for s in sigs)
    if good:
        return "pass" if verified else "unverified"
    return "temperror" if any(s.status == "temperror" for s in sigs) else "fail"


class DkimCheck:
    """The pipeline's DKIM check (verification itself is evidence: Evidence.dkim)."""

    def __init__(self) -> None:
        org_domain("example.com")  # load the Public Suffix List now, not on the first message

    def __call__(self, msg: Message, ctx: CheckContext) -> list[Finding]:
        return check_dkim(msg, ctx)
