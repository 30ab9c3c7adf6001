"""SPF, DKIM, DMARC and MX records per sending domain."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postwarden.checks import records
from selfcheck_fakes import TIMEOUT, FakeResolver

IP = "192.0.2.25"
D = "example.com"


def test_spf_ok_and_without_the_host_ip() -> None:
    res = FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} -all"]})
    r = records.check_spf(D, [IP], res)
    assert (r.id, r.target, r.status) == ("spf.record", D, "ok")
    assert r.details["results"] == {IP: "pass"}
    res2 = FakeResolver({(D, "TXT"): ["v=spf1 ip4:198.51.100.1 -all"]})
    bad = records.check_spf(D, [IP], res2)
    assert bad.status == "critical" and IP in bad.summary
    assert f"ip4:{IP}" in bad.advice[0]


def test_spf_two_records_and_none() -> None:
    res = FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} -all", "v=spf1 mx -all"]})
    assert records.check_spf(D, [IP], res).status == "critical"
    none = records.check_spf(D, [IP], FakeResolver({(D, "TXT"): ["google-site-verification=x"]}))
    assert none.status == "critical" and none.summary == "no SPF record"
    assert f'{D}. TXT "v=spf1 ip4:{IP} -all"' in none.advice[0]


def test_spf_eleven_lookups_is_critical() -> None:
    recs: dict[tuple[str, str], list[str] | str] = {
        (D, "TXT"): ["v=spf1 " + " ".join(f"include:i{n}.example.net" for n in range(11))
                     + f" ip4:{IP} -all"]}
    for n in range(11):
        recs[(f"i{n}.example.net", "TXT")] = [f"v=spf1 ip4:198.51.100.{n} -all"]
    r = records.check_spf(D, [IP], FakeResolver(recs))
    assert r.status == "critical" and r.details["lookups"] == 11
    recs[(D, "TXT")] = ["v=spf1 " + " ".join(f"include:i{n}.example.net" for n in range(10))
                        + f" ip4:{IP} -all"]
    r10 = records.check_spf(D, [IP], FakeResolver(recs))
    assert r10.status == "ok" and r10.details["lookups"] == 10


def test_spf_lookup_count_recurses_into_includes() -> None:
    res = FakeResolver({(D, "TXT"): ["v=spf1 include:a.example.net mx -all"],
                        ("a.example.net", "TXT"): ["v=spf1 a mx include:b.example.net ~all"],
                        ("b.example.net", "TXT"): ["v=spf1 exists:%{i}.x.example.net -all"]})
    assert records.count_lookups(D, res)[0] == 6


def test_spf_a_domain_included_twice_counts_twice_and_is_no_loop() -> None:
    """RFC 7208 4.6.4: each evaluation of a term counts; two branches are not a loop."""
    res = FakeResolver({(D, "TXT"): ["v=spf1 include:a.example.net include:b.example.net -all"],
                        ("a.example.net", "TXT"): ["v=spf1 include:common.example.net -all"],
                        ("b.example.net", "TXT"): ["v=spf1 include:common.example.net -all"],
                        ("common.example.net", "TXT"): ["v=spf1 a mx -all"]})
    lookups, problems = records.count_lookups(D, res)
    assert (lookups, problems) == (8, [])
    assert res.asked.count(("common.example.net", "TXT")) == 1  # gathered once


def test_spf_a_real_loop_is_reported() -> None:
    res = FakeResolver({(D, "TXT"): ["v=spf1 include:a.example.net -all"],
                        ("a.example.net", "TXT"): [f"v=spf1 include:{D} -all"]})
    lookups, problems = records.count_lookups(D, res)
    assert lookups == 2 and problems == [f"include loop at {D} (from a.example.net)"]
    self_redirect = FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} redirect={D}"]})
    assert records.count_lookups(D, self_redirect)[1] == [f"include loop at {D} (from {D})"]


def test_spf_redirect_is_ignored_when_the_record_has_all() -> None:
    """RFC 7208 6.1: redirect= is ignored if there is an all mechanism anywhere."""
    res = FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} redirect=r.example.net -all"],
                        ("r.example.net", "TXT"): ["v=spf1 a a a a a a a a a a -all"]})
    assert records.count_lookups(D, res) == (0, [])
    assert ("r.example.net", "TXT") not in res.asked
    res.records[(D, "TXT")] = [f"v=spf1 ip4:{IP} redirect=r.example.net"]
    res.clear()
    assert records.count_lookups(D, res) == (11, [])
    assert records.check_spf(D, [IP], res).status == "critical"


def test_spf_terms_after_all_are_never_evaluated() -> None:
    res = FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} mx -all include:x.example.net a"]})
    assert records.count_lookups(D, res) == (1, [])


def test_spf_include_without_record_is_a_warning_for_forged_mail() -> None:
    res = FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} include:gone.example.net -all"]})
    r = records.check_spf(D, [IP], res)
    assert r.status == "warning" and "gone.example.net" in r.summary
    assert r.details["results"] == {IP: "pass"}


def test_spf_unfetchable_include_makes_the_count_unknown() -> None:
    res = FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} include:slow.example.net -all"],
                        ("slow.example.net", "TXT"): TIMEOUT})
    r = records.check_spf(D, [IP], res)
    assert r.status == "unknown" and "slow.example.net" in r.summary


def test_spf_void_lookups_are_permerror_in_the_selfcheck() -> None:
    res = FakeResolver({(D, "TXT"): ["v=spf1 a:nx.example.net a:nx.example.net "
                                     f"a:nx.example.net ip4:{IP} -all"]})
    r = records.check_spf(D, [IP], res)
    assert r.status == "critical" and r.details["results"] == {IP: "permerror"}


def test_spf_plus_all_and_neutral() -> None:
    plus = records.check_spf(D, [IP], FakeResolver({(D, "TXT"): ["v=spf1 +all"]}))
    assert plus.status == "critical" and "+all" in plus.summary
    neutral = records.check_spf(D, [IP], FakeResolver({(D, "TXT"): [f"v=spf1 ip4:{IP} ?all"]}))
    assert neutral.status == "warning"


def test_spf_dns_failure_is_unknown() -> None:
    assert records.check_spf(D, [IP], FakeResolver({(D, "TXT"): TIMEOUT})).status == "unknown"


def _key(bits: int) -> rsa.RSAPrivateKey:
    if bits < 1024:  # cryptography refuses to make these; openssl still does
        pem = subprocess.run(["openssl", "genrsa", str(bits)], check=True,
                             capture_output=True).stdout
        key = serialization.load_pem_private_key(pem, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _txt(key: rsa.RSAPrivateKey, extra: str = "") -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa;{extra} p={base64.b64encode(der).decode()}"


def _pem(key: rsa.RSAPrivateKey, path: Path) -> str:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


NAME = f"mail._domainkey.{D}"


def test_dkim_key_sizes_and_test_mode(tmp_path: Path) -> None:
    k2048 = _key(2048)
    ok = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [_txt(k2048)]}),
                            _pem(k2048, tmp_path / "k.pem"))
    assert (ok.id, ok.target, ok.status) == ("dkim.record", NAME, "ok")
    assert ok.details["bits"] == 2048 and ok.details["matches_local_key"] is True
    small = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [_txt(_key(1024))]}))
    assert small.status == "warning"
    tiny = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [_txt(_key(512))]}))
    assert tiny.status == "critical" and tiny.details["bits"] == 512
    test = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [_txt(k2048, " t=y;")]}))
    assert test.status == "info"


def test_dkim_key_not_matching_the_local_key(tmp_path: Path) -> None:
    published, local = _key(2048), _key(2048)
    r = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [_txt(published)]}),
                           _pem(local, tmp_path / "local.pem"))
    assert r.status == "critical" and r.details["matches_local_key"] is False


def test_dkim_missing_revoked_and_garbage() -> None:
    assert records.check_dkim("mail", D, FakeResolver()).status == "critical"
    revoked = FakeResolver({(NAME, "TXT"): ["v=DKIM1; k=rsa; p="]})
    assert "revoked" in records.check_dkim("mail", D, revoked).summary
    garbage = FakeResolver({(NAME, "TXT"): ["v=DKIM1; k=rsa; p=bm90IGEga2V5"]})
    assert records.check_dkim("mail", D, garbage).status == "critical"
    assert records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): TIMEOUT})).status \
        == "unknown"


def test_dmarc_states() -> None:
    none = records.check_dmarc(D, FakeResolver())
    assert (none.id, none.target, none.status) == ("dmarc.record", D, "warning")
    assert f"_dmarc.{D}. TXT" in none.advice[0]
    no_rua = records.check_dmarc(D, FakeResolver({(f"_dmarc.{D}", "TXT"):
                                                  ["v=DMARC1; p=reject"]}))
    assert no_rua.status == "info" and "rua" in no_rua.summary
    good = records.check_dmarc(D, FakeResolver({(f"_dmarc.{D}", "TXT"): [
        f"v=DMARC1; p=quarantine; rua=mailto:d@{D}"]}))
    assert good.status == "ok"
    failing = records.check_dmarc(D, FakeResolver({(f"_dmarc.{D}", "TXT"): TIMEOUT}))
    assert failing.status == "unknown"


def test_mx() -> None:
    assert records.check_mx(D, FakeResolver({(D, "MX"): ["10 mail.example.com"]})).status == "ok"
    assert records.check_mx(D, FakeResolver()).status == "warning"
    assert records.check_mx(D, FakeResolver({(D, "MX"): TIMEOUT})).status == "unknown"


def test_dmarc_names_both_generations_in_the_json() -> None:
    res = FakeResolver({(f"_dmarc.{D}", "TXT"): [f"v=DMARC1; p=reject; rua=mailto:d@{D}"]})
    (rec,) = records.dmarc_results(D, res)
    assert rec.status == "ok"
    gens = rec.details["generations"]
    assert gens["rfc7489"]["policy"] == gens["rfc9989"]["policy"] == "reject"
    assert gens["rfc7489"]["found_at"] == D


def test_dmarc_unusable_own_record_is_not_the_parents() -> None:
    sub = f"mail.{D}"
    res = FakeResolver({(f"_dmarc.{D}", "TXT"): ["v=DMARC1; p=reject"],
                        (f"_dmarc.{sub}", "TXT"): ["v=DMARC1; p=bogus"]})
    (rec,) = records.dmarc_results(sub, res)
    assert rec.status == "warning" and "unusable" in rec.summary and "p=bogus" in rec.summary
    assert rec.details["generations"]["rfc7489"]["status"] == "none"


def test_dmarc_generations_differ_in_the_self_check() -> None:
    sub = f"mail.{D}"
    res = FakeResolver({(f"_dmarc.{D}", "TXT"): ["v=DMARC1; p=reject"],
                        (f"_dmarc.{sub}", "TXT"): ["v=DMARC1; p=none", "v=DMARC1; p=none"]})
    rec, differ = records.dmarc_results(sub, res)
    assert rec.id == "dmarc.record" and rec.status == "warning"
    assert differ.id == "dmarc.generations" and differ.status == "warning"
    assert "RFC 7489 receivers apply no DMARC" in differ.summary
    assert f"RFC 9989 receivers p=reject of {D}" in differ.summary
    assert differ.details["rfc9989"]["found_at"] == D


def test_dmarc_org_domain_by_psl_and_by_tree_walk() -> None:
    """A record with psd=n below the PSL's organizational domain: relaxed alignment
    differs between the generations even though the policy read is the same."""
    sub = f"dept.{D}"
    res = FakeResolver({(f"_dmarc.{D}", "TXT"): ["v=DMARC1; p=reject"],
                        (f"_dmarc.{sub}", "TXT"): ["v=DMARC1; p=reject; psd=n"]})
    rec, differ = records.dmarc_results(sub, res)
    assert rec.status == "info"  # no rua=
    assert f"{D} by the Public Suffix List" in differ.summary and sub in differ.summary


def test_dmarc_pct_against_t() -> None:
    res = FakeResolver({(f"_dmarc.{D}", "TXT"): [f"v=DMARC1; p=reject; t=y; rua=mailto:d@{D}"]})
    _rec, differ = records.dmarc_results(D, res)
    assert "t=y: quarantine applied" in differ.summary


def test_dmarc_one_generation_unknown() -> None:
    """The tree walk's _dmarc.com fails: RFC 7489's "no record" still stands (a
    warning), while an RFC 7489 "ok" would not (unknown)."""
    res = FakeResolver({("_dmarc.com", "TXT"): TIMEOUT})
    rec = records.check_dmarc(D, res)
    assert rec.status == "warning" and "RFC 7489" in rec.summary and "RFC 9989" in rec.summary
    res = FakeResolver({("_dmarc.com", "TXT"): TIMEOUT, (f"_dmarc.{D}", "TXT"): [
        f"v=DMARC1; p=quarantine; rua=mailto:d@{D}"]})
    assert records.check_dmarc(D, res).status == "ok"  # own record: no walk needed
    res = FakeResolver({("_dmarc.com", "TXT"): TIMEOUT, ("_dmarc.example.com", "TXT"): [
        f"v=DMARC1; p=quarantine; rua=mailto:d@{D}"]})
    assert records.check_dmarc(f"mail.{D}", res).status == "unknown"


@pytest.mark.parametrize(("tags", "reason"), [
    ("v=DKIM2; k=rsa;", "v=DKIM2"),
    ("v=DKIM1; k=dsa;", "unknown key type k=dsa"),
    ("v=DKIM1; k=rsa; h=sha1;", "does not allow sha256"),
    ("v=DKIM1; s=tlsrpt;", "not for email"),
])
def test_dkim_keys_receivers_cannot_use_are_critical(tags: str, reason: str) -> None:
    """k=, v=, s=, h= are read as receivers read them (the shared dkimkeys parser)."""
    record = tags + " p=" + _txt(_key(2048)).split("p=", 1)[1]
    r = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [record]}))
    assert r.status == "critical" and reason in r.summary, r


def test_dkim_ed25519_key_file_matches_and_wrong_type_does_not(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from postwarden.dkimkeys import record_for

    ed = ed25519.Ed25519PrivateKey.generate()
    seed = tmp_path / "ed.key"  # dknewkey's format, which the signer also reads
    seed.write_bytes(base64.b64encode(ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())) + b"\n")
    ok = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [record_for(ed)]}),
                            str(seed))
    assert ok.status == "ok" and ok.details["matches_local_key"] is True
    assert "ed25519 key" in ok.summary
    other = records.check_dkim("mail", D, FakeResolver({(NAME, "TXT"): [_txt(_key(2048))]}),
                               str(seed))
    assert other.status == "critical" and "k=ed25519" in other.advice[0]
