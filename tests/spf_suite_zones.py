"""The RFC 7208 test suite's `zonedata` as a root zone for Knot, plus what must time out.

The suite (OpenSPF, shipped in pyspf's sdist) describes each scenario's DNS as
YAML: name -> list of {TYPE: value} or the word TIMEOUT. Its reference driver
(pyspf's test/testspf.py) gives that data a meaning, and this module serves
the same meaning from a real nameserver:

- An `SPF` record is also published as `TXT` when the name has no `TXT` entry
  (`TXT: NONE` is such an entry, and publishes nothing).
- `TIMEOUT` in a name's list: questions for the record types listed before it
  are answered (with the records before it); every other type of that name
  gets no answer at all. `{TYPE: TIMEOUT}`: that type gets no answer.
  A name that is not in the zonedata and starts with `error.` gets no answer.
  Knot cannot stay silent for one question, so these are answered by
  harness.dns_dropper.DnsDropper (in front of Knot) dropping them.
- Every other name is absent: NXDOMAIN from the root zone.

What DNS cannot hold exactly is listed in `World.inexact` (the suite test
pins that list): a TXT record of no strings at all (served as one empty
string: the same for SPF, which joins the strings), and a record repeated in
one RRset (DNS holds an RRset as a set, so the copy is served once).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Entry = tuple[str, Any] | str  # (TYPE, value) or "TIMEOUT"
MAX_STRING = 255
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def entries(rrs: Iterable[Any]) -> list[Entry]:
    """The records of one name in the order and shape testspf gives them."""
    out: list[Entry] = []
    generated: list[Entry] = []
    has_txt = False
    for m in rrs:
        if not isinstance(m, dict):
            out.append(m)  # "TIMEOUT"
            continue
        for rtype, value in m.items():
            if rtype in ("TXT", "SPF") and isinstance(value, str):
                value = (value,)
            if rtype == "TXT":
                has_txt = True
            elif rtype == "SPF" and not has_txt:
                generated.append(("TXT", value))
            if value != ("NONE",):
                out.append((rtype, value))
    return out + ([] if has_txt else generated)


def owner(name: str) -> str | None:
    """`name` as an absolute zone-file name, or None if DNS cannot hold it."""
    if name.endswith("."):
        name = name[:-1]
    labels = [lb.encode("utf-8") for lb in name.split(".")]
    if len(name.encode("utf-8")) > 253 or any(not 0 < len(lb) < 64 for lb in labels):
        return None
    return "".join("".join(chr(b) if b in _PLAIN else f"\\{b:03d}" for b in lb) + "."
                   for lb in labels)


def _string(s: bytes) -> str:
    body = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\{b:03d}"
                   for b in s)
    return f'"{body}"'


def _text(value: Any) -> tuple[str, str]:
    """(zone-file rdata of a TXT/SPF value, note when it cannot be served exactly)."""
    strings = [s.encode("utf-8") for s in value]
    if not strings:
        return '""', "TXT/SPF record of no strings served as one empty string"
    chunks = [s[i:i + MAX_STRING] for s in strings for i in range(0, max(len(s), 1), MAX_STRING)]
    return " ".join(_string(c) for c in chunks), ""


def _rdata(rtype: str, value: Any) -> tuple[str, str]:
    if rtype in ("TXT", "SPF"):
        return _text(value)
    if rtype == "A":
        return str(ipaddress.IPv4Address(value)), ""
    if rtype == "AAAA":
        return str(ipaddress.IPv6Address(value)), ""
    if rtype == "MX":
        pref, host = value
        target = owner(host) if host else "."
        if target is None:
            raise ValueError(f"MX target {host!r} is not a domain name")
        return f"{int(pref)} {target}", ""
    if rtype in ("PTR", "CNAME"):
        target = owner(value)
        if target is None:
            raise ValueError(f"{rtype} target {value!r} is not a domain name")
        return target, ""
    raise ValueError(f"no zone-file form for {rtype} records")


@dataclass
class World:
    zone: str = ""
    answered: dict[str, frozenset[str]] = field(default_factory=dict)  # names with TIMEOUT
    silent_types: set[tuple[str, str]] = field(default_factory=set)
    names: frozenset[str] = frozenset()
    inexact: list[str] = field(default_factory=list)

    def silent(self, name: str, rdtype: str) -> bool:
        """True for a question the suite's DNS never answers (the resolver must time out)."""
        name = name.lower().rstrip(".")
        if name in self.answered:
            return rdtype not in self.answered[name]
        if (name, rdtype) in self.silent_types:
            return True
        return name.startswith("error.") and name not in self.names


def world(zonedata: dict[str, Any]) -> World:
    """One scenario's zonedata as root-zone lines and silent questions."""
    w = World()
    # testspf keys its zone by lowercased name; a later spelling replaces an earlier one
    data = {name.lower(): rrs for name, rrs in zonedata.items()}
    w.names = frozenset(n.rstrip(".") for n in data)
    lines: list[str] = []
    for name, rrs in data.items():
        key = name.rstrip(".")
        fq = owner(name)
        if fq is None:
            w.inexact.append(f"{name}: not a domain name DNS can hold; not served")
            continue
        served: list[tuple[str, Any]] = []
        for e in entries(rrs):
            if isinstance(e, str):  # TIMEOUT: nothing after it is ever answered
                w.answered[key] = frozenset(t for t, _ in served)
                break
            rtype, value = e
            if value == "TIMEOUT":
                w.silent_types.add((key, rtype))
                continue
            served.append((rtype, value))
        seen: set[tuple[str, str]] = set()
        for rtype, value in served:
            if (key, rtype) in w.silent_types:
                continue
            rdata, note = _rdata(rtype, value)
            if note:
                w.inexact.append(f"{name} {rtype}: {note}")
            if (rtype, rdata) in seen:
                w.inexact.append(f"{name} {rtype}: repeated record served once (an RRset "
                                 "is a set)")
                continue
            seen.add((rtype, rdata))
            lines.append(f"{fq} {rtype} {rdata}")
    w.zone = "\n".join(lines)
    return w
