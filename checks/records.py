"""Records per sending domain: SPF, DKIM keys, DMARC, MX.

SPF is parsed here (one record, at most 10 DNS-querying terms, RFC 7208 4.6.4,
no `+all`/`?all`) and evaluated with pyspf for every sending IP, its DNS going
through our Resolver. DMARC uses the shared parser and discovery
(postwarden.dmarc_discovery), read as RFC 7489 and as RFC 9989 receivers read it.
A DNS failure is `unknown`, never `ok`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from postwarden import dkimkeys, dmarc_discovery, spf
from postwarden.checks import spf_lookups
from postwarden.checks.report import CheckResult
from postwarden.checks.spf_lookups import MAX_LOOKUPS, spf_records
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding
from postwarden.orgdomain import org_domain


def count_lookups(domain: str, resolver: Resolver,
                  budget: Budget | None = None) -> tuple[int, list[str]]:
    """DNS-querying terms of the SPF tree under `domain` (checks/spf_lookups.py)."""
    c = spf_lookups.count(domain, spf_lookups.gather(domain, resolver, budget))
    return c.lookups, c.texts()


def evaluate(ip: str, domain: str, resolver: Resolver, helo: str = "",
             budget: Budget | None = None) -> tuple[str, str]:
    """(result, explanation) of SPF for `ip` sending as postmaster@domain."""
    ev = spf.evaluate(ip, f"postmaster@{domain}", helo or domain, resolver, budget)
    return ev.result, ev.explanation


def check_spf(domain: str, ips: list[str], resolver: Resolver, helo: str = "",
              budget: Budget | None = None) -> Finding:
    """One valid SPF record, <= 10 lookups, authorizes every sending IP, no +all/?all."""
    mechs = " ".join(f"ip{'6' if ':' in ip else '4'}:{ip}" for ip in ips) or "mx"
    publish = f'{domain}. TXT "v=spf1 {mechs} -all"'
    ans = resolver.txt(domain, budget)
    if ans.failed:
        return CheckResult("spf.record", domain, "unknown",
                           f"SPF lookup failed ({ans.error})", (), {"error": ans.error})
    recs = spf_records(ans.records) if ans.ok else []
    details: dict[str, Any] = {"records": recs}
    if not recs:
        return CheckResult("spf.record", domain, "critical", "no SPF record",
                           (f"Publish: {publish}",), details)
    if len(recs) > 1:
        return CheckResult("spf.record", domain, "critical",
                           f"{len(recs)} SPF records: receivers treat this as permerror",
                           (f"Merge them into one record, e.g. {publish}",), details)
    record = recs[0]
    tree = spf_lookups.count(domain, spf_lookups.gather(domain, resolver, budget))
    lookups = tree.lookups
    details["lookups"] = lookups
    if tree.texts():
        details["problems"] = tree.texts()
    terms = spf_lookups.terms(record)
    all_terms = [(t.qualifier or "+") for t in terms if t.name == "all"]
    has_redirect = any(t.name == "redirect=" for t in terms)
    results = {}
    for ip in ips:
        res, _text = evaluate(ip, domain, resolver, helo, budget)
        results[ip] = res
    details["results"] = results
    unknown = [ip for ip, r in results.items() if r == "temperror"]
    failing = [ip for ip, r in results.items() if r not in ("pass", "temperror")]
    if lookups > MAX_LOOKUPS:
        return CheckResult("spf.record", domain, "critical",
                           f"{lookups} DNS-querying terms (limit {MAX_LOOKUPS}): permerror",
                           ("Flatten includes into ip4:/ip6: terms until at most 10 "
                            f"lookups remain, e.g. {publish}",), details)
    if any(r == "permerror" for r in results.values()):
        return CheckResult("spf.record", domain, "critical", "SPF record is invalid (permerror)",
                           (f"Fix the record, e.g. {publish}",), details)
    if "+" in all_terms:
        return CheckResult("spf.record", domain, "critical",
                           "SPF ends in +all: anyone may send as this domain",
                           (f"Publish: {publish}",), details)
    if failing:
        add = " ".join(f"ip{'6' if ':' in ip else '4'}:{ip}" for ip in failing)
        return CheckResult("spf.record", domain, "critical",
                           f"SPF does not authorize {', '.join(failing)} "
                           f"({', '.join(results[ip] for ip in failing)})",
                           (f"Add {add} to the record: {domain}. TXT "
                            f"\"{_with_terms(record, add)}\"",), details)
    if unknown:
        return CheckResult("spf.record", domain, "unknown",
                           f"SPF evaluation for {', '.join(unknown)} hit a DNS error", (),
                           details)
    if tree.unknown:
        return CheckResult("spf.record", domain, "unknown",
                           f"DNS-querying terms not all counted: {'; '.join(tree.unknown)}",
                           (), details)
    if tree.problems:
        return CheckResult("spf.record", domain, "warning",
                           f"SPF passes {', '.join(ips)}, but an IP that matches nothing gets "
                           f"permerror: {'; '.join(tree.problems)}",
                           ("Fix or remove the include/redirect named above",), details)
    if "?" in all_terms or (not all_terms and not has_redirect):
        return CheckResult("spf.record", domain, "warning",
                           "SPF ends neutral (?all or no all): forged mail is not rejected",
                           (f"End the record with -all (or ~all): {publish}",), details)
    return CheckResult("spf.record", domain, "ok",
                       f"one SPF record, {lookups} lookups, authorizes {', '.join(ips)}",
                       (), details)


def _with_terms(record: str, add: str) -> str:
    parts = record.split()
    return " ".join([parts[0], add, *parts[1:]])


# --- DKIM ---------------------------------------------------------------------

def check_dkim(selector: str, domain: str, resolver: Resolver, key_file: str = "",
               budget: Budget | None = None) -> Finding:
    """Published, usable by receivers (v=, k=, h=, s=, p= read by the shared parser
    in postwarden.dkimkeys, as the milter's verifier reads them), >= 1024 bits
    (2048 recommended), not t=y, matches the local key."""
    name = f"{selector}._domainkey.{domain}"
    fix_publish = (f"Publish the public key of your signer at {name} TXT "
                   "(opendkim-genkey -b 2048 -s SELECTOR -d DOMAIN writes it to SELECTOR.txt)")
    ans = resolver.txt(name, budget)
    if ans.failed:
        return CheckResult("dkim.record", name, "unknown", f"DKIM key lookup failed ({ans.error})",
                           (), {"error": ans.error})
    recs = [r for r in ans.records if "p=" in r] if ans.ok else []
    if not recs:
        return CheckResult("dkim.record", name, "critical", "no DKIM key published",
                           (fix_publish,), {})
    rec = dkimkeys.parse_key_record(recs[0])
    details: dict[str, Any] = {"records": len(recs), "k": rec.key_type}
    if rec.hashes:
        details["h"] = list(rec.hashes)
    if rec.services != ("*",):
        details["s"] = list(rec.services)
    if rec.warnings:
        details["warnings"] = list(rec.warnings)
    if rec.revoked:
        return CheckResult("dkim.record", name, "critical", "DKIM key revoked (empty p=)",
                           (fix_publish,), details)
    if rec.key is None:
        return CheckResult("dkim.record", name, "critical",
                           f"receivers cannot use this DKIM key: {rec.problem}",
                           (fix_publish + " and nothing but v=DKIM1; k=rsa|ed25519; p=...",),
                           details)
    key, bits = rec.key, rec.bits
    details["bits"] = bits
    if key_file:
        details["key_file"] = key_file
        try:
            private = dkimkeys.load_private_key(Path(key_file).read_bytes(), key_file)
        except (OSError, dkimkeys.KeyFileError) as e:
            return CheckResult("dkim.record", name, "unknown",
                               f"cannot read the local key {key_file} ({e})",
                               ("Make the key file readable by the user running selfcheck",),
                               details)
        details["matches_local_key"] = dkimkeys.same_key(private, key)
        if not details["matches_local_key"]:
            return CheckResult("dkim.record", name, "critical",
                               f"published key does not match the local key {key_file}: "
                               "every signature fails",
                               (f"Publish the public key of {key_file}: {name}. TXT "
                                f"\"{dkimkeys.record_for(private)}\"",), details)
    rsa_key = rec.key_type == "rsa"
    if rsa_key and bits < 1024:
        return CheckResult("dkim.record", name, "critical",
                           f"{bits}-bit RSA key: receivers treat the signature as absent",
                           ("Generate a 2048-bit key and publish it under a new selector",),
                           details)
    if rsa_key and bits < 2048:
        return CheckResult("dkim.record", name, "warning", f"{bits}-bit RSA key; 2048 recommended",
                           ("Generate a 2048-bit key and publish it under a new selector",),
                           details)
    if rec.warnings:
        return CheckResult("dkim.record", name, "warning",
                           f"{rec.key_type} key, {bits} bits, but {'; '.join(rec.warnings)}",
                           (fix_publish,), details)
    if rec.testing:
        return CheckResult("dkim.record", name, "info",
                           f"{bits}-bit key in test mode (t=y): receivers may ignore failures",
                           ("Remove t=y once signing works",), details)
    return CheckResult("dkim.record", name, "ok", f"{rec.key_type} key, {bits} bits"
                       + (", matches the local key" if key_file else ""), (), details)


# --- DMARC and MX -------------------------------------------------------------

def _dmarc_details(look: dmarc_discovery.DmarcLookup) -> dict[str, Any]:
    a, b = look.rfc7489, look.rfc9989
    main = a if a.record is not None else b
    rec = main.record
    details: dict[str, Any] = {"found_at": main.found_at, "notes": list(a.notes),
                               "generations": {"rfc7489": a.to_dict(), "rfc9989": b.to_dict()}}
    if rec is not None:
        details.update({"p": rec.p, "sp": rec.sp, "np": rec.np, "rua": list(rec.rua),
                        "pct": rec.pct, "t": rec.t, "psd": rec.psd,
                        "policy": main.policy, "warnings": list(rec.warnings)})
    return details


def dmarc_results(domain: str, resolver: Resolver,
                  budget: Budget | None = None) -> list[Finding]:
    """dmarc.record (both generations), and dmarc.generations when they disagree."""
    look = dmarc_discovery.discover(resolver, domain, budget)
    out = [_dmarc_record(domain, look)]
    differ = _generations(domain, look, resolver, budget)
    if differ is not None:
        out.append(differ)
    return out


def check_dmarc(domain: str, resolver: Resolver, budget: Budget | None = None) -> Finding:
    """Exists, valid, p= set, read alike by RFC 7489 and RFC 9989; a missing rua= is info."""
    return _dmarc_record(domain, dmarc_discovery.discover(resolver, domain, budget))


def _dmarc_record(domain: str, look: dmarc_discovery.DmarcLookup) -> Finding:
    publish = (f'_dmarc.{domain}. TXT "v=DMARC1; p=quarantine; '
               f'rua=mailto:dmarc-reports@{domain}"')
    a, b = look.rfc7489, look.rfc9989
    details = _dmarc_details(look)
    failed = [p for p in (a, b) if p.status == "temperror"]
    if failed:
        text = "; ".join(f"{p.label}: {p.error}" for p in failed)
        unknown = CheckResult("dmarc.record", domain, "unknown",
                              f"DMARC lookup failed ({text})", (), details)
        if len(failed) == 2:
            return unknown
        # the other generation's answer stands when it is a problem (never an "ok")
        known = a if b.status == "temperror" else b
        alone = _dmarc_record(domain, dmarc_discovery.DmarcLookup(look.domain, known, known))
        if alone.status not in ("warning", "critical"):
            return unknown
        return CheckResult("dmarc.record", domain, alone.status,
                           f"{alone.summary} ({known.label}; {text})", alone.advice, details)
    if a.status == b.status == "none":
        notes = list(dict.fromkeys(a.notes + b.notes))
        return CheckResult("dmarc.record", domain, "warning",
                           "; ".join(notes) or "no DMARC record",
                           (f"Publish: {publish}",), details)
    main = a if a.status == "ok" else b
    rec = main.record
    assert rec is not None
    where = f" (inherited from {main.found_at})" if main.inherited else ""
    # a generation that applies no DMARC, or reads the record as p=none, is a problem
    notes = [n for p in (a, b) for n in p.notes
             if p.status == "none" or "read as p=none" in n]
    problems = list(dict.fromkeys([*rec.warnings, *notes]))
    if problems:
        return CheckResult("dmarc.record", domain, "warning",
                           f"DMARC record has problems: {'; '.join(problems)}{where}",
                           (f"Publish a clean record, e.g. {publish}",), details)
    if not rec.rua:
        return CheckResult("dmarc.record", domain, "info",
                           f"DMARC p={main.policy}{where}, no rua=: you get no reports",
                           (f"Add rua=mailto:dmarc-reports@{domain} to the record",), details)
    if main.policy == "none":
        return CheckResult("dmarc.record", domain, "info",
                           f"DMARC p=none{where}: monitoring only", (
                               "Once reports show your mail passes, move to p=quarantine",),
                           details)
    return CheckResult("dmarc.record", domain, "ok", f"DMARC p={main.policy}{where}, reports "
                       f"to {', '.join(rec.rua)}", (), details)


def _generations(domain: str, look: dmarc_discovery.DmarcLookup, resolver: Resolver,
                 budget: Budget | None) -> Finding | None:
    """RFC 7489 and RFC 9989 receivers read this domain differently: say how."""
    a, b = look.rfc7489, look.rfc9989
    if "temperror" in (a.status, b.status) or not look.domain:
        return None
    diffs = [] if look.agree else [f"RFC 7489 receivers apply {a.describe()}, RFC 9989 "
                                   f"receivers {b.describe()}"]
    org_psl = org_domain(look.domain)
    org_walk, error = dmarc_discovery.org_domain_9989(resolver, look.domain, budget)
    if not error and org_walk != org_psl:
        diffs.append(f"the Organizational Domain (relaxed alignment) is {org_psl} by the "
                     f"Public Suffix List (RFC 7489) but {org_walk} by the DNS tree walk "
                     "(RFC 9989)")
    if not diffs:
        return None
    details = {"rfc7489": {**a.to_dict(), "org_domain": org_psl},
               "rfc9989": {**b.to_dict(), "org_domain": org_walk or ""}}
    return CheckResult("dmarc.generations", domain, "warning",
                       "; ".join(diffs),
                       (f"Publish one explicit DMARC record at _dmarc.{domain} and use "
                        "DKIM/SPF domains equal to the From domain (strict alignment): "
                        "both generations then agree",), details)


def check_mx(domain: str, resolver: Resolver, budget: Budget | None = None) -> Finding:
    ans = resolver.query(domain, "MX", budget)
    if ans.failed:
        return CheckResult("mx", domain, "unknown", f"MX lookup failed ({ans.error})", (),
                           {"error": ans.error})
    hosts = sorted(r.strip() for r in ans.records) if ans.ok else []
    if not hosts:
        return CheckResult("mx", domain, "warning",
                           "no MX record: replies and bounces to this domain cannot be "
                           "delivered, and some receivers reject such senders",
                           (f"Publish: {domain}. MX 10 mail.{domain}.",), {"mx": []})
    if hosts == ["0"] or any(h.split()[-1] in (".", "") for h in hosts):
        return CheckResult("mx", domain, "info", "null MX: the domain receives no mail",
                           (), {"mx": hosts})
    return CheckResult("mx", domain, "ok", f"MX {', '.join(hosts)}", (), {"mx": hosts})
