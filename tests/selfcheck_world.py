"""Fixture zones for the self-check scenarios: list zones mirroring the real ones,
a reverse zone, and the sending domains, all served by the harness's Knot."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.knot import DnsServer
from harness.milterproc import toml_dumps
from postwarden import cli
from postwarden.blocklists import DEFAULT_LISTS

IP = "192.0.2.25"
HOST = "mail.example.com"
L1, L2, L3 = "dnsbl-1.uceprotect.net", "dnsbl-2.uceprotect.net", "dnsbl-3.uceprotect.net"
TXT = {
    L1: f"IP {IP} is UCEPROTECT-Level 1 listed. See http://www.uceprotect.net/rblcheck.php?ipr={IP}",
    L2: "Net 192.0.2.0/24 is UCEPROTECT-Level2 listed because {n} abusers are hosted by "
        "Example Hosting/AS64500 there. See: http://www.uceprotect.net/rblcheck.php",
    L3: "Your ISP Example Hosting, DE/AS64500 is UCEPROTECT-Level3 listed because of a "
        "spamscore of {n}. See: http://www.uceprotect.net/rblcheck.php",
}


def rel(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


def txt(value: str) -> str:
    chunks = [value[i:i + 200] for i in range(0, len(value), 200)]
    return " ".join('"' + c.replace('"', '\\"') + '"' for c in chunks)


def dkim_txt(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@dataclass
class World:
    """What the fixture DNS says. Defaults: a clean, well-configured host."""

    key: rsa.RSAPrivateKey
    listed: dict[str, list[str]] = field(default_factory=dict)  # zone -> A answers for IP
    txt: dict[str, str] = field(default_factory=dict)  # zone -> TXT for IP
    zone_extra: dict[str, str] = field(default_factory=dict)  # zone -> extra lines
    ptr: list[str] = field(default_factory=lambda: [HOST])
    mail_a: list[str] = field(default_factory=lambda: [IP])
    spf: list[str] = field(default_factory=lambda: [f"v=spf1 ip4:{IP} -all"])
    dmarc: str = "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
    dkim: str = ""
    domains: tuple[str, ...] = ("example.com",)
    extra_zones: dict[str, str] = field(default_factory=dict)

    def publish(self, dns: DnsServer) -> None:
        for bl in DEFAULT_LISTS:
            self._list_zone(dns, bl.zone)
        for zone in self.extra_zones:
            dns.zone(zone, self.extra_zones[zone])
        dns.zone("2.0.192.in-addr.arpa",
                 "\n".join(f"25 PTR {p}." for p in self.ptr) + "\n26 PTR mail.example.com.")
        for d in self.domains:
            lines = [f"@ MX 10 mail.{d}."] + [f"@ TXT {txt(s)}" for s in self.spf]
            if d == "example.com":
                lines += [f"mail A {a}" for a in self.mail_a]
                lines.append("mail A 192.0.2.26")
            else:
                lines += [f"mail A {IP}", "mail A 192.0.2.26"]
            if self.dmarc:
                lines.append(f"_dmarc TXT {txt(self.dmarc)}")
            lines.append(f"mail._domainkey TXT {txt(self.dkim or dkim_txt(self.key))}")
            dns.zone(d, "\n".join(lines))

    def _list_zone(self, dns: DnsServer, zone: str) -> None:
        lines = ["2.0.0.127 A 127.0.0.2"]
        for a in self.listed.get(zone, []):
            lines.append(f"{rel(IP)} A {a}")
        if zone in self.txt:
            lines.append(f"{rel(IP)} TXT {txt(self.txt[zone])}")
        lines.append(self.zone_extra.get(zone, ""))
        dns.zone(zone, "\n".join(lines))


def write_config(path: Path, dns_port: int, workdir: Path, key_file: Path,
                 postfix_conf: Path, **selfcheck: Any) -> Path:
    settings: dict[str, Any] = {
        "host": {"ips": [IP], "hostname": HOST, "domains": ["example.com"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 1.0},
        "store": {"backend": "sqlite", "path": str(workdir / "state.db")},
        "log": {"target": "stderr"},
        "socket": "unix:/tmp/postwarden-selfcheck-unused.sock",
        "selfcheck": {"query_timeout": 1.0, "run_timeout": 10.0,
                      "postfix_config_dir": str(postfix_conf),
                      "php_ini": [str(workdir / "php.ini")],
                      "dkim_selectors": {"example.com": ["mail"]},
                      "dkim_key_files": {"mail._domainkey.example.com": str(key_file)},
                      **selfcheck},
    }
    (workdir / "php.ini").write_text("mail.add_x_header = On\n")
    path.write_text(toml_dumps(settings))
    return path


def selfcheck(config: Path, capsys: Any, *args: str) -> tuple[int, dict[str, Any]]:
    """The real CLI in-process: exit code and the JSON report."""
    capsys.readouterr()
    code = cli.main(["-c", str(config), "selfcheck", "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def statuses(report: dict[str, Any], prefix: str = "") -> dict[str, str]:
    return {f"{c['id']}@{c['target']}": c["status"] for c in report["checks"]
            if c["id"].startswith(prefix)}


def status_of(report: dict[str, Any], check_id: str, target: str | None = None) -> str:
    found = [c["status"] for c in report["checks"]
             if c["id"] == check_id and (target is None or c["target"] == target)]
    assert len(found) == 1, (check_id, target, found)
    return found[0]
