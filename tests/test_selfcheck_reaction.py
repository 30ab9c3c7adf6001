"""The per-message side of the automatic reaction: only form mail, only while active."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from postwarden import config as configmod
from postwarden.checks import reaction as mod
from postwarden.checks.periodic import reaction
from postwarden.dns import Budget
from postwarden.message import Message
from postwarden.milter.pipeline import CheckContext, Services
from selfcheck_fakes import FakeResolver


@dataclass(frozen=True)
class Src:
    key: str
    form: bool


@pytest.fixture
def ctx() -> CheckContext:
    return CheckContext(Services(configmod.from_dict({}), FakeResolver()), Budget(1.0))


def test_flags_form_mail_only_while_active(ctx: CheckContext) -> None:
    msg = Message(queue_id="4F9D42A0B1")
    ctx.memo["source"] = Src("php:/var/www/contact.php", True)
    reaction.active, reaction.why = False, ""
    assert mod.listed_form_check(msg, ctx) == []
    reaction.active, reaction.why = True, "192.0.2.25 (L1)"
    try:
        (f,) = mod.listed_form_check(msg, ctx)
        assert f.id == "uceprotect.listed_form" and "192.0.2.25" in f.text
        ctx.memo["source"] = Src("sasl:alice", False)
        assert mod.listed_form_check(msg, ctx) == []
    finally:
        reaction.active, reaction.why = False, ""
