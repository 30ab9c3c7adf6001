"""The thin pymilter adapter: collect one Message, run the pipeline, apply, return.

Callbacks we do not need are not negotiated (@nocallback), and every callback but
end-of-message is no-reply: each round trip Postfix makes to us costs throughput.
The Inspector (config, services) is taken once, at MAIL FROM, and that one is used
until end of message: a SIGHUP in between applies to the next message, so no
message is classified under one config and inspected under another.
Any exception in here is caught, logged with the queue ID and turns into ACCEPT:
postwarden fails open and never loses or delays a message because of its own bug.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import Milter

from postwarden.log import log
from postwarden.message import MessageBuilder, Origin, strip_brackets
from postwarden.milter import effects, macros
from postwarden.milter.body import Body
from postwarden.milter.effects import Applied
from postwarden.milter.origin import classify
from postwarden.milter.pipeline import Inspector

F = TypeVar("F", bound=Callable[..., Any])
_session = threading.local()  # libmilter runs one thread per MTA connection
MAX_BODY = 64 * 1024 * 1024  # beyond this the body is not kept: checks see a prefix


class Holder:
    """The current Inspector, swapped whole on SIGHUP; each message takes it once, at
    MAIL FROM (PostwardenMilter.inspector), so it sees one config.

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
                log.error(f"internal error in {func.__name__}: {type(e).__name__}: {e}; "
                          "message accepted unchecked (fail open)", self.queue_id or None)
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
        self.builder: MessageBuilder | None = None
        self.inspector: Inspector | None = None  # the config this message is judged by
        self.spool: Body | None = None
        self.queue_id = ""
        self.failed = False

    @staticmethod
    def in_thread() -> PostwardenMilter | None:
        """The session this libmilter thread serves (None outside a session)."""
        m = getattr(_session, "milter", None)
        return m if isinstance(m, PostwardenMilter) else None

    def callback_failed(self, error: str) -> None:
        """pymilter could not hand us one command (see daemon._install_callback_error_hook):
        that item is skipped, the message is still answered and inspected."""
        log.limited(f"callback.{error[:40]}", "error",
                    f"pymilter could not pass a command to postwarden ({error}); that item "
                    "(e.g. a header whose name is not UTF-8) is skipped, the rest of the "
                    "message is inspected", self.queue_id or None)

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
        self.failed, self.queue_id = False, ""
        self._drop_body()
        self.inspector = inspector = current.inspector  # one snapshot until eom
        auth_user = self._macro("{auth_authen}")
        # Known from here on: inbound mail is not collected, only passed through.
        origin = Origin.INBOUND
        if inspector is not None:
            origin = classify(inspector.services.config.outbound, self.client_addr,
                              self.client_port, self.daemon_name, auth_user)
        self.builder = MessageBuilder(
            origin, _valid(strip_brackets(mailfrom)),
            client_name=_valid(self.client_name), client_addr=self.client_addr,
            client_port=self.client_port, daemon_name=_valid(self.daemon_name),
            auth_user=auth_user)
        return Milter.CONTINUE

    @Milter.noreply
    @guarded
    def envrcpt(self, rcpt: str, *params: str) -> int:
        if self.builder is not None:
            self.builder.rcpts.append(_valid(strip_brackets(rcpt)))
        return Milter.CONTINUE

    @Milter.noreply
    @guarded
    def header(self, name: str, value: str) -> int:
        b = self.builder
        if b is not None and b.origin is not Origin.INBOUND:
            b.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    @guarded
    def body(self, chunk: bytes) -> int:
        b = self.builder
        if b is not None and b.origin is not Origin.INBOUND:
            if self.spool is None:
                inspector = self.inspector
                memory = inspector.services.config.body_memory if inspector else 1 << 20
                self.spool = Body(memory, MAX_BODY)
            self.spool.add(chunk)
        return Milter.CONTINUE

    @guarded
    def eom(self) -> int:
        builder, inspector = self.builder, self.inspector
        self.builder = None
        if builder is None or inspector is None:
            return Milter.ACCEPT
        self.queue_id = self._macro("i") or "NOQUEUE"
        current.count_message()
        cfg = inspector.services.config
        if builder.origin is Origin.INBOUND:  # classified at MAIL FROM
            if cfg.outbound.log_inbound:
                log.info(effects.inbound_line(builder.build(self.queue_id)), self.queue_id)
            return Milter.ACCEPT
        spool, self.spool = self.spool, None
        try:
            applied = self._run(builder, spool, inspector)
            if applied.discard:
                return Milter.DISCARD  # a self-check probe: recorded, never delivered
            self._apply(applied)
        except Exception as e:  # fail open, but the summary line is still written
            log.error(f"internal error: {type(e).__name__}: {e}; "
                      "message accepted unchecked (fail open)", self.queue_id)
            effects.log_failure(builder.build(self.queue_id), cfg.mode)
            return Milter.ACCEPT
        d = applied.decision
        if d.holds:
            self.quarantine(f"postwarden: {d.reason or 'policy'}")
        reply = d.smtp_reply
        if reply is None:
            return Milter.ACCEPT
        self.setreply(reply[0], reply[1], _reply_text(d.reason))
        return Milter.TEMPFAIL if reply[0].startswith("4") else Milter.REJECT

    def _run(self, builder: MessageBuilder, spool: Body | None, inspector: Inspector
             ) -> Applied:
        """Build the Message with its body and run the pipeline. A spooled body waits
        for its turn and is dropped as soon as the pipeline is done (Body.contents)."""
        if spool is None:
            return inspector.handle(builder.build(self.queue_id))
        with spool.contents() as body:
            applied = inspector.handle(builder.build(self.queue_id, body, spool.truncated))
            del body
            return applied.without_message()

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

    def _apply(self, applied: Applied) -> None:
        for ch in applied.changes:
            if ch.op == "change":
                self.chgheader(ch.name, ch.index, ch.value)
            elif ch.op == "insert":
                self.addheader(ch.name, ch.value, ch.index)
            else:
                self.addheader(ch.name, ch.value)

    def _drop_body(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    @guarded
    def abort(self) -> int:
        self.builder, self.inspector = None, None
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


# The log lines live with the other effects; these names stay for their callers.
inbound_line = effects.inbound_line
summary_line = effects.summary_line
_log_verdict = effects.log_verdict
