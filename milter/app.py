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
import time
from collections.abc import Callable
from typing import Any, TypeVar

import Milter

from postwarden.findings import Finding, Severity, ids
from postwarden.log import log
from postwarden.logsafe import escape, field
from postwarden.message import Message, Origin, domain_of, strip_brackets
from postwarden.metrics import metrics
from postwarden.milter import macros, probe
from postwarden.milter.body import Body
from postwarden.milter.origin import classify
from postwarden.milter.pipeline import Inspector, Verdict
from postwarden.milter.ratelimit import health
from postwarden.policy import ACCEPT, HOLD, REJECT, TEMPFAIL, Decision
from postwarden.store import HoldRecord, StoreError

F = TypeVar("F", bound=Callable[..., Any])
_session = threading.local()  # libmilter runs one thread per MTA connection
MAX_BODY = 64 * 1024 * 1024  # beyond this the body is not kept: checks see a prefix


class Holder:
    """The current Inspector; swapped whole on SIGHUP so a message sees one config.

    It also counts the messages that reached end-of-message (the stop line).
    """

    inspector: Inspector | None = None
    _lock = threading.Lock()
    _count = 0

    def count_message(self) -> None:
        with self._lock:
            self._count += 1

    def messages(self) -> int:
        return self._count
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
        current.count_message()
        cfg = inspector.services.config
        if msg.origin is Origin.INBOUND:  # classified at MAIL FROM
            if cfg.outbound.log_inbound:
                log.info(inbound_line(msg), msg.queue_id)
            return Milter.ACCEPT
        body, self.spool = self.spool, None
        started = time.perf_counter()
        try:
            with body.given_to(msg) if body is not None else contextlib.nullcontext():
                verdict = inspector.inspect(msg)
            if probe.catcher.catch(msg, verdict, inspector.services.store,
                                   inspector.services.clock()):
                return Milter.DISCARD  # a self-check probe: recorded, never delivered
            self._apply_changes(verdict)
        except Exception as e:  # fail open, but the summary line is still written
            log.error(f"internal error: {type(e).__name__}: {e}; "
                      "message accepted unchecked (fail open)", msg.queue_id)
            failed = Finding("internal.error", Severity.ERROR, "postwarden failed")
            _log_verdict(msg, Verdict([failed], Decision(ACCEPT, ACCEPT)), cfg.mode)
            metrics.internal_errors.inc()
            return Milter.ACCEPT
        _log_verdict(msg, verdict, cfg.mode)
        d = verdict.decision
        metrics.message(msg.origin.value, d.action, [f.id for f in verdict.findings],
                        d.reason or "", [ch.name for ch in verdict.changes], verdict.summary,
                        time.perf_counter() - started)
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
            qid = escape(msg.queue_id)
            log.info(f"hold: {field('reason', reason)}"
                     f"{' ' + field('source', source) if source else ''}; "
                     f"release with 'postsuper -H {qid}', "
                     f"delete with 'postsuper -d {qid}'", msg.queue_id)
            store = inspector.services.store
            if store is not None:
                try:
                    health.record_hold(store, HoldRecord(
                        msg.queue_id, inspector.services.clock(), reason, source,
                        msg.mail_from))
                except StoreError as e:
                    metrics.store_errors.inc()
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


def inbound_line(msg: Message) -> str:
    """The line for inbound mail passed through (log_inbound = true)."""
    return f"origin=inbound {field('from', msg.mail_from, angle=True, limit=254)} not inspected"


def summary_line(msg: Message, verdict: Verdict, mode: str) -> str:
    """The one key=value line per message. Every value goes through logsafe: a sender's
    address, a header or a DNS answer can neither split it nor add a key to it."""
    d = verdict.decision
    parts = [
        f"origin={msg.origin}",
        field("from", msg.mail_from, angle=True, limit=254),
        field("hdr_from", msg.header_from, angle=True, limit=254),
        f"rcpts={len(msg.rcpts)}",
    ]
    parts += [field(k, v, limit=300) for k, v in verdict.summary.items()]
    parts += [f"findings={escape(ids(verdict.findings))}", f"action={d.action}"]
    if mode == "monitor":
        parts.append(f"would={d.would}")
    return " ".join(parts)


def _log_verdict(msg: Message, verdict: Verdict, mode: str) -> None:
    log.info(summary_line(msg, verdict, mode), msg.queue_id)
    domain = domain_of(msg.header_from) or domain_of(msg.mail_from)
    for f in verdict.findings:
        if f.severity >= Severity.WARNING:  # `error:` is kept for postwarden's own faults
            fix = f"; fix: {f.advice[0]}" if f.advice else ""
            log.limited(f"{f.id}|{domain}", "warning", f"{f.id}: {f.text}{fix}", msg.queue_id)
