"""The header-bytes model: what DKIM hashes is what Postfix sent and will write."""

from __future__ import annotations

from postwarden.message import Message, header_bytes


def test_header_bytes_are_what_postfix_sent() -> None:
    headers = [
        ("Subject", "no space"),  # `Subject:no space`: no space is added
        ("X-Tab", "\tindented"),
        ("Folded", " first\n\tsecond\n third"),  # Postfix joins folded lines with LF
        ("Empty", ""),
        ("Crlf", " a\r\n b"),
        ("Raw", " caf\udcc3\udca9 \udcff"),  # pymilter's surrogates for undecodable bytes
    ]
    assert header_bytes(headers) == (
        b"Subject:no space\r\nX-Tab:\tindented\r\nFolded: first\r\n\tsecond\r\n third\r\n"
        b"Empty:\r\nCrlf: a\r\n b\r\nRaw: caf\xc3\xa9 \xff\r\n")


def test_raw_is_headers_blank_line_body() -> None:
    m = Message(headers=[("From", "a@example.com"), ("To", " b@example.net")], body=b"x\r\n")
    assert m.raw() == b"From:a@example.com\r\nTo: b@example.net\r\n\r\nx\r\n"
    assert m.header("From") == "a@example.com" and m.from_domain == "example.com"
