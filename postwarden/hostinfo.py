"""The host as receivers see it: sending IPs, HELO name, sending domains.

`[host]` in the config wins; what it leaves empty is detected: the HELO name and
domain from Postfix (`smtp_helo_name`, `myhostname`, `mydomain`), the sending IPs
from the global addresses on the interfaces, else from the HELO name's A/AAAA
records (a host behind NAT has no public address of its own). The milter and the
self-check use this one function, so they judge the same host.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from postwarden.config import HostConfig
from postwarden.dns import Resolver


@dataclass(frozen=True)
class HostFacts:
    ips: tuple[str, ...]
    hostname: str
    domains: tuple[str, ...]
    detected: tuple[str, ...]  # which of ips/hostname/domains were not configured


def interface_ips() -> list[str]:
    """Global unicast addresses on this host's interfaces (iproute2's JSON)."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        out = subprocess.run([ip, "-j", "addr", "show", "scope", "global"], check=True,
                             capture_output=True, text=True, timeout=5).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    addrs = [a.get("local", "") for link in links for a in link.get("addr_info", [])]
    return [a for a in addrs if a and _is_global(a)]


def _is_global(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_global
    except ValueError:
        return False


def detect(host: HostConfig, postconf: Mapping[str, str], resolver: Resolver | None,
           local_ips: Callable[[], list[str]] = interface_ips) -> HostFacts:
    detected: list[str] = []
    hostname = host.hostname
    if not hostname:
        helo = postconf.get("smtp_helo_name", "")
        hostname = postconf.get("myhostname", "") if helo in ("", "$myhostname") else helo
        detected.append("hostname")
    domains = list(host.domains)
    if not domains:
        domains = [postconf["mydomain"]] if postconf.get("mydomain") else []
        detected.append("domains")
    ips = list(host.ips)
    if not ips:
        ips = local_ips()
        if not ips and hostname and resolver is not None:
            a, aaaa = resolver.addresses(hostname)
            ips = [x for x in (*a.records, *aaaa.records) if _is_global(x)]
        detected.append("ips")
    return HostFacts(tuple(ips), hostname, tuple(domains), tuple(detected))


def postconf_values(config_dir: str = "") -> dict[str, str]:
    """`postconf -x` for the three parameters; {} when Postfix is not there."""
    cmd = [shutil.which("postconf") or "/usr/sbin/postconf"]
    if config_dir:
        cmd += ["-c", config_dir]
    try:
        out = subprocess.run([*cmd, "-x", "smtp_helo_name", "myhostname", "mydomain"],
                             check=True, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        values[k.strip()] = v.strip()
    return values


def fill(host: HostConfig, resolver: Resolver | None, config_dir: str = "") -> HostFacts:
    """Detect what [host] leaves open and write it into `host` (for the milter)."""
    complete = host.ips and host.hostname and host.domains
    facts = detect(host, {} if complete else postconf_values(config_dir), resolver)
    host.ips, host.hostname, host.domains = list(facts.ips), facts.hostname, list(facts.domains)
    return facts
