"""Is the milter reachable the way Postfix reaches it?

Reading `smtpd_milters` proves only that Postfix is told about postwarden; with
`default_action = accept` a dead daemon passes every message unchecked and
Postfix only logs `connect to Milter service ... No such file or directory`.
So this check takes each postwarden entry of `smtpd_milters`, `non_smtpd_milters`
and the per-service `-o smtpd_milters=` overrides, resolves the address exactly as
the Postfix process does (a relative `unix:` path is relative to
`queue_directory`, the working directory of every Postfix daemon; an absolute one
is inside `queue_directory` when that service runs chrooted), connects, and
completes the milter protocol's option negotiation (SMFIC_OPTNEG), as Postfix
does first on every connection. Nothing answering, or a failed negotiation, is
critical. A socket this user may not open is unknown: Postfix may still reach it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from postwarden.checks.postfix_audit import PostfixFacts
from postwarden.checks.report import CheckResult
from postwarden.findings import Finding
from postwarden.milterproto import Negotiation, negotiate

__all__ = ["Endpoint", "Milter", "Negotiation", "check", "endpoints", "negotiate",
           "parse_milters", "resolve"]



@dataclass(frozen=True)
class Milter:
    """One entry of a Postfix milter list: `addr` or `{ addr, name=value, ... }`."""

    address: str
    attrs: tuple[tuple[str, str], ...] = ()


def parse_milters(value: str) -> list[Milter]:
    """Split a milter list the way Postfix does: commas/whitespace, `{...}` grouped."""
    out: list[Milter] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in ", \t\n":
            i += 1
            continue
        if c == "{":
            j = value.find("}", i)
            j = n if j < 0 else j
            parts = [p.strip() for p in value[i + 1:j].replace("\n", " ").split(",")]
            words = [w for p in parts for w in ([p] if "=" in p else p.split()) if w]
            if words:
                attrs = tuple(tuple(w.split("=", 1)) for w in words[1:] if "=" in w)
                out.append(Milter(words[0], attrs))  # type: ignore[arg-type]
            i = j + 1
            continue
        j = i
        while j < n and value[j] not in ", \t\n":
            j += 1
        out.append(Milter(value[i:j]))
        i = j
    return out


@dataclass
class Endpoint:
    """One socket to test: where the Postfix process connects, and who names it."""

    named: str  # as Postfix's configuration writes it
    connect: str  # unix:/absolute/path or inet:host:port, as the process reaches it
    named_by: list[str] = field(default_factory=list)
    default_action: str = ""


def resolve(address: str, queue_directory: str, chroot: bool) -> str:
    """The address as a Postfix daemon reaches it (cwd = queue_directory)."""
    kind, sep, rest = address.partition(":")
    if not sep:
        kind, rest = "unix", address
    if kind in ("unix", "local"):
        path = PurePosixPath(rest)
        if not path.is_absolute():
            path = PurePosixPath(queue_directory) / path
        elif chroot:
            path = PurePosixPath(queue_directory) / str(path).lstrip("/")
        return f"unix:{path}"
    return f"{kind}:{rest}"


def _chrooted(facts: PostfixFacts, service: str) -> bool:
    return facts.chroot.get(service, "n") in ("y", "yes")


def endpoints(facts: PostfixFacts, marker: str, own_socket: str) -> list[Endpoint]:
    """Every postwarden entry Postfix names, resolved; the config's socket if none."""
    queue = facts.main.get("queue_directory", "/var/spool/postfix")
    smtpd = next((s for s in facts.commands if s.endswith("/inet")
                  and facts.commands[s].startswith("smtpd")), "smtp/inet")
    sources: list[tuple[str, str, bool]] = [
        ("smtpd_milters", facts.main.get("smtpd_milters", ""), _chrooted(facts, smtpd)),
        ("non_smtpd_milters", facts.main.get("non_smtpd_milters", ""),
         _chrooted(facts, "cleanup/unix")),
    ]
    for service, opts in sorted(facts.services.items()):
        if "smtpd_milters" in opts:
            sources.append((f"{service.split('/')[0]} -o smtpd_milters", opts["smtpd_milters"],
                            _chrooted(facts, service)))
    found: dict[str, Endpoint] = {}
    for where, value, chroot in sources:
        for m in parse_milters(value):
            if marker not in m.address and "postwarden" not in m.address:
                continue
            target = resolve(m.address, queue, chroot)
            ep = found.setdefault(target, Endpoint(m.address, target,
                                                   default_action=dict(m.attrs).get(
                                                       "default_action", "")))
            ep.named_by.append(where)
    if not found:
        return [Endpoint(own_socket, resolve(own_socket, queue, False), ["[socket] in config"])]
    return list(found.values())


def check(endpoint: Endpoint, own_socket: str,
          negotiator: Callable[[str], Negotiation] = negotiate) -> Finding:
    """`milter.reachable` for one endpoint."""
    res = negotiator(endpoint.connect)
    d: dict[str, Any] = {"address": endpoint.named, "connect": endpoint.connect,
                         "named_by": endpoint.named_by, "up": res.ok}
    names = " and ".join(endpoint.named_by)
    if res.ok:
        d.update(version=res.version, actions=res.actions, protocol=res.protocol)
        return CheckResult("milter.reachable", endpoint.named, "ok",
                           f"postwarden answers on {endpoint.connect} "
                           f"(milter protocol {res.version}; named in {names})", (), d)
    d["error"] = res.error
    if res.errno in (errno.EACCES, errno.EPERM):
        d["up"] = None
        return CheckResult("milter.reachable", endpoint.named, "unknown",
                           f"cannot test {endpoint.connect}: {res.error} for this user",
                           ("Run the self-check as root or as a member of the socket's group "
                            "(socket_group, usually postfix), or use --cached with the "
                            "daemon's own run",), d)
    advice = ["Start the daemon: systemctl start postwarden (journalctl -u postwarden says "
              "why it stopped); until then Postfix passes mail unchecked "
              "(default_action=accept)"]
    own = resolve(own_socket, "/", False)
    if res.errno == errno.ENOENT and own != endpoint.connect and own_socket.startswith("unix:"):
        advice.append(f"Postfix connects to {endpoint.connect} but postwarden listens on "
                      f"{own_socket[5:]}: make them the same (relative paths in "
                      "smtpd_milters are inside queue_directory)")
    return CheckResult("milter.reachable", endpoint.named, "critical",
                       f"nothing answers on {endpoint.connect} ({res.error}): mail named in "
                       f"{names} passes unchecked", tuple(advice), d)
