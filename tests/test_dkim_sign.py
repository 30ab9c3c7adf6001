"""The signing fixer: signatures dkimpy verifies, only when needed, never twice, fast."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from auth_fakes import FakeResolver, context, ed25519_key, message, rsa_key, signing_config
from postwarden.config import DkimKey
from postwarden.findings import Finding, Severity
from postwarden.log import log
from postwarden.message import Message, Origin
from postwarden.milter.auth_results import DkimSignature
from postwarden.milter.dkim_check import DkimCheck
from postwarden.milter.dkim_sign import (
    DkimSigner,
    KeyError_,
    apply_changes,
    load_key,
    relaxed_body,
    signed_header_names,
)
from postwarden.milter.pipeline import HeaderChange


def _delivered(msg: Message, changes: list[HeaderChange]) -> bytes:
    """The message as Postfix would send it after applying the changes (CRLF)."""
    return Message(headers=apply_changes(msg.headers, changes), body=msg.body).raw()


def _dkimpy_verifies(raw: bytes, res: FakeResolver, idx: int = 0) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        vals = res.records.get((name.decode().rstrip("."), "TXT"))
        return vals[0].encode() if vals else None
    return bool(dkim.DKIM(raw).verify(idx=idx, dnsfunc=dnsfunc))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    return {"rsa": rsa_key(tmp_path), "ed": ed25519_key(tmp_path),
            "edpem": ed25519_key(tmp_path, "edpem.key", pem=True)}


@pytest.mark.parametrize("kind", ["rsa", "ed", "edpem"])
def test_signature_verifies_with_dkimpy(kind: str, keys: dict[str, tuple[Path, str]]) -> None:
    path, txt = keys[kind]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    signer = DkimSigner(signing_config([("example.com", "sel", path)]))
    msg = message()
    ctx = context(res, signer.cfg)
    fix = signer(msg, ctx, [])
    changes = fix.changes
    assert [c.op for c in changes] == ["insert"] and changes[0].index == 0
    assert changes[0].name == "DKIM-Signature" and changes[0].value.startswith(" v=1;")
    alg = "rsa-sha256" if kind == "rsa" else "ed25519-sha256"
    assert f"a={alg}" in changes[0].value
    raw = _delivered(msg, changes)
    assert _dkimpy_verifies(raw, res)
    # and our own verifier agrees, with no dkim finding at all
    signed = Message(headers=apply_changes(msg.headers, changes), body=msg.body)
    assert DkimCheck()(signed, context(res, signer.cfg)) == []
    assert fix.shown == (("signed", "example.com/sel"),)


def test_signature_breaks_when_a_signed_header_changes(keys: dict[str, tuple[Path, str]]
                                                       ) -> None:
    path, txt = keys["rsa"]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    signer = DkimSigner(signing_config([("example.com", "sel", path)]))
    msg = message()
    changes = signer(msg, context(res, signer.cfg), []).changes
    raw = _delivered(msg, changes).replace(b"Subject: test", b"Subject: tampered")
    assert not _dkimpy_verifies(raw, res)


def test_received_is_not_signed_and_from_is_oversigned(keys: dict[str, tuple[Path, str]]
                                                       ) -> None:
    msg = message(extra=[("Return-Path", " <x@example.com>")])
    names = signed_header_names(msg.headers, ["from", "received", "to", "subject", "cc",
                                              "return-path"])
    assert names == [b"from", b"to", b"subject", b"from"]


def test_both_keys_of_a_domain_sign(keys: dict[str, tuple[Path, str]]) -> None:
    (rp, rtxt), (ep, etxt) = keys["rsa"], keys["ed"]
    res = FakeResolver({("r._domainkey.example.com", "TXT"): [rtxt],
                        ("e._domainkey.example.com", "TXT"): [etxt]})
    signer = DkimSigner(signing_config([("example.com", "r", rp), ("example.com", "e", ep)]))
    msg = message()
    changes = signer(msg, context(res, signer.cfg), []).changes
    raw = _delivered(msg, changes)
    assert _dkimpy_verifies(raw, res, 0) and _dkimpy_verifies(raw, res, 1)


def test_org_domain_key_signs_subdomain_unless_strict(keys: dict[str, tuple[Path, str]]
                                                      ) -> None:
    path, txt = keys["rsa"]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    signer = DkimSigner(signing_config([("example.com", "sel", path)]))
    msg = message("News <news@lists.example.com>")
    changes = signer(msg, context(res, signer.cfg), []).changes
    assert len(changes) == 1 and "d=example.com" in changes[0].value
    strict = FakeResolver({("_dmarc.lists.example.com", "TXT"): ["v=DMARC1; p=reject; adkim=s"]})
    assert signer(msg, context(strict, signer.cfg), []).changes == ()


def test_no_key_for_the_from_domain_means_no_signature(keys: dict[str, tuple[Path, str]]
                                                       ) -> None:
    path, _ = keys["rsa"]
    signer = DkimSigner(signing_config([("example.com", "sel", path)]))
    msg = message("Visitor <visitor@example.net>")
    assert signer(msg, context(FakeResolver(), signer.cfg), []).changes == ()


def test_not_signed_when_an_aligned_valid_signature_exists(keys: dict[str, tuple[Path, str]]
                                                           ) -> None:
    path, _ = keys["rsa"]
    signer = DkimSigner(signing_config([("example.com", "sel", path)]))
    ctx = context(FakeResolver(), signer.cfg)
    ctx.given(dkim=[DkimSignature("example.com", "opendkim", "rsa-sha256", "pass",
                                  "rsa", 2048)])
    assert signer(message(), ctx, []).changes == ()
    # an invalid aligned signature does not count: we sign
    ctx = context(FakeResolver(), signer.cfg)
    ctx.given(dkim=[DkimSignature("example.com", "opendkim", "rsa-sha256", "fail")])
    assert len(signer(message(), ctx, []).changes) == 1


def test_never_twice_with_the_same_selector(keys: dict[str, tuple[Path, str]]) -> None:
    path, txt = keys["rsa"]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    signer = DkimSigner(signing_config([("example.com", "sel", path)]))
    msg = message()
    first = signer(msg, context(res, signer.cfg), []).changes
    again = Message(headers=apply_changes(msg.headers, first), body=msg.body + b"changed\r\n",
                    origin=Origin.LOCAL)  # e.g. re-injected after a content filter
    ctx = context(res, signer.cfg)
    DkimCheck()(again, ctx)  # the evidence: our old signature now fails
    assert signer(again, ctx, []).changes == ()


def test_origin_filter_and_switch(keys: dict[str, tuple[Path, str]]) -> None:
    cfg = signing_config([("example.com", "sel", keys["rsa"][0])])
    cfg.dkim.sign_origins = ["submission"]
    assert DkimSigner(cfg)(message(), context(FakeResolver(), cfg), []).changes == ()
    cfg.dkim.sign_origins, cfg.dkim.sign = ["local"], False
    assert DkimSigner(cfg)(message(), context(FakeResolver(), cfg), []).changes == ()


def test_signs_the_headers_after_earlier_fixers(keys: dict[str, tuple[Path, str]]) -> None:
    """A From rewrite before signing: the signature covers the new From and Reply-To."""
    path, txt = keys["rsa"]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    signer = DkimSigner(signing_config([("example.com", "sel", path)]))
    msg = message("Visitor <visitor@example.net>")
    rewrite = [HeaderChange("change", "From", ' "Visitor via Site" <noreply@example.com>', 1),
               HeaderChange("add", "Reply-To", " Visitor <visitor@example.net>")]
    ctx = context(res, signer.cfg)
    changes = list(signer(msg, ctx, [], tuple(rewrite)).changes)
    assert len(changes) == 1 and "d=example.com" in changes[0].value
    raw = _delivered(msg, rewrite + changes)
    assert b"reply-to" in raw.split(b"h=", 1)[1].split(b";", 1)[0].lower()
    assert _dkimpy_verifies(raw, res)


def test_apply_changes_semantics() -> None:
    h = [("Received", " x"), ("From", " a"), ("To", " b"), ("From", " c")]
    out = apply_changes(h, [HeaderChange("change", "from", " C", 2),
                            HeaderChange("insert", "DKIM-Signature", " s", 0),
                            HeaderChange("add", "Reply-To", " r"),
                            HeaderChange("change", "To", "", 1)])
    assert out == [("DKIM-Signature", " s"), ("Received", " x"), ("From", " a"),
                   ("From", " C"), ("Reply-To", " r")]


def test_load_key_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key at all!")
    bad.chmod(0o600)
    with pytest.raises(KeyError_, match="neither a PEM key"):
        load_key(DkimKey("example.com", "s", str(bad)))
    with pytest.raises(KeyError_, match="cannot read"):
        load_key(DkimKey("example.com", "s", str(tmp_path / "missing.key")))
    small, _ = rsa_key(tmp_path, 1024, "small.key")
    assert load_key(DkimKey("Example.COM", "s", str(small))).bits == 1024


def test_unusable_key_is_skipped_with_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("garbage")
    bad.chmod(0o600)
    buf = io.StringIO()
    log.setup("stderr", stream=buf)
    try:
        signer = DkimSigner(signing_config([("example.com", "sel", bad)]))
    finally:
        log.setup("stderr", stream=sys.stderr)
    assert signer.keys == []
    assert buf.getvalue().count("error: dkim: key sel._domainkey.example.com not used") == 1


def test_findings_do_not_matter_to_the_signer(keys: dict[str, tuple[Path, str]]) -> None:
    signer = DkimSigner(signing_config([("example.com", "sel", keys["rsa"][0])]))
    f = Finding("dkim.missing", Severity.WARNING, "x")
    assert len(signer(message(), context(FakeResolver(), signer.cfg), [f]).changes) == 1


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"  ", b"x y", b"\r\n\r\n",
                                 b" \r\n", b"\t\r\n", b"\r", b"\n"]), max_size=60))
def test_relaxed_body_equals_dkimpy(parts: list[bytes]) -> None:
    body = b"".join(parts)
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert relaxed_body(body) == policy.canonicalize_body(body)


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path, _ = rsa_key(tmp_path)
    path.chmod(0o644)
    with pytest.raises(KeyError_, match="readable by every user"):
        load_key(DkimKey("example.com", "sel", str(path)))
    path.chmod(0o640)  # group-readable (group postwarden) is fine
    assert load_key(DkimKey("example.com", "sel", str(path))).bits == 2048


_MIME = [("MIME-Version", " 1.0"), ("Content-Type", " text/plain; charset=utf-8"),
         ("Content-Transfer-Encoding", " quoted-printable"), ("Reply-To", " r@example.org"),
         ("List-Unsubscribe", " <mailto:u@example.com>"),
         ("List-Unsubscribe-Post", " List-Unsubscribe=One-Click")]


@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple", "relaxed/simple",
                                   "simple/relaxed"])
def test_mime_mail_signature_is_folded_only_at_colons(canon: str,
                                                      keys: dict[str, tuple[Path, str]]
                                                      ) -> None:
    """The h= list of an ordinary MIME message does not fit one line: each name must
    survive folding whole, or dkimpy (and receivers) fail the signature."""
    path, txt = keys["rsa"]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    cfg = signing_config([("example.com", "sel", path)])
    cfg.dkim.canonicalization = canon
    msg = message(extra=list(_MIME), body=b"Hello  \t\r\n\r\n\r\n")
    (change,) = DkimSigner(cfg)(msg, context(res, cfg), []).changes
    assert f"c={canon};" in change.value
    assert all(len(line) <= 76 for line in ("DKIM-Signature:" + change.value).split("\n"))
    h = change.value.split("h=", 1)[1].split(";", 1)[0]
    assert "\n" in h  # it did have to fold
    assert [n.strip() for n in h.split(":")] == [
        "from", "reply-to", "subject", "date", "to", "message-id", "mime-version",
        "content-type", "content-transfer-encoding", "list-unsubscribe",
        "list-unsubscribe-post", "from"]
    assert all(line.lstrip().startswith(":") for line in h.split("\n")[1:])
    assert _dkimpy_verifies(_delivered(msg, [change]), res)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=40),
                min_size=1, max_size=30),
       st.integers(1_000_000_000, 9_999_999_999))
def test_folding_never_cuts_a_header_name(names: list[str], t: int) -> None:
    from postwarden.milter.dkim_sign import fold_tags

    fields = [(b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"),
              (b"d", b"example.com"), (b"s", b"sel"), (b"t", str(t).encode()),
              (b"h", ":".join(names).encode()), (b"bh", b"A" * 44), (b"b", b"B" * 344)]
    folded = fold_tags(fields)
    tags = dkim.util.parse_tag_value(folded.replace(b"\r\n", b""))  # unfolded
    # only white space was added, and in h= only around the colons
    assert {k: v.replace(b" ", b"") for k, v in tags.items()} == dict(fields)
    assert [n.strip() for n in tags[b"h"].split(b":")] == [n.encode() for n in names]
    assert all(len(line) <= 76 for line in (b"DKIM-Signature: " + folded).split(b"\r\n"))
    assert folded.split(b"\r\n")[-1].startswith(b" b=") or b"\r\n b=" in folded


def test_a_header_without_space_after_the_colon_is_signed_as_sent(
        keys: dict[str, tuple[Path, str]]) -> None:
    """`Subject:x` stays `Subject:x`: a c=simple signature covers that byte."""
    path, txt = keys["ed"]
    res = FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]})
    cfg = signing_config([("example.com", "sel", path)])
    cfg.dkim.canonicalization = "simple/simple"
    msg = message(extra=[("X-Tag", "nospace"), ("MIME-Version", "1.0")])
    msg = dataclasses.replace(msg, headers=[(k, "test") if k == "Subject" else (k, v)
                                            for k, v in msg.headers])
    changes = DkimSigner(cfg)(msg, context(res, cfg), []).changes
    raw = _delivered(msg, changes)
    assert b"\r\nSubject:test\r\n" in raw and b"\r\nX-Tag:nospace\r\n" in raw
    assert _dkimpy_verifies(raw, res)
    signed = Message(headers=apply_changes(msg.headers, changes), body=msg.body)
    assert DkimCheck()(signed, context(res, cfg)) == []
