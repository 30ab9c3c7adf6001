"""The DMARC record grammar, read as both generations of receivers read it.

One parser (`parse`) for the milter and the self-check. The tag-value syntax is
RFC 7489 6.3 / RFC 9989 4.7-4.8: white space around `=` and `;` is valid, tag
names are case-insensitive, `v=DMARC1` comes first and `DMARC1` is exact. A part
without `=`, an unknown tag or a bad optional value is ignored with a warning,
never fatal: "syntax errors in the remainder of the record" are discarded in
favour of defaults.

What the record *means* depends on the generation (`Reading`):

- RFC 7489 6.6.3 step 6: no valid `p=`, or an invalid `sp=`, makes the record
  `p=none` when `rua=` holds at least one syntactically valid URI, otherwise the
  receiver applies no DMARC to the message. An invalid `sp=` is therefore never
  dropped while `p=` is kept: it costs the whole policy. `np`, `psd`, `t` are
  unknown tags there; `pct` counts.
- RFC 9989 4.7/4.10.1: a record without `p=` reads as `p=none`; a `p=` that is
  present but invalid, or an invalid `sp=`/`np=`, is the same rua-or-nothing
  rule. `pct`, `rf`, `ri` are gone; `np`, `psd`, `t` count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

Generation = Literal["7489", "9989"]
GENERATIONS: tuple[Generation, ...] = ("7489", "9989")
POLICIES = ("none", "quarantine", "reject")
_LOWER = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_KNOWN = {"7489": {"v", "p", "sp", "rua", "ruf", "adkim", "aspf", "fo", "rf", "ri", "pct"},
          "9989": {"v", "p", "sp", "np", "psd", "t", "rua", "ruf", "adkim", "aspf", "fo"}}
_VERSION = re.compile(r"[ \t]*(?i:v)[ \t]*=[ \t]*DMARC1[ \t]*(?:;|$)")
_TAG_NAME = re.compile(r"[A-Za-z]+")
# RFC 3986 URI: scheme ":" something; "," and "!" must be %-encoded in a DMARC URI
# (RFC 9989 4.8), an optional "!size" suffix is obsolete syntax and allowed.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9._~$&'()*+=:@/?#\[\]-]|%[0-9A-Fa-f]{2})+")
_SIZE = re.compile(r"![0-9]+[kmgtKMGT]?$")


class RecordError(ValueError):
    """The TXT string is not a DMARC record at all (no leading v=DMARC1)."""


def lower(policy: str) -> str:
    """The next less strict policy (what pct= sampling and t=y fall back to)."""
    return _LOWER.get(policy, "none")


def is_dmarc(text: str) -> bool:
    """Does the TXT string start with the v=DMARC1 tag (discovery keeps only these)?"""
    return _VERSION.match(text) is not None


def valid_uri(uri: str) -> bool:
    """A syntactically valid DMARC reporting URI (scheme, colon, URI characters)."""
    return _URI.fullmatch(_SIZE.sub("", uri.strip())) is not None


@dataclass(frozen=True)
class DmarcRecord:
    """The tags of one v=DMARC1 record. Policy values are "" when the tag is absent,
    and kept as written (lower case) when invalid: `Reading` decides what they mean."""

    raw: str
    p: str = ""
    sp: str = ""
    np: str = ""
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    t: str = "n"
    psd: str = "u"
    rua: tuple[str, ...] = ()  # the syntactically valid URIs, in order
    rua_invalid: tuple[str, ...] = ()
    present: frozenset[str] = frozenset()  # tag names given
    warnings: tuple[str, ...] = ()  # what was ignored, in words

    def reading(self, gen: Generation) -> Reading:
        return _reading(self, gen)


@dataclass(frozen=True)
class Reading:
    """What one generation of receivers takes from a record.

    usable False: the receiver applies no DMARC (`note` says why). `downgraded`:
    the record is read as p=none because of `note`.
    """

    generation: Generation
    usable: bool
    p: str = ""
    sp: str = ""  # "" = not given: p applies to subdomains
    np: str = ""  # RFC 9989 only; "" = not given: sp (else p) applies
    downgraded: bool = False
    note: str = ""
    ignored: tuple[str, ...] = field(default=())  # tags this generation does not know


def _problems(rec: DmarcRecord, gen: Generation) -> list[str]:
    out = []
    if not rec.p and "p" not in rec.present:
        if gen == "7489":
            out.append("no p= tag")
    elif rec.p not in POLICIES:
        out.append(f"p={rec.p or '(empty)'} is not none, quarantine or reject")
    names = ("sp", "np") if gen == "9989" else ("sp",)
    for tag in names:
        value = getattr(rec, tag)
        if tag in rec.present and value not in POLICIES:
            out.append(f"{tag}={value or '(empty)'} is not none, quarantine or reject")
    return out


@lru_cache(maxsize=2048)
def _reading(rec: DmarcRecord, gen: Generation) -> Reading:
    ignored = tuple(sorted(t for t in rec.present if t not in _KNOWN[gen]))
    problems = _problems(rec, gen)
    if problems:
        why = "; ".join(problems)
        if rec.rua:
            return Reading(gen, True, "none", downgraded=True, ignored=ignored,
                           note=f"{why}: read as p=none because rua= is valid")
        return Reading(gen, False, ignored=ignored,
                       note=f"{why}, and there is no valid rua=")
    p = rec.p or "none"
    note = "no p= tag: read as p=none" if not rec.p else ""
    return Reading(gen, True, p, rec.sp, rec.np if gen == "9989" else "", note=note,
                   ignored=ignored)


@lru_cache(maxsize=1024)
def parse(text: str) -> DmarcRecord:
    """Parse one TXT string; RecordError only when it is not a v=DMARC1 record."""
    if not is_dmarc(text):
        raise RecordError("does not start with v=DMARC1")
    tags: dict[str, str] = {}
    warnings: list[str] = []
    order: list[str] = []
    for i, part in enumerate(text.split(";")):
        part = part.strip(" \t")
        if not part:
            continue
        tag, eq, value = part.partition("=")
        tag, value = tag.strip(" \t").lower(), value.strip(" \t")
        if not eq or not _TAG_NAME.fullmatch(tag):
            warnings.append(f"{part[:40]!r} is not a tag=value pair: ignored")
            continue
        if i == 0:
            continue  # the version tag, checked above
        if tag in tags:
            warnings.append(f"{tag}= given twice: the first is used")
            continue
        tags[tag] = value
        order.append(tag)
    if "p" in tags and order[0] != "p":
        warnings.append("p= is not the tag after v=DMARC1 (RFC 7489's grammar puts it there)")
    for tag in sorted(set(tags) - _KNOWN["7489"] - _KNOWN["9989"]):
        warnings.append(f"unknown tag {tag}= ignored")
    rua: list[str] = []
    bad: list[str] = []
    for uri in (u.strip(" \t") for u in tags.get("rua", "").split(",")):
        if uri:
            (rua if valid_uri(uri) else bad).append(uri)
    if bad:
        warnings.append(f"rua= {', '.join(bad)} is not a URI (write mailto:ADDRESS)")
    adkim = _choice(tags, "adkim", ("r", "s"), "r", warnings)
    aspf = _choice(tags, "aspf", ("r", "s"), "r", warnings)
    t = _choice(tags, "t", ("y", "n"), "n", warnings)
    psd = _choice(tags, "psd", ("y", "n", "u"), "u", warnings)
    pct = 100
    if "pct" in tags:
        value = tags["pct"]
        pct = int(value) if value.isdigit() and int(value) <= 100 else -1
        if pct < 0:
            warnings.append(f"pct={value} is not 0-100: 100 is used")
            pct = 100
    return DmarcRecord(text, tags.get("p", "").lower(), tags.get("sp", "").lower(),
                       tags.get("np", "").lower(), adkim, aspf, pct, t, psd, tuple(rua),
                       tuple(bad), frozenset(tags), tuple(warnings))


def _choice(tags: dict[str, str], tag: str, allowed: tuple[str, ...], default: str,
            warnings: list[str]) -> str:
    value = tags.get(tag)
    if value is None:
        return default
    if value.lower() in allowed:
        return value.lower()
    warnings.append(f"{tag}={value} is not {' or '.join(allowed)}: {default} is used")
    return default
