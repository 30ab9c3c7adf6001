"""The Public Suffix List's own test vectors against postwarden's organizational domain.

test_psl.txt ships inside the installed `publicsuffixlist` package (read from there
at test time, never copied into git): `checkPublicSuffix(domain, expected)` where
expected is the registrable domain or null for a public suffix or an invalid name.
postwarden answers with A-labels (IDNA2008), so an expected Unicode name is
compared in its A-label form, normalised by the same function. Plus our own IDN
cases: punycode and Unicode forms, and where IDNA2008 differs from IDNA2003.
"""

from __future__ import annotations

import re
from pathlib import Path

import publicsuffixlist
import pytest

import suites
from postwarden.orgdomain import aligned, name, normalize, org_domain, registered_domain

SUITE_PSL = "psl-vectors"
SUITE_IDN = "psl-idn"
_CASE = re.compile(r"^checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);")


def _vectors() -> list[tuple[str | None, str | None]]:
    path = Path(publicsuffixlist.__file__).parent / "test_psl.txt"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _CASE.match(line.strip())
        if m:
            a, b = (None if g == "null" else g[1:-1] for g in m.groups())
            out.append((a, b))
    return out


VECTORS = _vectors()


def test_the_vector_file_is_complete() -> None:
    assert len(VECTORS) == 78  # the file's active checkPublicSuffix lines


@pytest.mark.parametrize(("domain", "expected"), VECTORS)
def test_psl_vector(domain: str | None, expected: str | None) -> None:
    got = registered_domain(domain) if domain is not None else None
    want = normalize(expected) if expected is not None else None
    suites.record(SUITE_PSL, f"{domain} -> {expected}", got == want)
    assert got == want


# (input, A-label form or "" when invalid)
IDN: list[tuple[str, str]] = [
    ("faß.de", "xn--fa-hia.de"),            # IDNA2008 keeps ß; IDNA2003 made it fass.de
    ("FASS.de", "fass.de"),                 # ... which is a different domain
    ("ςοφία.gr", "xn--kxae4blv.gr"),        # final sigma kept (IDNA2003: σοφία)
    ("σοφία.gr", "xn--kxae4bpq.gr"),
    ("Bücher.example", "xn--bcher-kva.example"),  # UTS #46 maps upper case
    ("ＢＵＣＨ.example", "buch.example"),    # ... and full-width letters
    ("例え。jp", "xn--r8jz45g.jp"),          # ideographic full stop is a dot
    ("xn--fa-hia.de", "xn--fa-hia.de"),     # an A-label stays as it is
    ("XN--FA-HIA.DE.", "xn--fa-hia.de"),
    ("xn--zz.example", ""),                 # not a valid A-label
    ("☃.example", ""),                      # a symbol: DISALLOWED in IDNA2008 (2003 took it)
    ("a\u200db.example", ""),               # ZWJ outside its CONTEXTJ rule
    ("example..com", ""),                   # empty label
    ("-bad.example", ""),
    ("x" * 64 + ".example", ""),            # label over 63 octets
    ("_dmarc.example.com", "_dmarc.example.com"),  # service labels are DNS names
]


@pytest.mark.parametrize(("text", "ascii"), IDN)
def test_idn_normalisation(text: str, ascii: str) -> None:
    n = name(text)
    ok = n.ascii == ascii and (bool(n.error) == (ascii == ""))
    suites.record(SUITE_IDN, f"name {text!r}", ok)
    assert n.ascii == ascii
    assert bool(n.error) == (ascii == "")


# organizational domain (RFC 7489, PSL) of Unicode and punycode forms alike
IDN_ORG: list[tuple[str, str]] = [
    ("www.faß.de", "xn--fa-hia.de"),
    ("www.xn--fa-hia.de", "xn--fa-hia.de"),
    ("mail.食狮.公司.cn", "xn--85x722f.xn--55qx5d.cn"),
    ("mail.xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn"),
    ("公司.cn", "xn--55qx5d.cn"),           # a public suffix is its own org domain
    ("ο.σοφία.gr", "xn--kxae4bpq.gr"),
    ("☃.example", ""),
]


@pytest.mark.parametrize(("domain", "org"), IDN_ORG)
def test_idn_org_domain(domain: str, org: str) -> None:
    suites.record(SUITE_IDN, f"org {domain}", org_domain(domain) == org)
    assert org_domain(domain) == org


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("faß.de", "xn--fa-hia.de", True),
    ("mail.faß.de", "FAß.de", True),
    ("faß.de", "fass.de", False),           # IDNA2003 would have aligned these
    ("ςοφία.gr", "σοφία.gr", False),
])
def test_idn_alignment(a: str, b: str, expected: bool) -> None:
    suites.record(SUITE_IDN, f"aligned {a} {b}", aligned(a, b) is expected)
    assert aligned(a, b) is expected
