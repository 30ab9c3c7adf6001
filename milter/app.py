"""The thin pymilter adapter: collect one Message, run the Inspector, act.

Callbacks we do not need are not negotiated (@nocallback), and every callback but
end-of-message is no-reply: each round trip Postfix makes to us costs throughput.
Any exception in here is caught, logged with the queue ID and turns into ACCEPT:
postwarden fails open and never loses or delays a message because of its own bug.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import Milter

from postwarden.findings import Finding, Severity, ids
from postwarden.log import log
from postwarden.message import Message, Origin, domain_of, strip_brackets
from postwarden.milter import macros
from postwarden.milter.body import Body
from postwarden.milter.origin import classify
from postwarden.milter.pipeline import Inspector, Verdict
from postwarden.policy import ACCEPT, HOLD, REJECT, TEMPFAIL, Decision
from postwarden.store import HoldRecord, StoreError

F = TypeVar("F", bound=Callable[..., Any])
_session = threading.local()  # libmilter runs one thread per MTA connection
MAX_BODY = 64 * 1024 * 1024  # beyond this the body is not kept: checks see a prefix


class Holder:
    """The current Inspector; swapped whole on SIGHUP so a message sees one config."""

    inspector: Inspector | None = None
    unix_socket: bool = True  # the peer can only be a local process with access


current = Holder()


def guarded(func: F) -> F:
    """Catch everything: log once per session with the queue ID, then stay quiet."""

    @functools.wraps(func)
    def wrapper(self: PostwardenMilter, *args: Any) -> Any:
        try:
            return func(self, *args)
        except Exception as e:
            if not self.failed:
                self.failed = True
                qid = self.msg.queue_id if self.msg else None
                log.error(f"internal error in {func.__name__}: {type(e).__name__}: {e}; "
                          "message accepted unchecked (fail open)", qid)
            return Milter.CONTINUE if func.__name__ != "eom" else Milter.ACCEPT

    return wrapper  # type: ignore[return-value]


@Milter.header_leading_space
class PostwardenMilter(Milter.Base):
    def __init__(self) -> None:
        super().__init__()
        self.client_name = ""
        self.client_addr = ""
        self.client_port = 0
        self.daemon_name = ""
        self.msg: Message | None = None
        self.spool: Body | None = None
        self.failed = False

    @staticmethod
    def in_thread() -> PostwardenMilter | None:
        """The session this libmilter thread serves (None outside a session)."""
        m = getattr(_session, "milter", None)
        return m if isinstance(m, PostwardenMilter) else None

    def callback_failed(self, error: str) -> None:
        """pymilter could not hand us one command (see daemon._install_callback_error_hook):
        that item is skipped, the message is still answered and inspected."""
        qid = self.msg.queue_id if self.msg else None
        log.limited(f"callback.{error[:40]}", "error",
                    f"pymilter could not pass a command to postwarden ({error}); that item "
                    "(e.g. a header whose name is not UTF-8) is skipped, the rest of the "
                    "message is inspected", qid)

    @Milter.noreply
    @guarded
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        _session.milter = self
        self.client_name = hostname or ""
        if isinstance(hostaddr, tuple) and len(hostaddr) >= 2:
            self.client_addr, self.client_port = str(hostaddr[0]), int(hostaddr[1])
        self.daemon_name = self._macro("{daemon_name}")
        return Milter.CONTINUE

    @Milter.noreply
    @guarded
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.failed = False
        self._drop_body()
        self.msg = Message(
            client_name=_valid(self.client_name),
            client_addr=self.client_addr,
            client_port=self.client_port,
            daemon_name=_valid(self.daemon_name),
            auth_user=self._macro("{auth_authen}"),
            mail_from=_valid(strip_brackets(mailfrom)),
        )
        # Known from here on: inbound mail is not collected, only passed through.
        inspector = current.inspector
        if inspector is not None:
            m = self.msg
            m.origin = classify(inspector.services.config.outbound, m.client_addr,
                                m.client_port, m.daemon_name, m.auth_user)
        return Milter.CONTINUE

    @Milter.noreply
    @guarded
    def envrcpt(self, rcpt: str, *params: str) -> int:
        if self.msg is not None:
            self.msg.rcpts.append(_valid(strip_brackets(rcpt)))
        return Milter.CONTINUE

    @Milter.noreply
    @guarded
    def header(self, name: str, value: str) -> int:
        if self.msg is not None and self.msg.origin is not Origin.INBOUND:
            self.msg.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    @guarded
    def body(self, chunk: bytes) -> int:
        if self.msg is not None and self.msg.origin is not Origin.INBOUND:
            if self.spool is None:
                inspector = current.inspector
                memory = inspector.services.config.body_memory if inspector else 1 << 20
                self.spool = Body(memory, MAX_BODY)
            self.spool.add(chunk)
            self.msg.body_truncated = self.spool.truncated
        return Milter.CONTINUE

    @guarded
    def eom(self) -> int:
        msg, inspector = self.msg, current.inspector
        if msg is None or inspector is None:
            return Milter.ACCEPT
        msg.queue_id = self._macro("i") or "NOQUEUE"
        cfg = inspector.services.config
        if msg.origin is Origin.INBOUND:  # classified at MAIL FROM
            if cfg.outbound.log_inbound:
                log.info(f"origin=inbound from=<{msg.mail_from}> not inspected", msg.queue_id)
            return Milter.ACCEPT
        body, self.spool = self.spool, None
        try:
            with body.given_to(msg) if body is not None else contextlib.nullcontext():
                verdict = inspector.inspect(msg)
            self._apply_changes(verdict)
        except Exception as e:  # fail open, but the summary line is still written
            log.error(f"internal error: {type(e).__name__}: {e}; "
                      "message accepted unchecked (fail open)", msg.queue_id)
            failed = Finding("internal.error", Severity.ERROR, "postwarden failed")
            _log_verdict(msg, Verdict([failed], Decision(ACCEPT, ACCEPT)), cfg.mode)
            return Milter.ACCEPT
        _log_verdict(msg, verdict, cfg.mode)
        return self._act(msg, verdict, inspector)

    def _macro(self, name: str) -> str:
        """A macro's value, read with bounds (libmilter's own lookup can be crashed
        by a malformed macro packet: see postwarden.milter.macros)."""
        try:
            return macros.getsymval(self._ctx, name) or ""
        except macros.Unavailable as e:
            if not current.unix_socket:
                log.limited("macros.unavailable", "error",
                            f"macros not read ({e}): on an inet: socket that could "
                            "crash the daemon; origin by daemon name and SASL login "
                            "and the queue ID are unknown")
                return ""
            log.limited("macros.unavailable", "warning",
                        f"reading macros through libmilter ({e})")
        try:
            return self.getsymval(name) or ""
        except UnicodeDecodeError:
            return "?"

    def _apply_changes(self, verdict: Verdict) -> None:
        for ch in verdict.changes:
            if ch.op == "change":
                self.chgheader(ch.name, ch.index, ch.value)
            elif ch.op == "insert":
                self.addheader(ch.name, ch.value, ch.index)
            else:
                self.addheader(ch.name, ch.value)

    def _act(self, msg: Message, verdict: Verdict, inspector: Inspector) -> int:
        d = verdict.decision
        if d.action == HOLD:
            reason = d.reason or "policy"
            source = verdict.summary.get("source", "")
            self.quarantine(f"postwarden: {reason}")
            log.info(f"hold: reason={reason}{' source=' + source if source else ''}; "
                     f"release with 'postsuper -H {msg.queue_id}', "
                     f"delete with 'postsuper -d {msg.queue_id}'", msg.queue_id)
            store = inspector.services.store
            if store is not None:
                try:
                    store.record_hold(HoldRecord(msg.queue_id, inspector.services.clock(),
                                                 reason, source, msg.mail_from))
                except StoreError as e:
                    log.limited("store.hold", "error", f"cannot record hold reason: {e}")
            return Milter.ACCEPT
        if d.action == TEMPFAIL:
            self.setreply("451", "4.7.1", _reply_text(d.reason))
            return Milter.TEMPFAIL
        if d.action == REJECT:
            self.setreply("550", "5.7.1", _reply_text(d.reason))
            return Milter.REJECT
        return Milter.ACCEPT

    def _drop_body(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    @guarded
    def abort(self) -> int:
        self.msg = None
        self._drop_body()
        return Milter.CONTINUE

    @guarded
    def close(self) -> int:
        _session.milter = None
        self._drop_body()
        return Milter.CONTINUE

    @Milter.nocallback
    def hello(self, hostname: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def eoh(self) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def unknown(self, cmd: str) -> int:
        return Milter.CONTINUE


def _valid(text: str) -> str:
    """Envelope and macro values as valid Unicode (pymilter decodes invalid UTF-8 to
    surrogates); header values keep theirs, DKIM needs their exact bytes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _reply_text(reason: str) -> str:
    return f"message refused by local policy ({reason or 'policy'})".replace("%", "%%")


def _addr(a: str) -> str:
    """Addresses in the log never carry spaces or control characters."""
    if a.isascii() and a.isprintable() and " " not in a:  # the usual case
        return a[:254]
    return "".join(c for c in a if c.isprintable() and not c.isspace())[:254]


def summary_line(msg: Message, verdict: Verdict, mode: str) -> str:
    d = verdict.decision
    parts = [
        f"origin={msg.origin}",
        f"from=<{_addr(msg.mail_from)}>",
        f"hdr_from=<{_addr(msg.header_from)}>",
        f"rcpts={len(msg.rcpts)}",
    ]
    parts += [f"{k}={v}" for k, v in verdict.summary.items()]
    parts += [f"findings={ids(verdict.findings)}", f"action={d.action}"]
    if mode == "monitor":
        parts.append(f"would={d.would}")
    return " ".join(parts)


def _log_verdict(msg: Message, verdict: Verdict, mode: str) -> None:
    log.info(summary_line(msg, verdict, mode), msg.queue_id)
    domain = domain_of(msg.header_from) or domain_of(msg.mail_from)
    for f in verdict.findings:
        if f.severity >= Severity.WARNING:  # `error:` is kept for postwarden's own faults
            log.limited(f"{f.id}|{domain}", "warning", f"{f.id}: {f.text}", msg.queue_id)
