"""DMARC aggregate reports (RFC 7489 Appendix C, RFC 9990): read safely, compare with
what postwarden predicted.

Reports arrive from strangers: as XML, gzip or zip, attached to a mail in a Maildir.
Everything here treats them as hostile: defusedxml (no DTD, no entities: an XML
bomb is refused), a size limit on every file, every decompressed stream and every
zip member, at most a few members per zip, and a row limit. A report that breaks a
rule is rejected whole with one line saying why; nothing of it is imported.

`compare` is pure: one report, this host's IPs and domains, and the outbound
records the milter stored for the report's period -> findings. A receiver that saw
`dkim=fail` (or SPF/DMARC fail) from our IP for a From domain we predicted to pass is
a mismatch; mail from an IP that is not ours using our domain is reported too (a
forgotten sender such as a newsletter service, or spoofing).
"""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import ipaddress
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from postwarden.findings import Finding, Severity
from postwarden.orgdomain import aligned
from postwarden.store.feedback import OutboundRecord

MAX_FILE = 10 * 1024 * 1024  # a report file or mail as read from disk
MAX_XML = 32 * 1024 * 1024  # one decompressed report
MAX_MEMBERS = 8  # zip members looked at
MAX_ROWS = 100_000
MISMATCH = "dmarc_report.mismatch"
FOREIGN = "dmarc_report.foreign_ip"


class ReportError(Exception):
    """Why one input is not imported (one line)."""


@dataclass(frozen=True)
class Row:
    source_ip: str
    count: int
    header_from: str
    disposition: str
    dkim: str  # policy_evaluated: pass | fail
    spf: str
    auth_dkim: tuple[tuple[str, str], ...] = ()  # (domain, result) from auth_results
    auth_spf: tuple[tuple[str, str], ...] = ()

    @property
    def dmarc(self) -> str:
        return "pass" if "pass" in (self.dkim, self.spf) else "fail"


@dataclass
class Report:
    org: str
    report_id: str
    begin: float
    end: float
    domain: str
    policy: str
    rows: list[Row] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Report ids are unique per reporting organisation only."""
        return f"{self.org}!{self.report_id}"


# --- reading ----------------------------------------------------------------------------

def _limited(stream: IO[bytes] | gzip.GzipFile, limit: int, what: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ReportError(f"{what} is larger than {limit // (1024 * 1024)} MB after "
                          "decompression (refused: a compression bomb?)")
    return data


def _unpack(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """XML documents inside one blob (XML, gzip or zip); ReportError when none."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                yield name, _limited(gz, MAX_XML, f"{name}")
        except (OSError, EOFError) as e:
            raise ReportError(f"{name}: broken gzip: {e}") from None
        return
    if data[:4] == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            members = [i for i in zf.infolist() if not i.is_dir()][:MAX_MEMBERS]
            if not members:
                raise ReportError(f"{name}: empty zip")
            for info in members:
                if info.file_size > MAX_XML:
                    raise ReportError(f"{name}: member {info.filename[:80]!r} would be "
                                      f"{info.file_size} bytes (refused: a zip bomb?)")
                with zf.open(info) as member:
                    yield f"{name}:{info.filename[:80]}", _limited(member, MAX_XML, name)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError,
                EOFError, RuntimeError) as e:
            raise ReportError(f"{name}: broken zip: {e}") from None
        return
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        yield name, data
        return
    if b"\n\n" in data[:65536] or b"\r\n\r\n" in data[:65536]:  # a mail carrying it
        yield from _from_mail(name, data)
        return
    raise ReportError(f"{name}: neither XML, gzip, zip nor a mail with a report attached")


_REPORT_TYPES = ("application/gzip", "application/x-gzip", "application/zip",
                 "application/x-zip-compressed", "text/xml", "application/xml",
                 "application/octet-stream")


def _from_mail(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    found = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        filename = (part.get_filename() or "").lower()
        if part.get_content_type() not in _REPORT_TYPES and not filename.endswith(
                (".xml", ".gz", ".zip")):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            continue
        found = True
        yield from _unpack(f"{name}[{filename[:60] or part.get_content_type()}]", payload)
    if not found:
        raise ReportError(f"{name}: a mail without a report attachment")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # RFC 9990 reports carry a namespace


def _child(node: Any, *path: str) -> Any:
    for step in path:
        if node is None:
            return None
        node = next((c for c in node if _local(c.tag) == step), None)
    return node


def _text(node: Any, *path: str) -> str:
    n = _child(node, *path)
    return (n.text or "").strip() if n is not None and n.text else ""


def _children(node: Any, name: str) -> list[Any]:
    return [c for c in node if _local(c.tag) == name] if node is not None else []


def parse_xml(name: str, data: bytes) -> Report:
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except DefusedXmlException as e:
        raise ReportError(f"{name}: refused: {type(e).__name__} (DTDs and entities are "
                          "not allowed: an XML bomb?)") from None
    except SafeET.ParseError as e:
        raise ReportError(f"{name}: not well-formed XML: {e}") from None
    if _local(root.tag) != "feedback":
        raise ReportError(f"{name}: not a DMARC aggregate report (root <{_local(root.tag)}>)")
    meta = _child(root, "report_metadata")
    org, rid = _text(meta, "org_name"), _text(meta, "report_id")
    if not rid:
        raise ReportError(f"{name}: no report_metadata/report_id")
    try:
        begin = float(_text(meta, "date_range", "begin"))
        end = float(_text(meta, "date_range", "end"))
    except ValueError:
        raise ReportError(f"{name}: report {rid[:60]!r}: no valid date_range") from None
    rep = Report(org[:200] or "?", rid[:200], begin, end,
                 _text(root, "policy_published", "domain").lower()[:253],
                 _text(root, "policy_published", "p")[:20])
    records = _children(root, "record")
    if len(records) > MAX_ROWS:
        raise ReportError(f"{name}: more than {MAX_ROWS} records")
    for rec in records:
        row = _child(rec, "row")
        ip = _text(row, "source_ip")
        try:
            ip = str(ipaddress.ip_address(ip))
            count = int(_text(row, "count") or "0")
        except ValueError:
            raise ReportError(f"{name}: report {rid[:60]!r}: a record with a bad "
                              "source_ip or count") from None
        auth = _child(rec, "auth_results")
        rep.rows.append(Row(
            ip, max(0, count), _text(rec, "identifiers", "header_from").lower()[:253],
            _text(row, "policy_evaluated", "disposition")[:20],
            _text(row, "policy_evaluated", "dkim").lower()[:20],
            _text(row, "policy_evaluated", "spf").lower()[:20],
            tuple((_text(d, "domain").lower()[:253], _text(d, "result").lower()[:20])
                  for d in _children(auth, "dkim")),
            tuple((_text(s, "domain").lower()[:253], _text(s, "result").lower()[:20])
                  for s in _children(auth, "spf")),
        ))
    return rep


def inputs(paths: Iterable[str]) -> Iterator[tuple[str, bytes | ReportError]]:
    """(name, contents) of every file named, or in a directory or Maildir (cur/, new/)."""
    for p in map(Path, paths):
        if p.is_dir():
            subs = [p / "cur", p / "new"] if (p / "cur").is_dir() else [p]
            files = sorted(f for d in subs for f in d.iterdir() if f.is_file())
        else:
            files = [p]
        for f in files:
            try:
                size = f.stat().st_size
                if size > MAX_FILE:
                    yield str(f), ReportError(f"{f}: {size} bytes, more than "
                                              f"{MAX_FILE // (1024 * 1024)} MB (refused)")
                    continue
                yield str(f), f.read_bytes()
            except OSError as e:
                yield str(f), ReportError(f"{f}: cannot read: {e.strerror}")


def reports(name: str, data: bytes) -> list[Report]:
    """Every report in one input; ReportError rejects the input whole."""
    return [parse_xml(n, xml) for n, xml in _unpack(name, data)]


# --- comparing --------------------------------------------------------------------------

def _ours(domain: str, domains: Iterable[str]) -> bool:
    return any(aligned(domain, d) for d in domains) if domain else False


def compare(rep: Report, ips: Iterable[str], domains: Iterable[str],
            predicted: Iterable[OutboundRecord]) -> tuple[list[Row], list[Finding]]:
    """(rows about us, findings) for one report."""
    our_ips = {str(ipaddress.ip_address(i)) for i in ips}
    our_domains = [d.lower() for d in domains]
    preds = [o for o in predicted if rep.begin <= o.when <= rep.end + 86400]
    kept: list[Row] = []
    out: list[Finding] = []
    base = {"org": rep.org, "report_id": rep.report_id, "begin": rep.begin, "end": rep.end}
    for row in rep.rows:
        from_ours = _ours(row.header_from or rep.domain, our_domains)
        if row.source_ip not in our_ips and not from_ours:
            continue
        kept.append(row)
        data = {**base, "source_ip": row.source_ip, "header_from": row.header_from,
                "count": row.count, "dkim": row.dkim, "spf": row.spf, "dmarc": row.dmarc}
        if row.source_ip not in our_ips:
            sev = Severity.INFO if row.dmarc == "pass" else Severity.WARNING
            out.append(Finding(
                FOREIGN, sev,
                f"{rep.org} saw {row.count} message(s) From {row.header_from} from "
                f"{row.source_ip}, which is not one of this host's IPs (dmarc={row.dmarc})",
                data, ("A service sending for the domain (newsletter, CRM, another "
                       "server) must be in SPF and sign with DKIM; otherwise it is spoofing",)))
            continue
        mine = [o for o in preds if o.from_domain == row.header_from]
        if not mine:
            continue  # nothing predicted for this From domain in the period: no verdict
        said = {"dkim": row.dkim, "spf": row.spf, "dmarc": row.dmarc}
        for what in ("dkim", "spf", "dmarc"):
            passed = sum(1 for o in mine if getattr(o, what) == "pass")
            if said[what] == "fail" and passed:
                out.append(Finding(
                    MISMATCH, Severity.ERROR,
                    f"MISMATCH: {rep.org} saw {what}=fail for {row.count} message(s) From "
                    f"{row.header_from} from {row.source_ip}; postwarden predicted "
                    f"{what}=pass for {passed} of {len(mine)} in that period",
                    {**data, "check": what, "predicted_pass": passed,
                     "predicted": len(mine)},
                    ("A signature broken in transit (a mailing list, a footer), a DKIM "
                     "key not published as signed, or mail from this IP that postwarden "
                     "did not inspect",)))
    return kept, out
