"""Root causes: one unknown that explains many, so the report names the cause once.

A dead resolver makes every DNS answer unknown; without a sending IP no blocklist
is asked. Each gets one result of its own (`resolver.reachable`,
`blocklists.no_sending_ip`), and every result that depends on it is unknown
(never ok) and points at it (`details.cause`), so the text report groups them
under the cause while the JSON keeps every one. A `--only` / `--skip` that
selects nothing is unknown too: a check that checked nothing must not pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from postwarden.checks.report import CheckResult
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding, Severity

RESOLVER = "resolver.reachable"
NO_IP = "blocklists.no_sending_ip"
SELECTION = "selfcheck.selection"
# Results whose answer comes from DNS: unknown whenever the resolver is.
DNS_FAMILIES = ("uceprotect.", "dnsbl.", "resolver.public", "rdns.", "helo", "spf.",
                "dkim.", "dmarc.", "mx", "escalation.")
ROOTS: dict[str, tuple[str, ...]] = {
    RESOLVER: (*DNS_FAMILIES, "resolver.", "checklist."),
    NO_IP: ("uceprotect.", "dnsbl.", "blocklists."),
}


def check_resolver(resolver: Resolver, budget: Budget | None = None) -> Finding:
    """`resolver.reachable`: does any configured nameserver answer at all?"""
    port = resolver.port
    servers = [f"{ns}:{port}" if port != 53 else ns for ns in resolver.nameservers]
    target = ",".join(servers)
    errors = resolver.ping(budget)
    answering = [ns for ns, err in errors.items() if not err]
    details = {"nameservers": resolver.nameservers, "port": port,
               "errors": {ns: err for ns, err in errors.items() if err}}
    first = resolver.nameservers[0] if resolver.nameservers else "127.0.0.1"
    if answering:
        return CheckResult(RESOLVER, target, "ok",
                           f"resolver answers ({', '.join(answering)})", (), details)
    why = "; ".join(f"{ns}: {err}" for ns, err in errors.items()) or "no nameserver configured"
    return CheckResult(
        RESOLVER, target, "unknown",
        f"the resolver {target} does not answer ({why}): every DNS-based result is unknown, "
        "the blocklists are not watched",
        (f"Start or fix the resolver (systemctl status unbound; dig @{first} -p {port} "
         ". SOA), or point [dns] nameservers at a local recursive resolver "
         "that answers",), details)


def no_sending_ip() -> Finding:
    return CheckResult(NO_IP, "", "unknown", "no sending IP: blocklists not checked",
                       ("Set [host] ips = [\"YOUR.PUBLIC.IP\"] in the config, or pass --ip: "
                        "no global address was found on this host or in Postfix's "
                        "smtp_bind_address",),
                       {"skipped": ["uceprotect.*", "dnsbl.*", "rdns.*"]})


def needs_dns(wants: Callable[[str], bool]) -> bool:
    return any(wants(p) for p in ROOTS[RESOLVER])


def wanted(result: Finding, wants: Callable[[str], bool]) -> bool:
    """A root cause that is not ok is shown whenever something that depends on it was
    asked for (an ok one only when asked for itself)."""
    return (result.id in ROOTS and result.status != "ok"
            and any(wants(p) for p in ROOTS[result.id]))


def propagate(results: list[Finding]) -> None:
    """In place: with the resolver down, nothing DNS-based is ok, and each such
    unknown names the resolver as its cause."""
    down = any(r.id == RESOLVER and r.status == "unknown" for r in results)
    if not down:
        return
    for i, r in enumerate(results):
        if not r.id.startswith(DNS_FAMILIES) or r.details.get("cause") == RESOLVER:
            continue
        if r.status == "ok":
            results[i] = dataclasses.replace(
                r, severity=Severity.UNKNOWN, text=f"cannot tell: the resolver does not "
                f"answer (the run said: {r.summary})", data={**r.details, "cause": RESOLVER})
        elif r.status == "unknown":
            results[i] = dataclasses.replace(r, data={**r.details, "cause": RESOLVER})


def selection_problems(checks: Sequence[Finding], only: Sequence[str],
                       skip: Sequence[str]) -> list[Finding]:
    """Unknown results for a selection that checks nothing (or an --only that matches
    nothing): exit 3 with the reason, never an empty OK."""
    real = [c for c in checks if c.id not in ROOTS]
    causes = [c for c in checks if c.id in ROOTS and c.status != "ok"]
    out = []
    for p in only:
        explained = any(q.startswith(p) or p.startswith(q) for c in causes for q in ROOTS[c.id])
        if not any(c.id.startswith(p) for c in checks) and not explained:
            out.append(CheckResult(SELECTION, p, "unknown",
                                   f"--only {p} selects no check: nothing was checked for it",
                                   ("Use a prefix of a check id: uceprotect, dnsbl, resolver, "
                                    "rdns, helo, spf, dkim, dmarc, mx, postfix, milter, "
                                    "activity, checklist, escalation",), {"only": p}))
    if not real and not out and not causes:
        out.append(CheckResult(SELECTION, "", "unknown",
                               "the selection checks nothing: "
                               f"--only {' '.join(only) or '(all)'} --skip {' '.join(skip)}",
                               ("Drop --skip prefixes until something is left",),
                               {"only": list(only), "skip": list(skip)}))
    return out
