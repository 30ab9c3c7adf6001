"""Config warnings: a valid config that will still work badly.

The one place they are made: `config check` prints them and the daemon logs them
at every start. Not errors (the daemon runs), but each costs protection: no sending
IP means SPF and the blocklists are not judged for the real address; an empty or
public resolver gets refused by Spamhaus and others (their answers become unknown);
a daemon left running as root turns any bug into a root compromise; a secret
readable by every user, a DKIM key others can replace or a socket directory others
can write undo what postwarden protects. One line each, naming the key or file and
the fix.
"""

from __future__ import annotations

import os
import pwd
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from postwarden.blocklists import PUBLIC_RESOLVERS
from postwarden.config import Config


def warnings(cfg: Config, interface_ips: Callable[[], list[str]]) -> list[str]:
    """Every warning for `cfg`: the advice on its settings, then file permissions.
    `interface_ips` (hostinfo.interface_ips) finds this host's global addresses when
    [host] ips is empty."""
    return _advice(cfg, interface_ips) + _permissions(cfg)


def _advice(cfg: Config, interface_ips: Callable[[], list[str]]) -> list[str]:
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


def _permissions(cfg: Config) -> list[str]:
    """Permission problems that do not stop postwarden but undo its protection."""
    out: list[str] = []
    secrets = []
    try:
        if urllib.parse.urlsplit(cfg.store.redis_url).password:
            secrets.append("a Redis password (store.redis_url)")
    except ValueError:
        pass
    if cfg.selfcheck.spamhaus_dqs_key:
        secrets.append("a Spamhaus DQS key")
    mode = _mode(cfg.source)
    if secrets and mode is not None and mode & 0o004:
        out.append(f"{cfg.source} is readable by every user and holds {' and '.join(secrets)}:"
                   f" chmod 640 {cfg.source} (group of the postwarden user)")
    key_files = [k.key_file for k in cfg.dkim.keys] + list(cfg.selfcheck.dkim_key_files.values())
    for key in dict.fromkeys(key_files):
        mode = _mode(key)
        if mode is not None and mode & 0o022:
            who = "every user" if mode & 0o002 else "its group"
            out.append(f"DKIM key {key} is writable by {who}: whoever can replace it signs "
                       f"as your domain; chmod 600 {key}")
    if cfg.socket.startswith("unix:"):
        parent = Path(cfg.socket[5:]).parent
        try:
            st = parent.stat()
        except OSError:
            st = None
        if st is not None:
            if st.st_mode & 0o002:
                out.append(f"socket directory {parent} is writable by every user: anyone can "
                           "replace the socket and receive Postfix's mail; chmod 750 it")
            allowed = {0, os.geteuid()}
            if cfg.user:
                try:
                    allowed.add(pwd.getpwnam(cfg.user).pw_uid)
                except KeyError:
                    pass
            if st.st_uid not in allowed:
                out.append(f"socket directory {parent} belongs to uid {st.st_uid}, not to root "
                           "or the postwarden user: its owner can replace the socket; chown it")
    return out


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode if path else None
    except (OSError, ValueError):
        return None
