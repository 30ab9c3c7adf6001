"""Self-check probes: prove, per submission path, that postwarden inspects the mail.

`postwarden selfcheck --probe` sends a message carrying an `X-Postwarden-Probe`
token through each path Postfix offers. The milter recognises a probe only by
that token, an HMAC over a nonce and a timestamp keyed by a secret kept in the
store (`probe.secret`): anyone can write the header, nobody without the secret
can make one that verifies, so a sender cannot get mail discarded or hide it as
a probe. A verified probe is inspected like any message, then what the milter saw
(origin, source key, DKIM/SPF/DMARC, whether and by whom it signed) is recorded
in the store under its nonce and the message is discarded: a probe is never
delivered. Tokens older than MAX_AGE are ignored (no replay of an old probe).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from postwarden.log import log
from postwarden.message import Message
from postwarden.probetoken import HEADER, SECRET_META, SEEN_PREFIX, verify


class Catcher:
    """The milter side: recognise, record, discard. Cheap for ordinary mail: one
    header lookup; the store is read only when a probe header is present."""

    def __init__(self) -> None:
        self._secret = ""
        self._lock = threading.Lock()

    def _key(self, store: Any, refresh: bool) -> str:
        with self._lock:
            if refresh or not self._secret:
                self._secret = str(store.get_meta(SECRET_META) or "")
            return self._secret

    def catch(self, msg: Message, verdict: Any, store: Any, now: float) -> bool:
        """True when `msg` is a genuine probe (recorded; the caller discards it)."""
        value = msg.header(HEADER)
        if value is None or store is None:
            return False
        try:
            nonce = verify(value, self._key(store, False), now) or \
                verify(value, self._key(store, True), now)  # the secret may be new
        except Exception as e:  # the store is down: treat it as ordinary mail
            log.limited("probe.store", "warning", f"probe header seen but the store is "
                        f"unavailable ({e}); handled as ordinary mail", msg.queue_id)
            return False
        if nonce is None:
            return False
        summary = dict(verdict.summary)
        signed = [c.value for c in verdict.changes if c.name.lower() == "dkim-signature"]
        seen = {"when": now, "queue_id": msg.queue_id, "origin": str(msg.origin),
                "source": summary.get("source", ""), "dkim": summary.get("dkim", ""),
                "spf": summary.get("spf", ""), "dmarc": summary.get("dmarc", ""),
                "signed_by": summary.get("signed", "") or _signer(signed),
                "findings": [f.id for f in verdict.findings],
                "action": str(verdict.decision.action), "daemon": msg.daemon_name}
        try:
            store.put_meta(SEEN_PREFIX + nonce, json.dumps(seen))
        except Exception as e:
            log.warning(f"probe {nonce[:8]}: inspected but not recorded ({e}); discarded",
                        msg.queue_id)
            return True
        log.info(f"probe {nonce[:8]} inspected: origin={seen['origin']} "
                 f"source={seen['source'] or '-'} dkim={seen['dkim'] or '-'} "
                 f"signed={seen['signed_by'] or 'no'} dmarc={seen['dmarc'] or '-'}; "
                 "discarded (a self-check probe is never delivered)", msg.queue_id)
        return True


def _signer(values: list[str]) -> str:
    out = []
    for v in values:
        m = re.search(r"\bd=([^;\s]+)", v)
        if m:
            out.append(m.group(1))
    return "+".join(out)


catcher = Catcher()
