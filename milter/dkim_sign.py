"""DKIM signing fixer: RSA-SHA256 and Ed25519-SHA256, relaxed/relaxed by default.

Canonicalization and header selection are dkimpy's; the private-key operation
goes through the `cryptography` package, because dkimpy's own pure-Python RSA
costs about 6.7 ms per 2048-bit signature here against 0.26 ms for OpenSSL
(measured in tests/test_dkim_sign.py). Signs only when no aligned valid
signature exists, never twice with the same d=/s=, and over the headers as they
will be after the fixers before it (the From rewrite) changed them, byte for
byte as Postfix will write them (postwarden.message.header_bytes). Relaxed
header canonicalization keeps the signature valid whatever folding a relay
applies; Received and Return-Path are never signed.

The DKIM-Signature is folded here, not by dkimpy's fold(): RFC 6376 §3.5 allows
folding white space only between tags, around the `:` of `h=`, and anywhere in
the base64 of `b=` and `bh=`. A fold inside a header name (`content-tra⏎
nsfer-encoding`) is kept by dkimpy as part of the name, so dkimpy and the
receivers that follow it fail the signature. OpenDKIM folds the same way.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import (
    CanonicalizationPolicy,
    correct_empty_body,
    strip_trailing_lines,
)

from postwarden.config import Config, DkimKey
from postwarden.dkimkeys import KeyFileError, PrivateKey, load_private_key
from postwarden.findings import Finding
from postwarden.log import log
from postwarden.message import Message, header_bytes
from postwarden.milter.auth_results import DkimSignature, from_domains
from postwarden.milter.context import NO_FIX, CheckContext, Fix, HeaderChange
from postwarden.milter.dmarc_verdict import dkim_passes
from postwarden.orgdomain import aligned, normalize

CANON = b"relaxed/relaxed"
_NEVER = {"received", "return-path", "dkim-signature", "bcc"}
WIDTH = 76  # folded lines stay under RFC 5322's 78 characters
NAME = b"DKIM-Signature"


class KeyError_(ValueError):
    """A key file that cannot be used; the text says why and what to do."""


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: bytes  # b"rsa-sha256" | b"ed25519-sha256"
    key: PrivateKey
    bits: int

    def sign(self, digest: bytes) -> bytes:
        """Sign the SHA-256 digest of the canonicalized headers (RFC 6376, RFC 8463)."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return self.key.sign(digest)


def load_key(spec: DkimKey, min_bits: int = 1024) -> SigningKey:
    """PEM RSA or Ed25519 key, or dknewkey's base64 Ed25519 seed."""
    try:
        with open(spec.key_file, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except OSError as e:
        raise KeyError_(f"cannot read {spec.key_file}: {e.strerror}") from None
    if mode & stat.S_IROTH:
        raise KeyError_(f"{spec.key_file} is readable by every user of this host, so anyone "
                        "could sign as your domain: refused; run `chmod 640` on it (group "
                        "postwarden) or `chmod 600`")
    try:
        key = load_private_key(data, spec.key_file)
    except KeyFileError as e:
        raise KeyError_(str(e)) from None
    domain, selector = normalize(spec.domain), spec.selector
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < min_bits:
            raise KeyError_(f"{spec.key_file} is a {key.key_size}-bit RSA key; receivers "
                            "ignore keys under 1024 bits: generate a 2048-bit key")
        return SigningKey(domain, selector, b"rsa-sha256", key, key.key_size)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return SigningKey(domain, selector, b"ed25519-sha256", key, 256)


def apply_changes(headers: list[tuple[str, str]], changes: Sequence[HeaderChange]
                  ) -> list[tuple[str, str]]:
    """The header list after Postfix applies `changes` (libmilter semantics)."""
    out = list(headers)
    for ch in changes:
        if ch.op == "add":
            out.append((ch.name, ch.value))
        elif ch.op == "insert":
            out.insert(max(0, min(ch.index, len(out))), (ch.name, ch.value))
        elif ch.op == "change":
            seen = 0
            for i, (name, _) in enumerate(out):
                if name.lower() == ch.name.lower():
                    seen += 1
                    if seen == ch.index:
                        if ch.value.strip():
                            out[i] = (name, ch.value)
                        else:
                            del out[i]
                        break
            else:
                if ch.value.strip():  # libmilter: changing a missing header adds it
                    out.append((ch.name, ch.value))
    return out


def signed_header_names(headers: list[tuple[str, str]], wanted: list[str]) -> list[bytes]:
    """Each wanted header as often as it occurs, plus one more `from` (no second From)."""
    names = [h.lower() for h in wanted if h.lower() not in _NEVER]
    present = [n.lower() for n, _ in headers]
    out: list[bytes] = []
    for n in dict.fromkeys(names):
        out += [n.encode("ascii")] * present.count(n)
    out.append(b"from")
    return out


_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP = re.compile(rb"[\t ]+")


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 relaxed body canonicalization, as dkimpy's, but a pass with
    nothing to do is skipped (a memchr-speed test instead of a regex scan: most of
    the cost of signing a 100 KB message was these scans)."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP.sub(b" ", body)
    return bytes(correct_empty_body(strip_trailing_lines(body)))


def body_hash(body: bytes, canon: bytes = CANON) -> bytes:
    """`bh=`: the same for every key that signs this message."""
    if canon.endswith(b"/simple"):
        canonical = bytes(strip_trailing_lines(body))  # RFC 6376 3.4.3
    else:
        canonical = relaxed_body(body)
    return base64.b64encode(hashlib.sha256(canonical).digest())


def fold_tags(fields: list[tuple[bytes, bytes]], namelen: int = len(NAME)) -> bytes:
    """The tag list folded where RFC 6376 §3.5 allows FWS, CRLF-SP line breaks.

    Between tags (after `;`), in `h=` only before a `:` (never inside a header
    name), in `b=` anywhere (base64 admits FWS). `bh=` fits a line and is kept
    whole, as OpenDKIM and dkimpy do. `b=` always starts a line of its own, so
    the value hashed with an empty `b=` and the final one differ in the b= value
    only."""
    lines: list[bytes] = []
    line = b""
    col = namelen + 2  # "DKIM-Signature: "
    last = len(fields) - 1

    def put(piece: bytes, glue: bytes) -> None:
        nonlocal line, col
        if line and col + len(glue) + len(piece) > WIDTH:
            lines.append(line)
            line, col = b" " + piece, 1 + len(piece)
        else:
            line += glue + piece
            col += len(glue) + len(piece)

    for i, (tag, value) in enumerate(fields):
        end = b";" if i < last else b""
        glue = b" " if line else b""
        if tag == b"h":
            names = value.split(b":")
            pieces = [b"h=" + names[0]] + [b":" + n for n in names[1:]]
            pieces[-1] += end
            put(pieces[0], glue)
            for p in pieces[1:]:
                put(p, b"")
        elif tag == b"b":
            if line:  # b= on a line of its own
                lines.append(line)
                line, col, glue = b" ", 1, b""
            text = b"b=" + value + end
            line += text[:WIDTH - 1]
            rest = text[WIDTH - 1:]
            while rest:
                lines.append(line)
                chunk, rest = rest[:WIDTH - 1], rest[WIDTH - 1:]
                line, col = b" " + chunk, 1 + len(chunk)
        else:
            put(tag + b"=" + value + end, glue)
    lines.append(line)
    return b"\r\n".join(lines)


def make_signature(header_block: bytes, bodyhash: bytes, key: SigningKey,
                   include: list[bytes], now: int, canon: bytes = CANON) -> str:
    """The DKIM-Signature value (leading space, LF-folded) for the message."""
    headers, _ = dkim.rfc822_parse(header_block + b"\r\n")
    policy = CanonicalizationPolicy.from_c_value(canon)
    fields = [
        (b"v", b"1"), (b"a", key.algorithm), (b"c", canon),
        (b"d", key.domain.encode("ascii")), (b"s", key.selector.encode("ascii")),
        (b"t", str(now).encode("ascii")), (b"h", b":".join(include)),
        (b"bh", bodyhash), (b"b", b""),
    ]
    unsigned = fold_tags(fields)
    h = hashlib.sha256()
    dkim.hash_headers(h, policy, policy.canonicalize_headers(headers), include,
                      (NAME, b" " + unsigned), dict(fields))
    fields[-1] = (b"b", base64.b64encode(key.sign(h.digest())))
    final = fold_tags(fields)  # begins with `unsigned`: b= starts its own line
    return " " + final.decode("ascii").replace("\r\n", "\n")


class DkimSigner:
    """The signing fixer; keys are loaded once per config (load errors logged once)."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        self.cfg, self.clock = cfg, clock
        self.keys: list[SigningKey] = []
        if not cfg.dkim.sign:
            return
        for spec in cfg.dkim.keys:
            try:
                k = load_key(spec)
            except KeyError_ as e:
                log.error(f"dkim: key {spec.selector}._domainkey.{spec.domain} not used: {e}")
                continue
            if k.bits < 2048 and k.algorithm == b"rsa-sha256":
                log.warning(f"dkim: key {spec.key_file} has {k.bits} bits; RFC 8301 asks "
                            "2048: generate a new key under a new selector")
            self.keys.append(k)

    def keys_for(self, domain: str, mode: str) -> list[SigningKey]:
        """Keys of the From domain itself, else (relaxed) of its organizational domain."""
        exact = [k for k in self.keys if k.domain == domain]
        if exact or mode == "s":
            return exact
        return [k for k in self.keys if aligned(k.domain, domain, "r")]

    def __call__(self, msg: Message, ctx: CheckContext, findings: list[Finding],
                 before: tuple[HeaderChange, ...] = ()) -> Fix:
        """Sign the message as the fixes before this one leave it (`before`)."""
        if (not self.keys or msg.origin.value not in self.cfg.dkim.sign_origins
                or msg.body_truncated):
            return NO_FIX
        ev = ctx.evidence(msg)
        headers = apply_changes(msg.headers, before) if before else msg.headers
        probe = Message(headers=headers) if before else msg  # parsed once if unchanged
        domains = from_domains(probe)
        if len(domains) != 1 or len(probe.from_addresses) != 1:
            return NO_FIX  # no From or several: DMARC cannot pass whatever we sign
        domain = domains[0]
        mode = ev.alignment_mode(domain, "adkim")
        existing = ev.dkim()
        if not before and dkim_passes(ev, domain):
            return NO_FIX  # an aligned pass already (a rewritten From breaks every one)
        keys = [k for k in self.keys_for(domain, mode)
                if not any(s.domain == k.domain and s.selector == k.selector for s in existing)]
        if not keys:
            return NO_FIX
        canon = self.cfg.dkim.canonicalization.encode("ascii")
        block = header_bytes(headers)
        bh = body_hash(msg.body, canon)
        include = signed_header_names(headers, self.cfg.dkim.sign_headers)
        now = int(self.clock())
        changes = tuple(HeaderChange("insert", "DKIM-Signature",
                                     make_signature(block, bh, k, include, now, canon), 0)
                        for k in keys)
        shown = "+".join(f"{k.domain}/{k.selector}" for k in keys)
        # as evidence for the outgoing message: an aligned pass, known without verifying
        signed = tuple(DkimSignature(k.domain, k.selector, k.algorithm.decode("ascii"), "pass",
                                     "rsa" if k.algorithm == b"rsa-sha256" else "ed25519",
                                     k.bits) for k in keys)
        return Fix(changes, (("signed", shown),), signed=signed)
