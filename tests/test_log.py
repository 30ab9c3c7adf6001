"""Postfix-style log lines and flood limiting."""

from __future__ import annotations

import io
import re

from postwarden.log import Logger


def make() -> tuple[Logger, io.StringIO, list[float]]:
    now = [1000.0]
    lg = Logger()
    out = io.StringIO()
    lg.setup("stderr", repeat_interval=600, stream=out)
    lg.clock = lambda: now[0]
    return lg, out, now


def test_queue_id_first_and_postfix_prefixes() -> None:
    lg, out, _ = make()
    lg.info("origin=local findings=none", "4F9D42A0B1")
    lg.warning("dkim.missing: sign it", "4F9D42A0B1")
    lg.error("store down")
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"postwarden\[\d+\]: 4F9D42A0B1: origin=local findings=none", lines[0])
    assert lines[1].endswith(": 4F9D42A0B1: warning: dkim.missing: sign it")
    assert re.fullmatch(r"postwarden\[\d+\]: error: store down", lines[2])


def test_newlines_never_split_a_line() -> None:
    lg, out, _ = make()
    lg.info("a\nb\rc", "Q1")
    assert len(out.getvalue().splitlines()) == 1


def test_repeats_are_limited_and_counted() -> None:
    lg, out, now = make()
    assert lg.limited("dkim.missing|example.com", "warning", "no signature", "Q1")
    for _ in range(5):
        now[0] += 10
        assert not lg.limited("dkim.missing|example.com", "warning", "no signature", "Q2")
    assert lg.limited("spf.fail|example.com", "warning", "other key", "Q3")
    now[0] += 600
    assert lg.limited("dkim.missing|example.com", "warning", "no signature", "Q4")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "Q4: warning: no signature (repeated 5 times since last logged)" in lines[2]
