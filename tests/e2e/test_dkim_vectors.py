"""Public DKIM vectors verified by postwarden's verifier, keys served by the fixture Knot.

Two suites:
- dkimpy's own test data (its PyPI sdist, fetched by `make suite-data` into
  .build/): the messages it ships signed (RFC 8463's example, a Gmail message with
  degenerate folding, an Exim Ed25519 message, a malformed d=), and its unsigned
  test message signed by dkimpy with each of its keys in all four
  canonicalizations, its key records published as given, the broken ones too.
  Expected results are RFC 6376 / RFC 8301 verdicts (our own table), so a key
  record receivers refuse must be refused here even where dkimpy's test only
  asks "does not verify".
- RFC 8463 Appendix A (tests/rfc8463_example.py): both signatures of the RFC's
  example verify, its secret key is the published public key, and a signature
  postwarden makes with that key verifies.
"""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest

import rfc8463_example as rfc
import suites
from auth_fakes import FakeResolver, context, signing_config
from harness import HarnessError
from harness.dkimverify import split_message
from harness.knot import DnsServer
from postwarden.dkimkeys import load_private_key, record_for
from postwarden.dns import Budget, Resolver
from postwarden.message import Message, Origin
from postwarden.milter.dkim_check import evaluate
from postwarden.milter.dkim_sign import DkimSigner, apply_changes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SIGNER = "dkimpy.test"
CANONS = [(h, b) for h in (b"simple", b"relaxed") for b in (b"simple", b"relaxed")]

# selector -> (key record file, private key file or None, expected status when
# dkimpy signs test.message with that key at that selector)
KEYS: dict[str, tuple[str, str | None, str]] = {
    "test": ("test.txt", "test.private", "pass"),
    "implicit-k": ("test2.txt", "test.private", "pass"),  # no k=: rsa by default
    "rsa1024": ("1024_testkey_wo_markers.pub.txt", "1024_testkey.key", "pass"),
    "rsa1024-pkcs1": ("1024_testkey_wo_markers.pub.rsa.txt", "1024_testkey.key", "pass"),
    "rsa2048": ("2048_testkey_wo_markers.pub.txt", "2048_testkey.key", "pass"),
    "rsa2048-pkcs1": ("2048_testkey_wo_markers.pub.rsa.txt", "2048_testkey.key", "pass"),
    "rsa2048-pkcs8": ("2048_testkey_PKCS8.key.pub.txt", "2048_testkey_PKCS8.key", "pass"),
    "ed": ("ed25519test.dns", "ed25519test.key", "pass"),
    # key records receivers cannot use: RFC 6376 3.6.1 says ignore them (permerror)
    "badversion": ("badversion.txt", "test.private", "permerror"),  # "v=DKIM1:"
    "badk": ("badk.txt", "test.private", "permerror"),  # k=ed25519-sha256
    "truncated": ("test_bad.txt", "test.private", "permerror"),  # p= cut short
    "tlsrpt": ("test_tlsrpt.txt", "test.private", "permerror"),  # s=tlsrpt, not email
}
# file -> [(idx, expected)] for the messages dkimpy ships already signed
SIGNED = {
    "rfc6376.signed.msg": [(0, "pass"), (1, "pass")],
    "rfc6376.signed.rsa.msg": [(0, "pass")],
    "rfc6376.signed.no_t.msg": [(0, "fail")],  # altered after signing (dkimpy says so)
    "test2.message": [(0, "pass")],  # Gmail's degenerate folding (Debian bug #711751)
    "ed25519test2.msg": [(0, "pass")],  # signed by Exim's Ed25519 prototype
    "test.message.baddomain": [(0, "fail")],  # d=legitimate.com(.attacker.com
}


def _data() -> Path:
    found = sorted(ROOT.glob(".build/dkimpy-*/dkim/tests/data"))
    if not found:
        raise HarnessError("dkimpy's test data is missing: run `make suite-data` "
                           "(make test does it), which fetches the dkimpy sdist from PyPI")
    return found[-1]


def _txt(text: str) -> str:
    text = " ".join(text.split())
    return " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))


def _gmail_key(data: Path) -> str:
    """The 20120113._domainkey.gmail.com record test2.message needs: dkimpy keeps it
    in its test module, not in a data file."""
    source = (data.parent / "test_dkim.py").read_text()
    m = re.search(r"'20120113\._domainkey\.gmail\.com\.': \"\"\"(.*?)\"\"\"", source, re.S)
    if m is None:
        raise HarnessError("dkimpy's test_dkim.py no longer holds the gmail.com test key")
    return m.group(1).replace("\\\n", "")


def _verify(raw: bytes, resolver: Resolver) -> list[str]:
    headers, body = split_message(raw)
    return [s.status for s in evaluate(Message(headers=headers, body=body), resolver,
                                       Budget(5.0), True)]


@pytest.fixture(scope="module")
def resolver(dns_server: DnsServer) -> Resolver:
    data = _data()
    ed_rfc = load_private_key(rfc.SECRET_KEY_B64.encode(), "RFC 8463 A.1")
    dns_server.zone(SIGNER, "\n".join(
        f"{sel}._domainkey TXT {_txt((data / rec).read_text())}"
        for sel, (rec, _, _) in KEYS.items()) + "\n"
        f"rfc8032._domainkey TXT {_txt(record_for(ed_rfc))}")
    dns_server.zone(rfc.DOMAIN, "\n".join(f"{sel}._domainkey TXT {_txt(rec)}"
                                          for sel, rec in rfc.RECORDS.items()))
    dns_server.zone("gmail.com", f"20120113._domainkey TXT {_txt(_gmail_key(data))}")
    dns_server.zone("test.ex", f"sed._domainkey TXT {_txt((data / 'eximtest.dns').read_text())}")
    return Resolver(["127.0.0.1"], dns_server.port, timeout=2.0)


def test_dkimpy_vectors(resolver: Resolver) -> None:
    data = _data()
    message = (data / "test.message").read_bytes()
    failed = []

    def case(name: str, got: str, want: str) -> None:
        suites.record("dkimpy vectors", name, got == want)
        if got != want:
            failed.append(f"{name}: {got}, expected {want}")

    for fname, wants in SIGNED.items():
        got = _verify((data / fname).read_bytes(), resolver)
        for idx, want in wants:
            case(f"{fname}[{idx}]", got[idx] if idx < len(got) else "none", want)
    signers = [*((sel, key, want) for sel, (_, key, want) in KEYS.items() if key),
               ("rfc8032", "rfc8032_7_1.key", "pass")]
    for sel, key, want in signers:
        private = (data / key).read_bytes()
        alg = b"ed25519-sha256" if key in ("ed25519test.key", "rfc8032_7_1.key") \
            else b"rsa-sha256"
        for canon in CANONS:
            sig = dkim.sign(message, sel.encode(), SIGNER.encode(), private,
                            canonicalize=canon, signature_algorithm=alg)
            label = f"{key}@{sel} {b'/'.join(canon).decode()}"
            case(label, _verify(sig + message, resolver)[0], want)
    # what must not verify: a changed body, a From added before or after signing
    sig = dkim.sign(message, b"test", SIGNER.encode(), (data / "test.private").read_bytes())
    case("altered body", _verify(sig + message + b"appended\n", resolver)[0], "fail")
    extra = b"From: Evil <evil@example.org>\n"
    case("second From prepended", _verify(sig + extra + message, resolver)[0], "fail")
    head, _, body = message.partition(b"\n\n")
    case("second From appended", _verify(sig + head + b"\n" + extra + b"\n" + body,
                                         resolver)[0], "fail")
    assert not failed, failed


def test_rfc8463_example(resolver: Resolver, tmp_path: Path) -> None:
    failed = []

    def case(name: str, ok: bool) -> None:
        suites.record("RFC 8463 Appendix A", name, ok)
        if not ok:
            failed.append(name)

    got = _verify(rfc.SIGNED_MESSAGE, resolver)
    case("A.3 ed25519-sha256 signature (brisbane) verifies", got[:1] == ["pass"])
    case("A.3 rsa-sha256 signature (test) verifies", got[1:2] == ["pass"])
    key = load_private_key(rfc.SECRET_KEY_B64.encode(), "RFC 8463 A.1")
    case("A.1 secret key is the A.2 brisbane public key",
         record_for(key) == rfc.RECORDS["brisbane"])
    tampered = rfc.SIGNED_MESSAGE.replace(b"Are you hungry yet?", b"Are you hungry now?")
    case("A.3 with the body changed fails", _verify(tampered, resolver) == ["fail", "fail"])
    # postwarden signs the A.3 message with the A.1 key (selector brisbane): verifies
    # against the A.2 record, with postwarden's verifier and with dkimpy's
    keyfile = tmp_path / "a1.key"
    keyfile.write_text(rfc.SECRET_KEY_B64 + "\n")  # dknewkey's format: the base64 seed
    keyfile.chmod(0o600)
    record = rfc.RECORDS["brisbane"].encode()
    for canon in ("relaxed/relaxed", "simple/simple"):
        cfg = signing_config([(rfc.DOMAIN, "brisbane", keyfile)], domains=[rfc.DOMAIN])
        cfg.dkim.canonicalization = canon
        headers, body = split_message(rfc.UNSIGNED_MESSAGE)
        changes = DkimSigner(cfg)(Message(headers=headers, body=body, origin=Origin.LOCAL),
                                  context(FakeResolver(), cfg), []).changes
        raw = Message(headers=apply_changes(headers, changes), body=body).raw()
        case(f"postwarden signs the A.3 message with the A.1 key ({canon})", len(changes) == 1)
        case(f"postwarden's {canon} signature with the A.1 key verifies",
             _verify(raw, resolver) == ["pass"])
        case(f"postwarden's {canon} signature with the A.1 key verifies in dkimpy",
             bool(dkim.DKIM(raw).verify(dnsfunc=lambda n, timeout=5: record)))
    assert not failed, failed
