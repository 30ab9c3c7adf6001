"""Test doubles for the authentication checks: a Resolver whose network is a dict.

FakeResolver keeps the real Resolver's cache and budget logic and replaces only
the network fetch, so the checks are exercised as in production without DNS.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postwarden.config import Config, DkimKey
from postwarden.dns import Answer, Budget, Resolver
from postwarden.message import Message, Origin
from postwarden.milter.pipeline import CheckContext, Services


class FakeResolver(Resolver):
    def __init__(self, records: dict[tuple[str, str], list[str]] | None = None,
                 ttl: int = 300) -> None:
        super().__init__(nameservers=["127.0.0.1"], port=1, timeout=1.0)
        self.records: dict[tuple[str, str], list[str]] = {}
        self.failing: set[str] = set()  # names that time out
        self.asked: list[tuple[str, str]] = []
        self.ttl = ttl
        for (name, rdtype), values in (records or {}).items():
            self.add(name, rdtype, *values)

    def add(self, name: str, rdtype: str, *values: str) -> None:
        self.records.setdefault((name.lower().rstrip("."), rdtype.upper()), []).extend(values)

    def _fetch(self, name: str, rdtype: str, lifetime: float) -> Answer:
        self.queries += 1
        self.asked.append((name, rdtype))
        if name in self.failing:
            return Answer("temperror", error="timeout after 1.0s")
        values = self.records.get((name, rdtype))
        if values:
            return Answer("ok", tuple(values), self.ttl)
        if any(n == name or n.endswith("." + name) for n, _ in self.records):
            return Answer("nodata", ttl=60)
        return Answer("nxdomain", ttl=60)


def config(**host: object) -> Config:
    cfg = Config()
    cfg.host.ips = list(host.get("ips", ["192.0.2.25"]))  # type: ignore[call-overload]
    cfg.host.hostname = str(host.get("hostname", "mail.example.com"))
    cfg.host.domains = list(host.get("domains", []))  # type: ignore[call-overload]
    return cfg


def context(resolver: FakeResolver, cfg: Config | None = None, budget: float = 2.0,
            clock: object = None) -> CheckContext:
    services = Services(config=cfg or config(), resolver=resolver)
    if clock is not None:
        services.clock = clock  # type: ignore[assignment]
    return CheckContext(services, Budget(budget))


def message(from_: str | list[str] | None = "Alice <alice@example.com>",
            mail_from: str = "www-data@example.com", body: bytes = b"Hello.\r\n",
            extra: list[tuple[str, str]] | None = None,
            origin: Origin = Origin.LOCAL) -> Message:
    """A message as the milter collects it: values keep their leading space."""
    headers: list[tuple[str, str]] = [
        ("Received", " by mail.example.com (Postfix, from userid 33)\n\tid 4F9D42A0B1; "
                     "Mon,  1 Jan 2024 00:00:00 +0000 (UTC)"),
    ]
    froms = [from_] if isinstance(from_, str) else (from_ or [])
    headers += [("From", " " + f) for f in froms]
    headers += [("To", " bob@example.net"), ("Subject", " test"),
                ("Date", " Mon, 1 Jan 2024 00:00:00 +0000"),
                ("Message-ID", " <1@example.com>")]
    headers += extra or []
    return Message(queue_id="4F9D42A0B1", origin=origin, client_addr="127.0.0.1",
                   mail_from=mail_from, rcpts=["bob@example.net"], headers=headers, body=body)


def rsa_key(tmp: Path, bits: int = 2048, name: str = "rsa.key") -> tuple[Path, str]:
    """A PEM private key file and its DKIM TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path = tmp / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, f"v=DKIM1; k=rsa; p={base64.b64encode(pub).decode()}"


def ed25519_key(tmp: Path, name: str = "ed.key", pem: bool = False) -> tuple[Path, str]:
    """An Ed25519 key file (dknewkey's base64 seed, or PEM) and its DKIM TXT record."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp / name
    if pem:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    else:
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        path.write_bytes(base64.b64encode(seed) + b"\n")
    path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return path, f"v=DKIM1; k=ed25519; p={base64.b64encode(pub).decode()}"


def signing_config(keys: list[tuple[str, str, Path]], **host: object) -> Config:
    cfg = config(**host)
    cfg.dkim.sign = True
    cfg.dkim.keys = [DkimKey(d, s, str(p)) for d, s, p in keys]
    return cfg
