"""DMARC aggregate reports: read safely (formats, limits, hostile XML) and compared
with the stored predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmarc_fixtures import (
    MALFORMED,
    NS_9990,
    XML_BOMB,
    gz,
    report_mail,
    report_xml,
    zip_bomb,
    zipped,
)
from postwarden import dmarc_reports as dr
from postwarden.store import OutboundRecord

T0 = 1_700_000_000.0
OURS = "192.0.2.25"


def pred(qid: str, when: float, dkim: str = "pass", spf: str = "pass", dmarc: str = "pass"
         ) -> OutboundRecord:
    return OutboundRecord(qid, when, "php:33:contact.php", "local", "example.com",
                          "example.com", True, dkim, spf, dmarc)


ROWS = [{"ip": OURS, "count": 3, "dkim": "fail", "spf": "pass"},
        {"ip": "203.0.113.9", "count": 7, "dkim": "fail", "spf": "fail"},
        {"ip": "198.51.100.1", "count": 2, "from": "other.test"}]


@pytest.mark.parametrize("wrap", ["xml", "gzip", "zip", "mail", "ns9990"])
def test_every_format_reads_the_same_report(wrap: str) -> None:
    xml = report_xml("r-1", T0, T0 + 86400, ROWS,
                     namespace=NS_9990 if wrap == "ns9990" else "")
    data = {"xml": xml, "ns9990": xml, "gzip": gz(xml), "zip": zipped("r.xml", xml),
            "mail": report_mail("google.com!example.com!1!2.xml.gz", gz(xml))}[wrap]
    (rep,) = dr.reports("input", data)
    assert (rep.org, rep.report_id, rep.domain, rep.policy) == ("google.com", "r-1",
                                                                "example.com", "reject")
    assert [(r.source_ip, r.count, r.dkim, r.spf, r.dmarc) for r in rep.rows] == [
        (OURS, 3, "fail", "pass", "pass"), ("203.0.113.9", 7, "fail", "fail", "fail"),
        ("198.51.100.1", 2, "pass", "pass", "pass")]
    assert rep.rows[0].auth_dkim == (("example.com", "fail"),)


@pytest.mark.parametrize("data, words", [
    (XML_BOMB, "DTDs and entities are not allowed"),
    (gz(XML_BOMB), "DTDs and entities are not allowed"),
    (MALFORMED, "not well-formed XML"),
    (b"\x1f\x8b\x08\x00garbage", "broken gzip"),
    (b"PK\x03\x04garbage", "broken zip"),
    (b"<html><body>hi</body></html>", "not a DMARC aggregate report"),
    (b"\x00\x01\x02binary", "neither XML, gzip, zip nor a mail"),
    (report_xml("", T0, T0, []), "no report_metadata/report_id"),
    (report_xml("r", T0, T0, [{"ip": "not-an-ip"}]), "bad source_ip"),
    (report_mail("notes.txt", b"hello", "pdf"), "without a report attachment"),
])
def test_hostile_and_broken_inputs_are_rejected_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(dr.ReportError, match=words):
        dr.reports("input", data)


def test_compression_bombs_stop_at_the_limit() -> None:
    with pytest.raises(dr.ReportError, match="zip bomb"):
        dr.reports("z", zip_bomb())
    with pytest.raises(dr.ReportError, match="larger than 32 MB"):
        dr.reports("g", gz(b"<feedback>" + b" " * (33 * 1024 * 1024)))


def test_compare_finds_the_mismatch_and_the_foreign_ip() -> None:
    (rep,) = dr.reports("r", report_xml("r-2", T0, T0 + 86400, ROWS))
    preds = [pred("A", T0 + 10), pred("B", T0 + 20, dkim="none", dmarc="pass"),
             pred("OLD", T0 - 5 * 86400)]
    rows, findings = dr.compare(rep, [OURS], ["example.com"], preds)
    assert [r.source_ip for r in rows] == [OURS, "203.0.113.9"]  # other.test is not ours
    by_id = {f.id: f for f in findings}
    assert set(by_id) == {dr.MISMATCH, dr.FOREIGN}
    m = by_id[dr.MISMATCH]
    assert m.text.startswith("MISMATCH: google.com saw dkim=fail for 3 message(s) From "
                             "example.com from 192.0.2.25; postwarden predicted dkim=pass "
                             "for 1 of 2")
    assert by_id[dr.FOREIGN].data["source_ip"] == "203.0.113.9"
    # without predictions for the period there is no verdict, never a "match"
    _, none = dr.compare(rep, [OURS], ["example.com"], [pred("OLD", T0 - 5 * 86400)])
    assert [f.id for f in none] == [dr.FOREIGN]


def test_inputs_walks_a_maildir(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "new" / "1.eml").write_bytes(report_mail("a.xml.gz", gz(report_xml("m1", T0, T0,
                                                                            ROWS))))
    (md / "cur" / "2.eml:2,S").write_bytes(report_mail("b.zip", zipped(
        "b.xml", report_xml("m2", T0, T0, ROWS)), "zip"))
    (md / "tmp" / "partial").write_bytes(b"ignored: still being delivered")
    names = [n for n, _ in dr.inputs([str(md)])]
    assert [Path(n).name for n in names] == ["2.eml:2,S", "1.eml"]
    got = [rep.report_id for n, d in dr.inputs([str(md)]) if isinstance(d, bytes)
           for rep in dr.reports(n, d)]
    assert got == ["m2", "m1"]
