"""DKIM tag lists, key records and key files: the one parser the verifier, the
signer and the self-check's key audit share.

A key record (RFC 6376 §3.6.1) is read the way receivers read it, so that the
audit cannot call a key ok that the verifier (or OpenDKIM, or Gmail) refuses:
`v=` must be `DKIM1`, `k=` must be a key type receivers know (rsa, ed25519),
`h=` must allow sha256 (RFC 8301 forbids sha1), `s=` must include email (or
`*`), `p=` must be a public key of the `k=` type, an empty `p=` is a revoked
key. What makes a record unusable is `KeyRecord.problem`; what a receiver
accepts but some verifiers do not (an RSA key as bare PKCS#1, `v=` not first)
is in `KeyRecord.warnings`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import InvalidTagValueList, parse_tag_value

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

KEY_TYPES = ("rsa", "ed25519")
# The signature algorithms receivers accept (RFC 8301 §3.1, RFC 8463), by key type.
ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}
REFUSED_ALGORITHMS = {
    "rsa-sha1": "rsa-sha1 is not accepted by receivers (RFC 8301 §3.1: verifiers must not "
                "consider it valid)",
}
_WSP = re.compile(rb"\s+")


class TagError(ValueError):
    """A tag=value list that does not parse (RFC 6376 §3.2)."""


def parse_tags(text: str | bytes) -> dict[str, str]:
    """Tag=value list -> {tag: value}, values stripped, inner white space kept
    (the caller decides where FWS is allowed). Duplicate tags are an error."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    try:
        parsed = parse_tag_value(raw)
    except InvalidTagValueList as e:
        raise TagError(f"not a tag=value list ({e.__class__.__name__}: "
                       f"{e.args[0]!r:.60})" if e.args else "not a tag=value list") from None
    return {k.decode("ascii", "replace"): v.decode("utf-8", "surrogateescape")
            for k, v in parsed.items()}


def colon_list(value: str) -> list[str]:
    """`h=`, `s=`, `t=` values: colon-separated, FWS allowed around the colons."""
    return [p.strip().lower() for p in value.split(":") if p.strip()]


@dataclass(frozen=True)
class KeyRecord:
    """One DKIM key record as receivers read it."""

    key_type: str = "rsa"
    hashes: tuple[str, ...] = ()  # h=; empty means every hash
    services: tuple[str, ...] = ("*",)
    flags: tuple[str, ...] = ()  # t=: y (testing), s (strict identity)
    key: PublicKey | None = None
    bits: int = 0
    revoked: bool = False
    problem: str = ""  # non-empty: no receiver can verify with this record
    warnings: tuple[str, ...] = field(default=())

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def testing(self) -> bool:
        return "y" in self.flags

    def refuses(self, algorithm: str) -> str:
        """Why a signature with `a=algorithm` cannot verify with this key ('' if it can)."""
        if self.problem:
            return self.problem
        algorithm = algorithm.lower()
        if algorithm in REFUSED_ALGORITHMS:
            return REFUSED_ALGORITHMS[algorithm]
        wanted = ALGORITHMS.get(algorithm)
        if wanted is None:
            return f"unknown signature algorithm a={algorithm}"
        if wanted != self.key_type:
            return f"the key is k={self.key_type}, the signature a={algorithm}"
        if self.hashes and algorithm.rsplit("-", 1)[1] not in self.hashes:
            return f"the key allows only h={':'.join(self.hashes)}, the signature a={algorithm}"
        return ""


def _bad(problem: str, **kw: object) -> KeyRecord:
    return KeyRecord(problem=problem, **kw)  # type: ignore[arg-type]


@lru_cache(maxsize=512)
def parse_key_record(text: str | bytes) -> KeyRecord:
    """A `SELECTOR._domainkey.DOMAIN` TXT record (strings already joined). Cached:
    the verifier meets the same few records on every message (KeyRecord is frozen)."""
    try:
        tags = parse_tags(text)
    except TagError as e:
        return _bad(f"key record syntax error: {e}")
    warnings: list[str] = []
    if "v" in tags:
        if tags["v"] != "DKIM1":
            return _bad(f"v={tags['v']} (must be v=DKIM1; receivers discard the record)")
        if next(iter(tags)) != "v":
            warnings.append("v=DKIM1 is not the first tag (RFC 6376 §3.6.1 requires it first)")
    key_type = tags.get("k", "rsa").strip().lower()
    hashes = tuple(colon_list(tags["h"])) if "h" in tags else ()
    services = tuple(colon_list(tags["s"])) if "s" in tags else ("*",)
    flags = tuple(colon_list(tags.get("t", "")))
    common = {"key_type": key_type, "hashes": hashes, "services": services, "flags": flags}
    if key_type not in KEY_TYPES:
        return _bad(f"unknown key type k={key_type} (receivers know rsa and ed25519)", **common)
    if hashes and "sha256" not in hashes:
        return _bad(f"h={tags['h']} does not allow sha256, the only hash receivers accept",
                    **common)
    if not ({"*", "email"} & set(services)):
        return _bad(f"s={tags['s']}: the key is not for email (use s=email or drop s=)",
                    **common)
    if "p" not in tags:
        return _bad("no p= tag (the public key is missing)", **common)
    p = _WSP.sub(b"", tags["p"].encode("utf-8", "surrogateescape"))
    if not p:
        return _bad("key revoked (empty p=)", revoked=True, **common)
    try:
        der = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        return _bad("p= is not valid base64", **common)
    try:
        key, bits, warning = _public_key(der, key_type)
    except ValueError as e:
        return _bad(f"p= is not a {key_type} public key ({e})", **common)
    if warning:
        warnings.append(warning)
    return KeyRecord(key_type, hashes, services, flags, key, bits, warnings=tuple(warnings))


def _public_key(der: bytes, key_type: str) -> tuple[PublicKey, int, str]:
    if key_type == "ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(der), 256, ""
    try:
        key = serialization.load_der_public_key(der)  # SubjectPublicKeyInfo or PKCS#1
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("unparsable DER") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"a {type(key).__name__}, not RSA")
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    warning = "" if spki == der else (
        "p= is a bare PKCS#1 RSAPublicKey: dkimpy accepts it, OpenDKIM 2.11 answers "
        "permerror; publish SubjectPublicKeyInfo (the base64 of `openssl pkey -pubout`)")
    return key, key.key_size, warning


class KeyFileError(ValueError):
    """A private key file that cannot be used; the text says why."""


def load_private_key(data: bytes, name: str) -> PrivateKey:
    """PEM RSA or Ed25519 key, or dknewkey's base64 Ed25519 seed (`name` for messages)."""
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"{name} is not a usable PEM private key ({e})") from None
    else:
        try:
            seed = base64.b64decode(data.strip(), validate=True)
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        except ValueError:
            raise KeyFileError(f"{name}: neither a PEM key nor a base64 Ed25519 seed "
                               "(make one with `openssl genpkey -algorithm ed25519`)") from None
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise KeyFileError(f"{name}: only RSA and Ed25519 keys can sign DKIM")


def key_type_of(key: PrivateKey | PublicKey) -> str:
    return "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) \
        else "rsa"


def same_key(private: PrivateKey, public: PublicKey) -> bool:
    """Does the published public key belong to this private key?"""
    mine = private.public_key()
    if key_type_of(mine) != key_type_of(public):
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(mine.public_bytes(serialization.Encoding.DER, fmt)
                == public.public_bytes(serialization.Encoding.DER, fmt))


def record_for(private: PrivateKey) -> str:
    """The TXT record that publishes this key's public half."""
    pub = private.public_key()
    if isinstance(pub, ed25519.Ed25519PublicKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
