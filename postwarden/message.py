"""One outbound message as the milter collected it: the input of every check.

The adapter collects a transaction in a MessageBuilder and builds one frozen
Message at end of message; what the checks ask for (the header index, the From
addresses) is computed once per message, on first use.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import getaddresses
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any


class _once:
    """A value computed on first use and kept in the instance's __dict__.

    functools.cached_property without its lock (Python 3.11 takes an RLock on every
    first access, a third of the cost of the header index): a Message belongs to
    one thread, and computing a value twice would give the same value anyway."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.name = fn, fn.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


if not TYPE_CHECKING:
    cached_property = _once


class Origin(enum.StrEnum):
    LOCAL = "local"  # sendmail / pickup: PHP mail(), cron, scripts
    SUBMISSION = "submission"  # SASL-authenticated or a submission daemon
    INTERNAL = "internal"  # SMTP from a configured internal network
    INBOUND = "inbound"  # everything else: not ours to judge


@dataclass(frozen=True)
class Message:
    """Envelope, headers and (a bounded prefix of) the body of one message.

    Header values are kept as Postfix sent them (leading space and folding intact)
    so that DKIM can be verified and signed on the exact bytes. Frozen: every check
    sees the same message, and the values derived from it are computed once.
    """

    queue_id: str = "NOQUEUE"
    origin: Origin = Origin.INBOUND
    client_name: str = ""
    client_addr: str = ""
    client_port: int = 0
    daemon_name: str = ""
    auth_user: str = ""
    mail_from: str = ""
    rcpts: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_truncated: bool = False

    @cached_property
    def _index(self) -> dict[str, list[str]]:
        """Stripped values by lower-case name, built once per message: the checks ask
        for From, DKIM-Signature and friends a dozen times."""
        index: dict[str, list[str]] = {}
        for k, v in self.headers:
            index.setdefault(k.lower(), []).append(v.strip())
        return index

    def header(self, name: str) -> str | None:
        """First value of a header, without the leading space; None if absent."""
        values = self._index.get(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    @cached_property
    def _from_addresses(self) -> tuple[str, ...]:
        return _addresses(tuple(self.header_all("From")))

    @property
    def from_addresses(self) -> list[str]:
        """Every address in every From header (RFC 5322 allows a list)."""
        return list(self._from_addresses)

    @cached_property
    def from_domains(self) -> tuple[str, ...]:
        """Distinct domains of all From addresses, in order (RFC 7489 6.6.1)."""
        out: list[str] = []
        for addr in self._from_addresses:
            d = domain_of(addr)
            if d and d not in out:
                out.append(d)
        return tuple(out)

    @cached_property
    def header_from(self) -> str:
        """The single From address DMARC would use, or '' if there is not exactly one."""
        addrs = self._from_addresses
        return addrs[0] if len(addrs) == 1 else ""

    @cached_property
    def from_domain(self) -> str:
        return domain_of(self.header_from)

    @cached_property
    def mail_from_domain(self) -> str:
        return domain_of(self.mail_from)

    @cached_property
    def _raw_headers(self) -> bytes:
        return header_bytes(self.headers)

    def raw_headers(self) -> bytes:
        """The header block as the receiver gets it, CRLF line ends: what DKIM
        signs and verifies (header_bytes)."""
        return self._raw_headers

    def raw(self) -> bytes:
        return self.raw_headers() + b"\r\n" + self.body


class MessageBuilder:
    """One SMTP transaction's envelope and headers as the milter callbacks deliver
    them, piece by piece.

    The adapter owns one per transaction (and the body, which it spools); build() at
    end of message returns the frozen Message every check sees.
    """

    def __init__(self, origin: Origin, mail_from: str, *, client_name: str = "",
                 client_addr: str = "", client_port: int = 0, daemon_name: str = "",
                 auth_user: str = "") -> None:
        self.origin, self.mail_from = origin, mail_from
        self.client_name, self.client_addr, self.client_port = (client_name, client_addr,
                                                                client_port)
        self.daemon_name, self.auth_user = daemon_name, auth_user
        self.rcpts: list[str] = []
        self.headers: list[tuple[str, str]] = []

    def build(self, queue_id: str, body: bytes = b"", body_truncated: bool = False
              ) -> Message:
        return Message(queue_id=queue_id, origin=self.origin, client_name=self.client_name,
                       client_addr=self.client_addr, client_port=self.client_port,
                       daemon_name=self.daemon_name, auth_user=self.auth_user,
                       mail_from=self.mail_from, rcpts=self.rcpts, headers=self.headers,
                       body=body, body_truncated=body_truncated)


def header_bytes(headers: list[tuple[str, str]]) -> bytes:
    """Header fields as bytes, exactly as Postfix sent them to the milter.

    The milter negotiates header_leading_space, so each value holds what followed
    the colon, its leading white space (or lack of it) included: `From:a@b` stays
    without a space, since a c=simple signature covers that byte. pymilter hands
    over invalid UTF-8 as surrogates, which surrogateescape turns back into the
    bytes that came in. Postfix joins folded lines with LF; on the wire (and in
    every DKIM hash) they are CRLF. Values postwarden adds itself (HeaderChange)
    carry their own leading space, so they too are hashed as Postfix will write
    them. One pass over one joined string: this runs once per signed or verified
    message.
    """
    text = "".join([f"{k}:{v}\n" for k, v in headers])
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text.replace("\n", "\r\n").encode("utf-8", "surrogateescape")


@lru_cache(maxsize=4096)
def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    """getaddresses() is the costliest step of a message's checks (about half of
    Inspector.inspect, measured with bench/profile_inspect.py) and five checks ask for
    the From addresses: parse each distinct From value once."""
    return tuple(addr for _, addr in getaddresses(list(values)) if addr)


def domain_of(address: str) -> str:
    """Lower-case domain of an address, '' when there is none."""
    address = address.strip().strip("<>")
    if "@" not in address:
        return ""
    domain = address.rsplit("@", 1)[1].rstrip(".").lower()
    return domain


def strip_brackets(address: str) -> str:
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    return a


__all__ = ["Address", "Message", "MessageBuilder", "Origin", "domain_of", "header_bytes",
           "strip_brackets"]
