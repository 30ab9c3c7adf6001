"""The DMARC record grammar, as RFC 7489 and RFC 9989 receivers read it (suite dmarc-records).

Our own table. Cases re-expressed from RFC 7489 6.3/6.6.3, RFC 9989 4.7/4.8/4.10.1,
OpenDMARC's record-parser tests and the authheaders DMARC cases. Where OpenDMARC
differs from the RFC text the RFC wins, and the row says so:
- OpenDMARC takes `p=n` as p=none (it compares the first letter); the RFC grammar
  has only none/quarantine/reject, so `p=n` is an invalid p.
- OpenDMARC rejects the whole record for a bad adkim=/aspf=/pct=; RFC 7489 6.3 and
  RFC 9989 4.8 discard such syntax errors in favour of the defaults.
"""

from __future__ import annotations

import pytest

import suites
from postwarden.dmarc_record import RecordError, is_dmarc, parse, valid_uri

SUITE = "dmarc-records"
RUA = "rua=mailto:d@example.com"

# (record, RFC 7489 reading, RFC 9989 reading); a reading is None (no DMARC) or
# (p, sp, downgraded to p=none); np is checked separately.
READINGS: list[tuple[str, tuple[str, str, bool] | None, tuple[str, str, bool] | None]] = [
    ("v=DMARC1; p=none; rf=afrf; rua=mailto:a@example.com; ruf=mailto:f@example.com",
     ("none", "", False), ("none", "", False)),
    ("v=DMARC1; p=none;", ("none", "", False), ("none", "", False)),
    ("v=DMARC1; p=reject;", ("reject", "", False), ("reject", "", False)),
    ("v=DMARC1; p=quarantine;", ("quarantine", "", False), ("quarantine", "", False)),
    ("v=DMARC1; p=n;", None, None),  # OpenDMARC: p=none; the grammar: invalid p
    ("v=DMARC1; p=bob;", None, None),
    ("v=DMARC1; p=none; sp=bob;", None, None),  # invalid sp costs the whole policy
    ("v=DMARC1; p=reject; sp=bob; " + RUA, ("none", "", True), ("none", "", True)),
    ("v=DMARC1; p=none; adkim=bob;", ("none", "", False), ("none", "", False)),
    ("v=DMARC1; p=none; aspf=bob;", ("none", "", False), ("none", "", False)),
    ("v=DMARC1; p=none; pct=500;", ("none", "", False), ("none", "", False)),
    ("v=DMARC1; pct=100;", None, ("none", "", False)),  # 9989: no p= reads as p=none
    ("v=DMARC1", None, ("none", "", False)),
    ("v=DMARC1; " + RUA, ("none", "", True), ("none", "", False)),
    ("v=DMARC1; p=none; rua=ftp://abuse.example.com", ("none", "", False), ("none", "", False)),
    ("v=DMARC1; p=none; ruf=mailto://abuse.com; foo=bar; buzz=happy;",
     ("none", "", False), ("none", "", False)),
    ("v = DMARC1; p = quarantine", ("quarantine", "", False), ("quarantine", "", False)),
    ("v=DMARC1 ;p = None", ("none", "", False), ("none", "", False)),
    ("V=DMARC1; P=Reject; SP=None", ("reject", "none", False), ("reject", "none", False)),
    ("v=DMARC1; p=quarantine; garbage", ("quarantine", "", False), ("quarantine", "", False)),
    ("v=DMARC1; garbage; p=reject", ("reject", "", False), ("reject", "", False)),
    ("v=DMARC1; p=reject; np=bogus", ("reject", "", False), None),  # np: 9989 only
    ("v=DMARC1; p=reject; np=bogus; " + RUA, ("reject", "", False), ("none", "", True)),
    ("v=DMARC1; p=bogus; rua=dmarc@example.com", None, None),  # not a URI: not a valid rua
    ("v=DMARC1; p=bogus; rua=dmarc@example.com, mailto:d@example.com",
     ("none", "", True), ("none", "", True)),
    ("v=DMARC1; p=bogus; rua=mailto:d@example.com!10m", ("none", "", True), ("none", "", True)),
    ("v=DMARC1; p=", None, None),
    ("v=DMARC1; p=reject; p=none", ("reject", "", False), ("reject", "", False)),
    ("v=DMARC1; sp=reject; p=none", ("none", "reject", False), ("none", "reject", False)),
    ("v=DMARC1; p=reject; sp=quarantine; np=none; psd=n; t=y",
     ("reject", "quarantine", False), ("reject", "quarantine", False)),
    ("v=DMARC1;p=none;pct=100;adkim=r;aspf=r;ruf=mailto:f@univ.example;fo=1;"
     "rua=mailto:a@univ.example;", ("none", "", False), ("none", "", False)),
]

NOT_DMARC = ["", "V=BOB", "v=dmarc1; p=reject", "v=DMARC1p=reject", "p=reject; v=DMARC1",
             "v=DMARC2; p=reject", "v=spf1 -all", "google-site-verification=abc",
             "vv=DMARC1; p=reject"]


def _read(text: str, gen: str) -> tuple[str, str, bool] | None:
    r = parse(text).reading(gen)  # type: ignore[arg-type]
    return (r.p, r.sp, r.downgraded) if r.usable else None


@pytest.mark.parametrize(("text", "old", "new"), READINGS)
def test_readings(text: str, old: object, new: object) -> None:
    got = (_read(text, "7489"), _read(text, "9989"))
    suites.record(SUITE, f"read {text!r}", got == (old, new))
    assert got == (old, new)


@pytest.mark.parametrize("text", NOT_DMARC)
def test_not_a_dmarc_record(text: str) -> None:
    ok = not is_dmarc(text)
    suites.record(SUITE, f"not DMARC {text!r}", ok)
    assert ok
    with pytest.raises(RecordError):
        parse(text)


# (record, attribute, value, a warning expected)
TAGS: list[tuple[str, str, object, bool]] = [
    ("v=DMARC1; p=reject; adkim=s; aspf=s", "adkim", "s", False),
    ("v=DMARC1; p=reject; adkim=x", "adkim", "r", True),
    ("v=DMARC1; p=reject; aspf=strict", "aspf", "r", True),
    ("v=DMARC1; p=reject; pct=50", "pct", 50, False),
    ("v=DMARC1; p=reject; pct=200", "pct", 100, True),
    ("v=DMARC1; p=reject; pct=abc", "pct", 100, True),
    ("v=DMARC1; p=reject; pct=-1", "pct", 100, True),
    ("v=DMARC1; p=reject; t=y", "t", "y", False),
    ("v=DMARC1; p=reject; t=maybe", "t", "n", True),
    ("v=DMARC1; p=reject; psd=Y", "psd", "y", False),
    ("v=DMARC1; p=reject; psd=x", "psd", "u", True),
    ("v=DMARC1; p=reject; np=Quarantine", "np", "quarantine", False),
    ("v=DMARC1; p=reject; rua=mailto:a@example.com,mailto:b@example.com", "rua",
     ("mailto:a@example.com", "mailto:b@example.com"), False),
    ("v=DMARC1; p=reject; rua=mailto:a@example.com , dmarc@example.com", "rua",
     ("mailto:a@example.com",), True),
    ("v=DMARC1; p=reject; foo=bar", "p", "reject", True),  # unknown tag: ignored, said
    ("v=DMARC1; p=reject; p=none", "p", "reject", True),
    ("v=DMARC1; sp=none; p=reject", "p", "reject", True),  # p= not second: said
    ("v=DMARC1; p=reject;", "p", "reject", False),
]


@pytest.mark.parametrize(("text", "attr", "value", "warned"), TAGS)
def test_tags(text: str, attr: str, value: object, warned: bool) -> None:
    rec = parse(text)
    ok = getattr(rec, attr) == value and bool(rec.warnings) == warned
    suites.record(SUITE, f"tag {attr} of {text!r}", ok)
    assert getattr(rec, attr) == value
    assert bool(rec.warnings) == warned, rec.warnings


@pytest.mark.parametrize(("uri", "ok"), [
    ("mailto:d@example.com", True), ("mailto:d@example.com!10m", True),
    ("https://reports.example.com/dmarc", True), ("mailto:d%40x@example.com", True),
    ("d@example.com", False), ("mailto:", False), ("mailto:a b@example.com", False),
    ("mailto:d@example.com!", False), ("1mailto:d@example.com", False), ("", False),
    ("mailto:d@example.com%zz", False),
])
def test_reporting_uris(uri: str, ok: bool) -> None:
    suites.record(SUITE, f"uri {uri!r}", valid_uri(uri) is ok)
    assert valid_uri(uri) is ok


def test_np_is_read_by_9989_only() -> None:
    rec = parse("v=DMARC1; p=none; sp=quarantine; np=reject")
    assert rec.reading("9989").np == "reject"
    assert rec.reading("7489").np == ""
    assert "np" in rec.reading("7489").ignored and "pct" not in rec.reading("7489").ignored
    assert "pct" in parse("v=DMARC1; p=none; pct=5").reading("9989").ignored


def test_unusable_reading_says_why() -> None:
    r = parse("v=DMARC1; p=bogus").reading("7489")
    assert not r.usable and "p=bogus" in r.note and "no valid rua" in r.note
