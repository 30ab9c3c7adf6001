"""Identity: PTR, forward-confirmed rDNS, generic-looking names, the HELO name.

Receivers judge a sending IP first by its PTR. No PTR at all is the seed's
"WARNING: No Reverse-DNS (PTR) is assigned to your IP" case: critical. A lookup
that times out or fails is `unknown`, never `ok`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from postwarden.checks.report import CheckResult
from postwarden.dns import Budget, Resolver
from postwarden.findings import Finding

_GENERIC_WORDS = {
    "dynamic", "dyn", "dhcp", "pool", "dsl", "adsl", "vdsl", "xdsl", "dial", "dialup",
    "ppp", "pppoe", "cable", "broadband", "customer", "cust", "client", "clients",
    "static", "unassigned", "unknown", "nat", "residential", "home", "user", "users",
}
_LABEL_SPLIT = re.compile(r"[.\-_]")
_FQDN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.I)


def generic_reasons(name: str, ip: str) -> list[str]:
    """Why `name` looks like an ISP's generic PTR rather than a mail server's name."""
    reasons = []
    low = name.lower()
    words = set(_LABEL_SPLIT.split(low))
    hits = sorted(words & _GENERIC_WORDS)
    if hits:
        reasons.append(f"contains {', '.join(hits)}")
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        octets = str(addr).split(".")
        digits = re.sub(r"[^0-9]+", ".", low)
        if ".".join(octets) in digits or ".".join(reversed(octets)) in digits:
            reasons.append("contains the IP address digits")
        elif f"{int(addr):08x}" in low:
            reasons.append("contains the IP address in hex")
    else:
        compact = addr.exploded.replace(":", "")
        if compact[-8:] in low.replace("-", "").replace(".", ""):
            reasons.append("contains the IP address digits")
    return reasons


def is_fqdn(name: str) -> bool:
    low = name.lower().rstrip(".")
    if low.endswith((".localdomain", ".local", ".localhost", ".lan", ".internal")):
        return False
    return bool(_FQDN.match(low))


def check_ip(ip: str, resolver: Resolver, hostname: str = "",
             budget: Budget | None = None) -> list[Finding]:
    """`rdns.ptr` and `rdns.fcrdns` for one sending IP."""
    fix_ptr = (f"Ask the owner of {ip} (your hosting provider's panel: 'reverse DNS') to set "
               f"its PTR to {hostname or 'your mail host name'}, a name whose A/AAAA record "
               f"is {ip}")
    ans = resolver.ptr(ip, budget)
    if ans.failed:
        why = f"PTR lookup failed ({ans.error})"
        return [CheckResult("rdns.ptr", ip, "unknown", why, (), {"error": ans.error}),
                CheckResult("rdns.fcrdns", ip, "unknown", why, (), {"error": ans.error})]
    if not ans.ok:
        return [
            CheckResult("rdns.ptr", ip, "critical",
                        "No Reverse-DNS (PTR) is assigned to this IP", (fix_ptr,),
                        {"ptr": []}),
            CheckResult("rdns.fcrdns", ip, "critical",
                        "not forward-confirmed: there is no PTR to confirm", (fix_ptr,),
                        {"ptr": []}),
        ]
    names = [n.lower().rstrip(".") for n in ans.records]
    details: dict[str, Any] = {"ptr": names}
    ptr: Finding
    generic = {n: generic_reasons(n, ip) for n in names}
    bad = {n: r for n, r in generic.items() if r}
    if len(names) > 1:
        ptr = CheckResult("rdns.ptr", ip, "warning",
                          f"{len(names)} PTR records ({', '.join(names)}); receivers pick one",
                          (f"Keep exactly one PTR for {ip}: {hostname or names[0]}",), details)
    elif bad:
        details["generic"] = bad
        n = names[0]
        ptr = CheckResult("rdns.ptr", ip, "warning",
                          f"PTR {n} looks generic ({'; '.join(bad[n])})", (fix_ptr,), details)
    else:
        ptr = CheckResult("rdns.ptr", ip, "ok", f"PTR {names[0]}", (), details)

    want = ipaddress.ip_address(ip)
    confirmed, failed = [], []
    for n in names:
        a, aaaa = resolver.addresses(n, budget)
        if a.failed or aaaa.failed:
            failed.append(n)
        if want in {ipaddress.ip_address(x) for x in (*a.records, *aaaa.records)}:
            confirmed.append(n)
    fdetails = {"ptr": names, "confirmed": confirmed}
    if confirmed:
        fc = CheckResult("rdns.fcrdns", ip, "ok", f"{confirmed[0]} resolves back to {ip}",
                         (), fdetails)
    elif failed:
        fc = CheckResult("rdns.fcrdns", ip, "unknown",
                         f"could not resolve {', '.join(failed)} to confirm the PTR", (),
                         fdetails)
    else:
        rtype = "A" if want.version == 4 else "AAAA"
        fc = CheckResult("rdns.fcrdns", ip, "critical",
                         f"not forward-confirmed: {names[0]} does not resolve to {ip}",
                         (f"Publish {names[0]}. {rtype} {ip} (or change the PTR to a "
                          f"name that has it)",), fdetails)
    return [ptr, fc]


def check_helo(hostname: str, ips: list[str], ptrs: dict[str, list[str]],
               resolver: Resolver, budget: Budget | None = None) -> Finding:
    """The HELO name: an FQDN that resolves to the sending IPs and matches their PTR."""
    fix = (f"postconf -e 'smtp_helo_name = {_first_ptr(ptrs) or 'mail.example.com'}' "
           "(an FQDN with an A record for this IP and the same name as its PTR)")
    details: dict[str, Any] = {"hostname": hostname, "ips": ips}
    if not hostname:
        return CheckResult("helo", "", "unknown",
                           "HELO name unknown (set [host] hostname or run where postconf works)",
                           (), details)
    if not is_fqdn(hostname):
        return CheckResult("helo", hostname, "critical",
                           f"HELO name {hostname} is not a fully-qualified domain name",
                           (fix,), details)
    a, aaaa = resolver.addresses(hostname, budget)
    if a.failed and aaaa.failed:
        return CheckResult("helo", hostname, "unknown",
                           f"could not resolve {hostname} ({a.error})", (), details)
    have = {ipaddress.ip_address(x) for x in (*a.records, *aaaa.records)}
    details["addresses"] = sorted(str(x) for x in have)
    missing = [ip for ip in ips if ipaddress.ip_address(ip) not in have]
    if not have:
        return CheckResult("helo", hostname, "warning", f"HELO name {hostname} does not resolve",
                           (f"Publish {hostname}. A {ips[0] if ips else '<your IP>'}",),
                           details)
    if missing:
        return CheckResult("helo", hostname, "warning",
                           f"HELO name {hostname} does not resolve to {', '.join(missing)}",
                           (f"Publish {hostname}. A/AAAA {', '.join(missing)}, or set "
                            "smtp_helo_name per sending IP",), details)
    mismatched = [ip for ip in ips
                  if ptrs.get(ip) and hostname.lower() not in ptrs[ip]]
    if mismatched:
        details["ptr"] = {ip: ptrs[ip] for ip in mismatched}
        return CheckResult("helo", hostname, "warning",
                           f"HELO name {hostname} differs from the PTR of "
                           f"{', '.join(mismatched)}", (fix,), details)
    return CheckResult("helo", hostname, "ok",
                       f"{hostname} is an FQDN, resolves to the sending IPs and matches the PTR",
                       (), details)


def _first_ptr(ptrs: dict[str, list[str]]) -> str:
    for names in ptrs.values():
        if names:
            return names[0]
    return ""
