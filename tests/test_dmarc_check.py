"""The receiver's DMARC verdict from the DKIM and SPF results (RFC 7489 cases)."""

from __future__ import annotations

import pytest

from auth_fakes import FakeResolver, config, context, message
from postwarden.findings import Severity
from postwarden.milter.auth_results import DkimSignature, SpfOutcome
from postwarden.milter.dmarc_check import dmarc_check
from postwarden.milter.pipeline import CheckContext, describe


def ctx_with(dmarc: dict[str, str], spf: SpfOutcome | None = None,
             sigs: list[DkimSignature] | None = None, **host: object) -> CheckContext:
    res = FakeResolver({(f"_dmarc.{d}", "TXT"): [t] for d, t in dmarc.items()})
    ctx = context(res, config(**host))
    if spf is not None:
        ctx.given(spf=spf)
    ctx.given(dkim=sigs or [])
    return ctx


def spf(domain: str, result: str = "pass", identity: str = "mailfrom") -> SpfOutcome:
    return SpfOutcome(domain, identity, result, (("192.0.2.25", result),))


def sig(domain: str, status: str = "pass", bits: int = 2048) -> DkimSignature:
    return DkimSignature(domain, "s", "rsa-sha256", status, "rsa", bits)


REJECT = {"example.com": "v=DMARC1; p=reject"}


@pytest.mark.parametrize(("evidence", "passes"), [
    ({"spf": spf("example.com")}, True),
    ({"sigs": [sig("example.com")]}, True),
    ({"spf": spf("bounce.example.com")}, True),                 # relaxed SPF alignment
    ({"sigs": [sig("mail.example.com")]}, True),                # relaxed DKIM alignment
    ({"spf": spf("example.net")}, False),                       # unaligned SPF pass
    ({"sigs": [sig("example.net")]}, False),                    # unaligned DKIM pass
    ({"spf": spf("example.com", "softfail")}, False),
    ({"sigs": [sig("example.com", "fail")]}, False),
    ({"sigs": [sig("example.com", bits=512)]}, False),          # RFC 8301: key too small
    ({"spf": spf("example.com", "fail"), "sigs": [sig("example.com")]}, True),  # either
    ({"spf": spf("mail.example.com", identity="helo")}, True),  # null sender: HELO identity
    ({"sigs": [sig("example.com", "unverified")]}, True),       # verification switched off
    ({}, False),
])
def test_pass_or_fail(evidence: dict[str, object], passes: bool) -> None:
    ctx = ctx_with(REJECT, **evidence)  # type: ignore[arg-type]
    out = dmarc_check(message(), ctx)
    assert describe(ctx.known)["dmarc"] == ("pass" if passes else "fail")
    assert [f.id for f in out] == ([] if passes else ["dmarc.fail"])


@pytest.mark.parametrize(("record", "evidence"), [
    ("v=DMARC1; p=reject; aspf=s", {"spf": spf("bounce.example.com")}),
    ("v=DMARC1; p=reject; adkim=s", {"sigs": [sig("mail.example.com")]}),
])
def test_strict_alignment_fails_for_subdomains(record: str, evidence: dict[str, object]) -> None:
    ctx = ctx_with({"example.com": record}, **evidence)  # type: ignore[arg-type]
    assert [f.id for f in dmarc_check(message(), ctx)] == ["dmarc.fail"]


@pytest.mark.parametrize(("policy", "severity", "words"), [
    ("reject", Severity.CRITICAL, "will be rejected at the receiver"),
    ("quarantine", Severity.ERROR, "spam folder"),
    ("none", Severity.WARNING, "no DMARC policy"),
])
def test_fail_severity_and_data_follow_the_policy(policy: str, severity: Severity,
                                                  words: str) -> None:
    ctx = ctx_with({"example.com": f"v=DMARC1; p={policy}; pct=100"})
    (f,) = dmarc_check(message(), ctx)
    assert f.id == "dmarc.fail" and f.severity is severity
    assert f.data["policy"] == policy and f.data["record_at"] == "example.com"
    assert f"publishes p={policy}" in f.text and words in f.text


def test_reject_is_the_most_severe_finding() -> None:
    ctx = ctx_with(REJECT)
    (f,) = dmarc_check(message(), ctx)
    assert f.severity == max(Severity)


def test_subdomain_inherits_sp_from_the_organizational_domain() -> None:
    ctx = ctx_with({"example.com": "v=DMARC1; p=reject; sp=quarantine"})
    (f,) = dmarc_check(message("N <news@lists.example.com>"), ctx)
    assert f.data["policy"] == "quarantine" and f.data["record_at"] == "example.com"


def test_no_dmarc_record() -> None:
    ctx = ctx_with({}, spf=spf("example.com"))
    out = dmarc_check(message(), ctx)
    assert [f.id for f in out] == ["dmarc.none"]
    assert "_dmarc.example.com" in out[0].text
    assert describe(ctx.known)["dmarc"] == "none"


def test_missing_from() -> None:
    ctx = ctx_with(REJECT, spf=spf("example.com"))
    out = dmarc_check(message(None), ctx)
    assert [f.id for f in out] == ["dmarc.no_from"]


def test_from_without_address() -> None:
    ctx = ctx_with(REJECT, spf=spf("example.com"))
    assert [f.id for f in dmarc_check(message("undisclosed-recipients:;"), ctx)] == \
        ["dmarc.no_from"]


def test_multiple_from_evaluates_every_domain() -> None:
    ctx = ctx_with({"example.com": "v=DMARC1; p=reject", "example.net": "v=DMARC1; p=none"},
                   spf=spf("example.com"))
    out = dmarc_check(message("A <a@example.com>, B <b@example.net>"), ctx)
    assert [f.id for f in out] == ["dmarc.multiple_from", "dmarc.fail"]
    assert out[1].data["domain"] == "example.net"


def test_two_from_headers_same_domain() -> None:
    ctx = ctx_with(REJECT, spf=spf("example.com"))
    out = dmarc_check(message(["A <a@example.com>", "B <b@example.com>"]), ctx)
    assert [f.id for f in out] == ["dmarc.multiple_from"]


def test_record_temperror() -> None:
    res = FakeResolver()
    res.failing.add("_dmarc.example.com")
    ctx = context(res, config())
    ctx.given(spf=spf("example.com"))
    out = dmarc_check(message(), ctx)
    assert [f.id for f in out] == ["dmarc.temperror"]
    assert describe(ctx.known)["dmarc"] == "temperror"


def test_evidence_temperror_gives_no_verdict() -> None:
    ctx = ctx_with(REJECT, spf=spf("example.com", "temperror"))
    assert [f.id for f in dmarc_check(message(), ctx)] == ["dmarc.temperror"]


def test_record_fetched_once_per_message() -> None:
    ctx = ctx_with(REJECT, spf=spf("example.com"))
    res = ctx.services.resolver
    dmarc_check(message(), ctx)
    dmarc_check(message(), ctx)
    assert res.asked.count(("_dmarc.example.com", "TXT")) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(("domains", "advice"), [
    (["example.com"], "sign it with a key of example.com"),
    (["example.org"], "not a domain of this host"),
    ([], "if example.com is not yours"),
])
def test_advice_depends_on_whose_domain_it_is(domains: list[str], advice: str) -> None:
    ctx = ctx_with(REJECT, domains=domains)
    (f,) = dmarc_check(message(), ctx)
    assert advice in f.text


# --- RFC 7489 6.6.3 and RFC 9989 side by side ------------------------------------------

def sub_ctx(sub: str | list[str], parent: str = "v=DMARC1; p=reject",
            **evidence: object) -> CheckContext:
    res = FakeResolver({("_dmarc.example.com", "TXT"): [parent],
                        ("mail.example.com", "A"): ["192.0.2.1"]})
    for text in [sub] if isinstance(sub, str) else sub:
        res.add("_dmarc.mail.example.com", "TXT", text)
    ctx = context(res, config())
    if "spf" in evidence:
        ctx.given(spf=evidence["spf"])
    ctx.given(dkim=evidence.get("sigs", []))
    return ctx


def test_unusable_record_at_the_from_domain_is_no_dmarc_not_the_parents() -> None:
    ctx = sub_ctx("v=DMARC1; p=bogus")
    out = dmarc_check(message("A <a@mail.example.com>"), ctx)
    assert [f.id for f in out] == ["dmarc.none"]
    assert "no usable DMARC record" in out[0].text and "p=bogus" in out[0].text
    assert out[0].severity is Severity.WARNING
    assert (describe(ctx.known)["dmarc"], describe(ctx.known)["dmarc_gen"]) == ("none", "both")


def test_two_records_at_the_from_domain_split_the_generations() -> None:
    ctx = sub_ctx(["v=DMARC1; p=none", "v=DMARC1; p=quarantine"])
    out = dmarc_check(message("A <a@mail.example.com>"), ctx)
    assert [f.id for f in out] == ["dmarc.generations_differ"]  # never dmarc.fail
    (f,) = out
    assert "RFC 7489 no DMARC (2 DMARC records" in f.text
    assert "RFC 9989 fails p=reject of example.com" in f.text
    assert f.severity is Severity.CRITICAL  # the stricter outcome: 9989 rejects
    assert f.data["generation"] == "9989" and f.data["result"] == "fail"
    assert f.data["rfc7489"]["status"] == "none"
    assert (describe(ctx.known)["dmarc"], describe(ctx.known)["dmarc_gen"]) == ("fail", "9989")


def test_generations_agreeing_on_a_pass_say_nothing() -> None:
    ctx = sub_ctx(["v=DMARC1; p=none", "v=DMARC1; p=reject"], spf=spf("example.com"))
    out = dmarc_check(message("A <a@mail.example.com>"), ctx)
    # 7489: no DMARC; 9989: example.com's policy, and relaxed SPF alignment passes
    assert [f.id for f in out] == ["dmarc.generations_differ"]
    assert out[0].severity is Severity.WARNING and "passes" in out[0].text


@pytest.mark.parametrize(("record", "severity", "words"), [
    ("v=DMARC1; p=reject; t=y", Severity.CRITICAL, "RFC 9989 fails p=reject, t=y: quarantine"),
    ("v=DMARC1; p=reject; pct=0", Severity.CRITICAL, "RFC 7489 fails p=reject, pct=0"),
    ("v=DMARC1; p=quarantine; pct=10", Severity.ERROR, "pct=10: quarantine for 10%"),
])
def test_pct_and_t_differ(record: str, severity: Severity, words: str) -> None:
    ctx = ctx_with({"example.com": record})
    (f,) = dmarc_check(message(), ctx)
    assert f.id == "dmarc.generations_differ" and f.severity is severity
    assert words in f.text


def test_np_for_a_subdomain_that_does_not_exist() -> None:
    res = FakeResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=none; np=reject"]})
    ctx = context(res, config())
    (f,) = dmarc_check(message("A <a@ghost.example.com>"), ctx)
    assert f.id == "dmarc.generations_differ" and f.severity is Severity.CRITICAL
    assert "RFC 9989 fails np=reject of example.com" in f.text
    assert "RFC 7489 fails p=none of example.com" in f.text


def test_relaxed_alignment_by_tree_walk_and_by_psl_agree() -> None:
    ctx = ctx_with(REJECT, sigs=[sig("mail.example.com")])
    assert dmarc_check(message(), ctx) == []
    assert (describe(ctx.known)["dmarc"], describe(ctx.known)["dmarc_gen"]) == ("pass", "both")


def test_tree_walk_psd_y_changes_alignment() -> None:
    """bank.example is a PSD (psd=y): giant.bank.example and mega.bank.example are two
    organizations to RFC 9989, one to the PSL (unknown TLD: bank.example's suffix)."""
    res = FakeResolver({("_dmarc.bank.example", "TXT"): ["v=DMARC1; p=reject; psd=y"],
                        ("_dmarc.giant.bank.example", "TXT"): ["v=DMARC1; p=reject"]})
    ctx = context(res, config())
    ctx.given(dkim=[sig("mail.mega.bank.example")])
    (f,) = dmarc_check(message("A <a@giant.bank.example>"), ctx)
    assert f.id == "dmarc.generations_differ"
    assert "RFC 7489 passes" in f.text and "RFC 9989 fails p=reject" in f.text


def test_tree_walk_failure_is_temperror_not_pass() -> None:
    ctx = ctx_with(REJECT, sigs=[sig("mail.example.com")])
    ctx.services.resolver.failing.add("_dmarc.com")  # type: ignore[attr-defined]
    out = dmarc_check(message(), ctx)
    assert [f.id for f in out] == ["dmarc.temperror"]
    assert describe(ctx.known)["dmarc_gen"] == "9989"


def test_idn_from_domain_is_asked_by_its_a_label() -> None:
    res = FakeResolver({("_dmarc.xn--fa-hia.de", "TXT"): ["v=DMARC1; p=reject"]})
    ctx = context(res, config())
    (f,) = dmarc_check(message("A <a@faß.de>"), ctx)
    assert f.id == "dmarc.fail" and ("_dmarc.fass.de", "TXT") not in res.asked


def test_unverifiable_signature_with_a_failed_walk_is_temperror() -> None:
    ctx = ctx_with(REJECT, sigs=[sig("mail.example.com", "temperror")])
    ctx.services.resolver.failing.add("_dmarc.com")  # type: ignore[attr-defined]
    assert [f.id for f in dmarc_check(message(), ctx)] == ["dmarc.temperror"]


def test_a_known_fail_stands_when_the_other_generation_is_unknown() -> None:
    """From example.net, SPF passes for example.com only: RFC 7489 fails; the tree walk
    cannot finish (_dmarc.net times out), so RFC 9989 is unknown. The fail is reported."""
    res = FakeResolver({("_dmarc.example.net", "TXT"): ["v=DMARC1; p=reject"]})
    res.failing.add("_dmarc.net")
    ctx = context(res, config())
    ctx.given(spf=spf("example.com"))
    (f,) = dmarc_check(message("V <v@example.net>"), ctx)
    assert f.id == "dmarc.fail" and f.severity is Severity.CRITICAL
    assert f.data["generation"] == "7489"
    assert (describe(ctx.known)["dmarc"], describe(ctx.known)["dmarc_gen"]) == ("fail", "7489")
