"""The one DKIM key-record parser: what receivers refuse is refused, with a reason."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postwarden.dkimkeys import (
    KeyFileError,
    TagError,
    load_private_key,
    parse_key_record,
    parse_tags,
    record_for,
    same_key,
)

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED = ed25519.Ed25519PrivateKey.generate()
RSA_P = record_for(RSA).split("p=", 1)[1]
ED_P = record_for(ED).split("p=", 1)[1]
PKCS1 = base64.b64encode(RSA.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.PKCS1)).decode()


@pytest.mark.parametrize(("record", "problem"), [
    (f"v=DKIM1; k=rsa; p={RSA_P}", ""),
    (f"p={RSA_P}", ""),  # v= and k= are optional
    (f"v=DKIM1; k=ed25519; p={ED_P}", ""),
    (f"v=DKIM1; h=sha1:sha256; s=email:*; t=y:s; n=notes; p={RSA_P}", ""),
    (f"v=DKIM1; p={RSA_P[:40]} {RSA_P[40:]}", ""),  # FWS inside base64
    (f"v=DKIM2; p={RSA_P}", "v=DKIM2"),
    (f"v=DKIM1; k=dsa; p={RSA_P}", "unknown key type k=dsa"),
    (f"v=DKIM1; k=ed25519-sha256; p={ED_P}", "unknown key type"),
    (f"v=DKIM1; h=sha1; p={RSA_P}", "does not allow sha256"),
    (f"v=DKIM1; s=tlsrpt; p={RSA_P}", "not for email"),
    ("v=DKIM1; k=rsa", "no p= tag"),
    ("v=DKIM1; k=rsa; p=", "revoked"),
    ("v=DKIM1; k=rsa; p=!!!notbase64", "not valid base64"),
    ("v=DKIM1; k=rsa; p=bm90IGEga2V5", "not a rsa public key"),
    (f"v=DKIM1; k=ed25519; p={RSA_P}", "not a ed25519 public key"),
    (f"v=DKIM1; k=rsa; p={ED_P}", "not a rsa public key"),
    (f"v=DKIM1: g=*; p={RSA_P}", "v=DKIM1: g=*"),  # dkimpy's badversion.txt
    (f"v=DKIM1; p={RSA_P}; p={RSA_P}", "syntax error"),  # duplicate tag
    ("just text", "syntax error"),
])
def test_key_records(record: str, problem: str) -> None:
    rec = parse_key_record(record)
    assert problem in rec.problem and bool(rec.problem) == bool(problem), rec


def test_what_a_usable_key_refuses() -> None:
    r = parse_key_record(f"v=DKIM1; k=rsa; p={RSA_P}")
    assert r.bits == 2048 and r.usable and not r.warnings
    assert r.refuses("rsa-sha256") == ""
    assert "RFC 8301" in r.refuses("rsa-sha1")
    assert "k=rsa" in r.refuses("ed25519-sha256")
    assert "unknown signature algorithm" in r.refuses("rsa-md5")
    e = parse_key_record(f"k=ed25519; p={ED_P}")
    assert e.refuses("ed25519-sha256") == "" and "k=ed25519" in e.refuses("rsa-sha256")


def test_receivers_accept_but_some_verifiers_do_not() -> None:
    bare = parse_key_record(f"v=DKIM1; k=rsa; p={PKCS1}")
    assert bare.usable and bare.bits == 2048 and "PKCS#1" in bare.warnings[0]
    late = parse_key_record(f"k=rsa; v=DKIM1; p={RSA_P}")
    assert late.usable and "first tag" in late.warnings[0]


def test_tags_keep_inner_space_and_refuse_garbage() -> None:
    assert parse_tags("h=from : to; b=ab cd ;") == {"h": "from : to", "b": "ab cd"}
    with pytest.raises(TagError):
        parse_tags("a=1; a=2")


def test_private_keys_and_their_records() -> None:
    pem = RSA.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    seed = base64.b64encode(ED.private_bytes(serialization.Encoding.Raw,
                                             serialization.PrivateFormat.Raw,
                                             serialization.NoEncryption()))
    assert same_key(load_private_key(pem, "k"), parse_key_record(record_for(RSA)).key)
    assert same_key(load_private_key(seed, "k"), parse_key_record(record_for(ED)).key)
    assert not same_key(load_private_key(seed, "k"), parse_key_record(record_for(RSA)).key)
    with pytest.raises(KeyFileError, match="neither a PEM key"):
        load_private_key(b"garbage", "k")
