"""DMARC aggregate reports written at test time (RFC 7489 Appendix C layout), and
the hostile ones: an XML bomb, a malformed document, a zip bomb."""

from __future__ import annotations

import gzip
import io
import zipfile
from email.message import EmailMessage

NS_9990 = "urn:ietf:params:xml:ns:dmarc-2.0"


def report_xml(report_id: str, begin: float, end: float, rows: list[dict[str, object]],
               org: str = "google.com", domain: str = "example.com",
               namespace: str = "") -> bytes:
    recs = []
    for r in rows:
        recs.append(f"""
  <record>
    <row>
      <source_ip>{r["ip"]}</source_ip>
      <count>{r.get("count", 1)}</count>
      <policy_evaluated>
        <disposition>{r.get("disposition", "none")}</disposition>
        <dkim>{r.get("dkim", "pass")}</dkim>
        <spf>{r.get("spf", "pass")}</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>{r.get("from", domain)}</header_from></identifiers>
    <auth_results>
      <dkim><domain>{r.get("from", domain)}</domain><result>{r.get("dkim", "pass")}</result>
        <selector>mail</selector></dkim>
      <spf><domain>{r.get("from", domain)}</domain><result>{r.get("spf", "pass")}</result></spf>
    </auth_results>
  </record>""")
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback{xmlns}>
  <report_metadata>
    <org_name>{org}</org_name>
    <email>noreply-dmarc-support@{org}</email>
    <report_id>{report_id}</report_id>
    <date_range><begin>{int(begin)}</begin><end>{int(end)}</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp>
    <pct>100</pct>
  </policy_published>{"".join(recs)}
</feedback>
""".encode()


XML_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<feedback><report_metadata><report_id>&lol9;</report_id></report_metadata></feedback>
"""

MALFORMED = b"<?xml version='1.0'?><feedback><report_metadata><report_id>x</report_id>"


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def zip_bomb() -> bytes:
    """A member that inflates to 40 MB: over the per-report limit."""
    return zipped("bomb.xml", b"<feedback>" + b" " * (40 * 1024 * 1024) + b"</feedback>")


def report_mail(filename: str, payload: bytes, subtype: str = "gzip") -> bytes:
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc-support@google.com"
    msg["To"] = "dmarc@example.com"
    msg["Subject"] = "Report domain: example.com Submitter: google.com"
    msg.set_content("This is an aggregate report from google.com.")
    msg.add_attachment(payload, maintype="application", subtype=subtype, filename=filename)
    return msg.as_bytes()
