"""Self-check probe tokens: an HMAC over a nonce and a time, keyed by a store secret.

`postwarden selfcheck --probe` (checks/probe_send.py) puts one in each probe's
`X-Postwarden-Probe` header; the milter (postwarden.milter.probe) takes a message
as a probe only when its token verifies with the secret in the store. Anyone can
write the header; nobody without the secret can make one that verifies, and a
token older than MAX_AGE is refused, so an old probe cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

HEADER = "X-Postwarden-Probe"
SECRET_META = "probe.secret"  # noqa: S105 (the store key that holds it, not a secret)
SEEN_PREFIX = "probe.seen."
MAX_AGE = 3600.0
_TOKEN = re.compile(r"^v1 ([0-9a-f]{32}) (\d{1,12}) ([0-9a-f]{64})$")


def mac(secret: str, nonce: str, ts: int) -> str:
    return hmac.new(secret.encode(), f"v1|{nonce}|{ts}".encode(), hashlib.sha256).hexdigest()


def make_token(secret: str, now: float) -> tuple[str, str]:
    """(nonce, header value) for one probe."""
    nonce = secrets.token_hex(16)
    ts = int(now)
    return nonce, f"v1 {nonce} {ts} {mac(secret, nonce, ts)}"


def verify(value: str, secret: str, now: float) -> str | None:
    """The nonce of a genuine, fresh token; None for anything else."""
    m = _TOKEN.match(value.strip())
    if not m or not secret:
        return None
    nonce, ts, got = m.group(1), int(m.group(2)), m.group(3)
    if abs(now - ts) > MAX_AGE:
        return None
    return nonce if hmac.compare_digest(got, mac(secret, nonce, ts)) else None


def ensure_secret(store: Any) -> str:
    """The store's probe secret, created on first use (StoreError propagates)."""
    secret = store.get_meta(SECRET_META)
    if not secret:
        store.put_meta(SECRET_META, secrets.token_hex(32))
        secret = store.get_meta(SECRET_META)  # another writer may have won: use theirs
    return str(secret)
