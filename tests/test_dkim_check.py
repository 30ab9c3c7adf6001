"""The DKIM check: missing, unaligned, invalid, weak key, temperror; results as evidence."""

from __future__ import annotations

import base64
import dataclasses
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from auth_fakes import FakeResolver, config, context, ed25519_key, message, rsa_key
from postwarden.config import DkimKey
from postwarden.findings import Severity
from postwarden.message import Message
from postwarden.milter.dkim_check import DkimCheck
from postwarden.milter.dkim_sign import (
    body_hash,
    load_key,
    make_signature,
    signed_header_names,
)
from postwarden.milter.pipeline import describe


def signed(tmp: Path, domain: str = "example.com", selector: str = "sel", bits: int = 2048,
           msg: Message | None = None, ed: bool = False) -> tuple[Message, str]:
    """The message signed by d=domain (whatever its From says), and the key's TXT record."""
    if ed:
        path, txt = ed25519_key(tmp)
    elif bits < 1024:  # cryptography will not generate these; openssl still does
        path = tmp / "weak.key"
        subprocess.run(["openssl", "genrsa", "-out", str(path), str(bits)], check=True,
                       capture_output=True)
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        txt = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    else:
        path, txt = rsa_key(tmp, bits, f"{domain}-{bits}.key")
    key = load_key(DkimKey(domain, selector, str(path)), min_bits=0)
    msg = msg or message(f"Alice <alice@{domain}>")
    include = signed_header_names(msg.headers, ["from", "to", "subject", "date"])
    value = make_signature(msg.raw_headers(), body_hash(msg.body), key, include, 1700000000)
    out = Message(queue_id=msg.queue_id, origin=msg.origin, mail_from=msg.mail_from,
                  headers=[("DKIM-Signature", value), *msg.headers], body=msg.body)
    return out, txt


def ids(findings: list) -> list[str]:  # type: ignore[type-arg]
    return [f.id for f in findings]


def test_missing() -> None:
    ctx = context(FakeResolver())
    out = DkimCheck()(message(), ctx)
    assert ids(out) == ["dkim.missing"]
    assert "sign with a key of example.com" in out[0].text
    assert ctx.known.dkim() == () and describe(ctx.known)["dkim"] == "none"


@pytest.mark.parametrize("ed", [False, True])
def test_valid_aligned_signature_gives_no_finding(tmp_path: Path, ed: bool) -> None:
    msg, txt = signed(tmp_path, ed=ed)
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    ctx = context(res)
    assert DkimCheck()(msg, ctx) == []
    (sig,) = ctx.known.dkim()
    assert (sig.domain, sig.selector, sig.status) == ("example.com", "sel", "pass")
    assert sig.key_type == ("ed25519" if ed else "rsa")
    assert describe(ctx.known)["dkim"] == "pass"


def test_subdomain_signer_is_aligned_relaxed_not_strict(tmp_path: Path) -> None:
    msg, txt = signed(tmp_path, domain="mail.example.com",
                      msg=message("Alice <alice@mail.example.com>"))
    msg = dataclasses.replace(msg, headers=[
        (k, v.replace("alice@mail.example.com", "alice@example.com"))
        if k == "From" else (k, v) for k, v in msg.headers])
    res = FakeResolver({("sel._domainkey.mail.example.com", "TXT"): [txt]})
    # From changed after signing: invalid, but the alignment verdict is what we test here
    out = DkimCheck()(msg, context(res))
    assert "dkim.unaligned" not in ids(out)
    res = FakeResolver({("sel._domainkey.mail.example.com", "TXT"): [txt],
                        ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; adkim=s"]})
    out = DkimCheck()(msg, context(res))
    assert "dkim.unaligned" in ids(out)
    f = next(f for f in out if f.id == "dkim.unaligned")
    assert f.data["adkim"] == "s" and "adkim=s" in f.text


def test_other_domain_signature_is_unaligned(tmp_path: Path) -> None:
    base = message("Alice <alice@example.com>")
    msg, txt = signed(tmp_path, domain="example.net", msg=base)
    res = FakeResolver({("sel._domainkey.example.net", "TXT"): [txt]})
    ctx = context(res)
    out = DkimCheck()(msg, ctx)
    assert ids(out) == ["dkim.unaligned"]
    assert out[0].data["signers"] == "example.net"
    assert ctx.known.dkim()[0].status == "pass"
    assert describe(ctx.known)["dkim"] == "fail"


def test_body_changed_after_signing_is_invalid(tmp_path: Path) -> None:
    msg, txt = signed(tmp_path)
    msg = dataclasses.replace(msg, body=msg.body + b"appended by a footer\r\n")
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    ctx = context(res)
    out = DkimCheck()(msg, ctx)
    assert ids(out) == ["dkim.invalid"]
    assert out[0].severity is Severity.ERROR
    assert "body hash" in out[0].data["error"]
    assert ctx.known.dkim()[0].status == "fail"


def test_wrong_published_key_is_invalid(tmp_path: Path) -> None:
    msg, _ = signed(tmp_path)
    _, other = rsa_key(tmp_path, 2048, "other.key")
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [other]})
    out = DkimCheck()(msg, context(res))
    assert ids(out) == ["dkim.invalid"]
    assert "does not match" in out[0].data["error"]


def test_missing_key_is_invalid(tmp_path: Path) -> None:
    msg, _ = signed(tmp_path)
    ctx = context(FakeResolver())
    out = DkimCheck()(msg, ctx)
    assert ids(out) == ["dkim.invalid"]
    assert "no key published at sel._domainkey.example.com" in out[0].text
    assert ctx.known.dkim()[0].status == "permerror"


@pytest.mark.parametrize(("bits", "severity"), [(1024, Severity.WARNING),
                                                (512, Severity.ERROR)])
def test_weak_keys(tmp_path: Path, bits: int, severity: Severity) -> None:
    msg, txt = signed(tmp_path, bits=bits)
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    ctx = context(res)
    out = DkimCheck()(msg, ctx)
    weak = [f for f in out if f.id == "dkim.weak_key"]
    assert len(weak) == 1 and weak[0].severity is severity
    assert weak[0].data["bits"] == bits
    assert ctx.known.dkim()[0].status == "pass"
    assert ctx.known.dkim()[0].counts is (bits >= 1024)


def test_dns_failure_is_temperror_not_invalid(tmp_path: Path) -> None:
    msg, _ = signed(tmp_path)
    res = FakeResolver()
    res.failing.add("sel._domainkey.example.com")
    ctx = context(res)
    out = DkimCheck()(msg, ctx)
    assert ids(out) == ["dkim.temperror"]
    assert ctx.known.dkim()[0].status == "temperror"
    assert describe(ctx.known)["dkim"] == "temperror"


def test_spent_budget_is_temperror_without_a_query(tmp_path: Path) -> None:
    msg, txt = signed(tmp_path)
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    out = DkimCheck()(msg, context(res, budget=-1.0))
    assert ids(out) == ["dkim.temperror"]
    assert res.queries == 0


def test_key_is_fetched_once_then_cached(tmp_path: Path) -> None:
    msg, txt = signed(tmp_path)
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    for _ in range(3):
        assert DkimCheck()(msg, context(res)) == []
    assert res.asked.count(("sel._domainkey.example.com", "TXT")) == 1


def test_verification_off_checks_presence_and_alignment_only(tmp_path: Path) -> None:
    msg, _ = signed(tmp_path)
    msg = dataclasses.replace(msg, body=msg.body + b"tampered\r\n")
    res = FakeResolver()
    cfg = config()
    cfg.dkim.verify = False
    ctx = context(res, cfg)
    assert DkimCheck()(msg, ctx) == []
    assert ctx.known.dkim()[0].status == "unverified"
    assert describe(ctx.known)["dkim"] == "unverified"
    assert not any(rt == "TXT" and "_domainkey" in n for n, rt in res.asked)


def test_unparsable_signature_is_invalid() -> None:
    msg = message(extra=[("DKIM-Signature", " this is not a tag list")])
    out = DkimCheck()(msg, context(FakeResolver()))
    assert "dkim.invalid" in ids(out)


def test_no_from_skips_alignment(tmp_path: Path) -> None:
    msg, txt = signed(tmp_path)
    msg = dataclasses.replace(msg, headers=[(k, v) for k, v in msg.headers if k != "From"])
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    out = DkimCheck()(msg, context(res))
    assert "dkim.unaligned" not in ids(out)


@pytest.mark.parametrize(("domains", "advice"), [
    (["example.org"], "not one of this host's domains"),
    (["example.com"], "sign with a key of example.com"),
    ([], "sign with a key of example.com"),
])
def test_missing_advice_depends_on_whose_domain_it_is(domains: list[str], advice: str) -> None:
    from auth_fakes import config
    (f,) = DkimCheck()(message(), context(FakeResolver(), config(domains=domains)))
    assert advice in f.text


def test_headers_dkimpy_cannot_parse_make_the_signature_permerror() -> None:
    msg = message(extra=[("DKIM-Signature", " v=1; a=rsa-sha256; d=example.com; s=s; h=from; "
                                             "bh=AAAA; b=AAAA")])
    msg.headers.append(("n\udcfd\udce9", " bad name"))
    ctx = context(FakeResolver())
    out = DkimCheck()(msg, ctx)
    assert [f.id for f in out] == ["dkim.invalid"]
    assert ctx.known.dkim()[0].status == "permerror"
    assert "cannot be parsed" in ctx.known.dkim()[0].error


def _sha1_signed(tmp: Path) -> tuple[Message, str]:
    """A valid rsa-sha1 signature (dkimpy still makes them) over an aligned From."""
    import dkim as dkimpy

    path, txt = rsa_key(tmp, 2048, "sha1.key")
    base = message()
    sig = dkimpy.sign(base.raw(), b"sel", b"example.com", path.read_bytes(),
                      signature_algorithm=b"rsa-sha1", include_headers=[b"from", b"to"])
    value = sig.decode().split(":", 1)[1].replace("\r\n", "\n").rstrip("\n")
    return Message(queue_id=base.queue_id, origin=base.origin, headers=[
        ("DKIM-Signature", value), *base.headers], body=base.body), txt


@pytest.mark.parametrize("verify", [True, False])
def test_rsa_sha1_is_a_fail_and_never_a_dmarc_pass(tmp_path: Path, verify: bool) -> None:
    """RFC 8301 3.1: even a mathematically valid rsa-sha1 signature is not a pass, and
    no key is fetched for it."""
    from postwarden.milter.dmarc_check import dmarc_check
    from postwarden.milter.spf_check import SpfCheck

    msg, txt = _sha1_signed(tmp_path)
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt],
                        ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]})
    cfg = config()
    cfg.dkim.verify = verify
    ctx = context(res, cfg)
    out = DkimCheck()(msg, ctx)
    (sig,) = ctx.known.dkim()
    assert (sig.status, sig.algorithm, sig.counts) == ("fail", "rsa-sha1", False)
    assert ids(out) == ["dkim.invalid"] and "RFC 8301" in out[0].text
    assert "sign with rsa-sha256" in out[0].text
    assert ("sel._domainkey.example.com", "TXT") not in res.asked
    SpfCheck()(msg, ctx)  # no SPF record for example.com here: SPF cannot save DMARC
    assert "dmarc.fail" in ids(dmarc_check(msg, ctx))


@pytest.mark.parametrize(("record", "reason"), [
    ("v=DKIM1; k=rsa; h=sha1; p={p}", "does not allow sha256"),
    ("v=DKIM1; k=rsa; s=tlsrpt; p={p}", "not for email"),
    ("v=DKIM1; k=ed25519; p={p}", "not a ed25519 public key"),
    ("v=DKIM9; k=rsa; p={p}", "v=DKIM9"),
])
def test_keys_receivers_refuse_are_permerror_with_the_reason(tmp_path: Path, record: str,
                                                             reason: str) -> None:
    msg, txt = signed(tmp_path)
    p = txt.split("p=", 1)[1]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [record.format(p=p)]})
    ctx = context(res)
    out = DkimCheck()(msg, ctx)
    (sig,) = ctx.known.dkim()
    assert sig.status == "permerror" and reason in sig.error
    assert ids(out) == ["dkim.invalid"]
    assert "publish a usable key record at sel._domainkey.example.com" in out[0].text


def test_an_ed25519_key_does_not_verify_an_rsa_signature(tmp_path: Path) -> None:
    msg, _ = signed(tmp_path)
    _, ed_txt = ed25519_key(tmp_path, "other-ed.key")
    ctx = context(FakeResolver({("sel._domainkey.example.com", "TXT"): [ed_txt]}))
    DkimCheck()(msg, ctx)
    assert "the key is k=ed25519, the signature a=rsa-sha256" in ctx.known.dkim()[0].error
