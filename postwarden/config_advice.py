"""`config check` warnings: a valid config that will still work badly.

Not errors (the daemon runs), but each costs protection: no sending IP means
SPF and the blocklists are not judged for the real address; an empty or public
resolver gets refused by Spamhaus and others (their answers become unknown); a
daemon left running as root turns any bug into a root compromise. One line each,
naming the key and the fix.
"""

from __future__ import annotations

from collections.abc import Callable

from postwarden.blocklists import PUBLIC_RESOLVERS
from postwarden.config import Config


def warnings(cfg: Config, interface_ips: Callable[[], list[str]]) -> list[str]:
    out = []
    if not cfg.host.ips:
        found = interface_ips()
        if not found:
            out.append("[host] ips is empty and this host has no global address to detect "
                       "(NAT, or a private network): SPF and the blocklists are not judged "
                       "for the real sending IP; set ips = [\"YOUR.PUBLIC.IP\"]")
    if not cfg.dns.nameservers:
        out.append("[dns] nameservers is empty: /etc/resolv.conf is used, often a public or "
                   "provider resolver that blocklists refuse; run a local recursive resolver "
                   "(unbound) and set nameservers = [\"127.0.0.1\"]")
    public = [n for n in cfg.dns.nameservers if n in PUBLIC_RESOLVERS]
    if public:
        out.append(f"[dns] nameservers = {cfg.dns.nameservers}: {', '.join(public)} is a "
                   "public resolver; Spamhaus and others refuse it, so blocklist answers "
                   "are unknown; run a local recursive resolver and set "
                   "nameservers = [\"127.0.0.1\"]")
    if cfg.user in ("", "root", "0"):
        what = "user is unset" if not cfg.user else f"user = {cfg.user!r}"
        out.append(f"{what}: a daemon started as root keeps running as root (the shipped "
                   "systemd unit starts it as postwarden); set user = \"postwarden\"")
    return out
