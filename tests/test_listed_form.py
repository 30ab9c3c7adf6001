"""The per-message side of the automatic reaction: only form mail, only while listed.

The listings come from the HostState the periodic self-check writes; the finding is
reported whatever `hold_forms_when_listed` says (that switch only makes the policy
hold it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from postwarden import config as configmod
from postwarden.dns import Budget
from postwarden.hoststate import HostState
from postwarden.message import Message
from postwarden.milter import listed_form as mod
from postwarden.milter.pipeline import CheckContext, Services
from selfcheck_fakes import FakeResolver


@dataclass(frozen=True)
class Src:
    key: str
    form: bool


def with_source(ctx: CheckContext, src: Src) -> CheckContext:
    """A context for a message whose sender is known to be `src`."""
    return CheckContext(ctx.services, ctx.budget).given(source=src)


@pytest.fixture
def ctx() -> CheckContext:
    return CheckContext(Services(configmod.from_dict({}), FakeResolver()), Budget(1.0))


def test_flags_form_mail_only_while_listed(ctx: CheckContext) -> None:
    msg = Message(queue_id="4F9D42A0B1")
    ctx = with_source(ctx, Src("php:/var/www/contact.php", True))
    assert mod.listed_form_check(msg, ctx) == []
    ctx.services.host.observe(1000.0, {("192.0.2.25", "l1"): True})
    (f,) = mod.listed_form_check(msg, ctx)
    assert f.id == "uceprotect.listed_form" and "192.0.2.25" in f.text
    assert "hold_forms_when_listed" in f.advice[0]  # the switch is off: name the one that holds
    ctx = with_source(ctx, Src("sasl:alice", False))
    assert mod.listed_form_check(msg, ctx) == []


def test_l3_alone_is_not_flagged_and_a_clean_answer_ends_it(ctx: CheckContext) -> None:
    msg = Message(queue_id="4F9D42A0B1")
    ctx = with_source(ctx, Src("php:/var/www/contact.php", True))
    host = ctx.services.host
    host.observe(1000.0, {("192.0.2.25", "l3"): True})
    assert mod.listed_form_check(msg, ctx) == []
    host.observe(2000.0, {("192.0.2.25", "l2"): True})
    host.observe(3000.0, {("192.0.2.25", "l2"): None})  # unknown: no evidence, keep it
    (f,) = mod.listed_form_check(msg, ctx)
    assert "192.0.2.25 (L2)" in f.text
    assert host.snapshot().listed()[0].since == 2000.0
    host.observe(4000.0, {("192.0.2.25", "l2"): False})
    assert mod.listed_form_check(msg, ctx) == []


def test_an_ip_no_longer_targeted_is_forgotten() -> None:
    host = HostState()
    host.observe(1.0, {("192.0.2.25", "l1"): True})
    host.observe(2.0, {}, ips=["198.51.100.7"])
    assert host.snapshot().listed() == ()
    assert host.snapshot().last_run == 2.0


def test_the_warning_line_carries_the_advice(ctx: CheckContext) -> None:
    import io
    import sys

    from postwarden.log import log
    from postwarden.milter.app import _log_verdict
    from postwarden.milter.pipeline import Verdict
    from postwarden.policy import decide

    msg = Message(queue_id="4F9D42A0B1")
    ctx = with_source(ctx, Src("php:/var/www/contact.php", True))
    ctx.services.host.observe(1000.0, {("192.0.2.25", "l1"): True})
    findings = mod.listed_form_check(msg, ctx)
    verdict = Verdict(findings, decide(findings, msg.origin, "monitor",
                                       ctx.services.config.policy))
    buf = io.StringIO()
    log.setup("stderr", stream=buf, repeat_interval=0.0)
    try:
        _log_verdict(msg, verdict, "monitor")
    finally:
        log.setup("stderr", stream=sys.stderr)
    out = buf.getvalue()
    assert "findings=uceprotect.listed_form action=accept would=accept" in out
    assert "warning: uceprotect.listed_form: form mail from php:/var/www/contact.php while " \
           "192.0.2.25 (L1) is listed on UCEPROTECT; fix: stop the form" in out
