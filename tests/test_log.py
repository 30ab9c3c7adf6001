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


def test_flood_table_is_bounded_and_forgets_oldest_first() -> None:
    from postwarden.log import SEEN_MAX

    lg, _out, now = make()
    for i in range(SEEN_MAX + 500):  # a new From domain on every message
        assert lg.limited(f"dkim.missing|d{i}.example", "warning", "x", "Q")
    assert len(lg._seen) == SEEN_MAX
    assert "dkim.missing|d0.example" not in lg._seen  # the oldest went first
    # a recent key is still limited; the forgotten one is simply logged again
    assert not lg.limited(f"dkim.missing|d{SEEN_MAX + 499}.example", "warning", "x", "Q")
    assert lg.limited("dkim.missing|d0.example", "warning", "x", "Q")
    # once the interval passed, expired keys leave as new ones arrive
    now[0] += 601
    lg.limited("spf.fail|new.example", "warning", "x", "Q")
    assert len(lg._seen) == 1


def test_suppressed_count_survives_other_keys() -> None:
    lg, out, now = make()
    lg.limited("a", "warning", "A", "Q")
    for i in range(3):
        now[0] += 1
        lg.limited("a", "warning", "A", "Q")
        lg.limited(f"b{i}", "warning", "B", "Q")
    now[0] += 600
    assert lg.limited("a", "warning", "A", "Q")
    assert out.getvalue().splitlines()[-1].endswith("A (repeated 3 times since last logged)")


def test_control_and_separator_characters_are_escaped() -> None:
    lg, out, _ = make()
    lg.info("a\x1b[2Jb\u2028c\x85d\x00e", "Q\nX")
    (line,) = out.getvalue().splitlines()
    assert line.endswith(': Q\\x0aX: a\\x1b[2Jb\\u2028c\\x85d\\x00e')
