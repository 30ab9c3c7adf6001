"""The one escaping rule for every value that goes into a line a person or a parser reads.

Log lines, `postwarden status`, `selfcheck` text and Nagios output carry values that a
sender or a DNS operator chose: envelope addresses, header domains, DKIM tags, SPF and
DMARC records, queue IDs from macros. None of them may split a line (a NUL, CR, LF, FF,
VT, NEL, U+2028/U+2029 or any other separator), paint the terminal (ESC), or plant a
`key=value` pair that a reader takes for postwarden's own.

The documented form (`escape`):

- printable ASCII (0x20-0x7e) is kept; a backslash becomes `\\\\`;
- every other code point becomes `\\xNN` (below 0x100), `\\uNNNN` (BMP) or
  `\\UNNNNNNNN`; a lone surrogate (invalid UTF-8 from pymilter) is `\\uDCNN`;
- a value that could be read as more than one token or as a `key=` (it holds a space,
  `=`, `"`, `<` or `>`), is wrapped in double quotes, with `"` written `\\"` and a space
  `\\x20`: a quoted value is still one whitespace-free token, so even a reader that
  splits on spaces never finds a `key=` inside it.

`field(key, value)` renders `key=value` by that rule; `field(key, addr, angle=True)`
keeps the Postfix look `from=<addr>` (an `=` inside is fine, SRS addresses hold it) and
quotes the whole `"<...>"` when the address holds a space, `"`, `<` or `>`.
`parse_fields` is the
inverse a log reader (and the tests) use.

`line_safe` is the same character rule without quoting, applied by the logger to every
finished line as the last guard: whatever a caller forgot, a line stays one line.
"""

from __future__ import annotations

import re

_SPECIAL = frozenset(' ="<>')
_ANGLE_SPECIAL = frozenset(' "<>')  # `=` is fine inside <...>: SRS addresses hold it
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\"}


def _char(c: str) -> str:
    n = ord(c)
    if c == "\\":
        return "\\\\"
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def _chars(text: str) -> str:
    if text.isascii() and text.isprintable() and "\\" not in text:  # the usual case
        return text
    return "".join(c if c in _PLAIN else _char(c) for c in text)


def escape(value: object, limit: int = 0) -> str:
    """`value` as one safe token: printable ASCII, quoted if it could read as key=.

    `limit` > 0 cuts the raw value to that many characters first (addresses, domains),
    so a long hostile value costs a bounded line.
    """
    text = value if isinstance(value, str) else str(value)
    if limit and len(text) > limit:
        text = text[:limit]
    out = _chars(text)
    return out if _SPECIAL.isdisjoint(out) else _quoted(out)


def _quoted(out: str) -> str:
    return '"' + out.replace('"', '\\"').replace(" ", "\\x20") + '"'


def field(key: str, value: object, *, angle: bool = False, limit: int = 0) -> str:
    """`key=value`, or `key=<value>` for addresses, by the rule of `escape`."""
    if not angle:
        return f"{key}={escape(value, limit)}"
    return f"{key}={angled(value, limit)}"


def angled(value: object, limit: int = 0) -> str:
    """An address as `<addr>`, by the rule of `escape` (`"<...>"` when it holds a
    space, `"`, `<` or `>`): for lines that show an address without a key."""
    text = value if isinstance(value, str) else str(value)
    if limit and len(text) > limit:
        text = text[:limit]
    inner = _chars(text)
    if not _ANGLE_SPECIAL.isdisjoint(inner):
        return _quoted(f"<{inner}>")
    return f"<{inner}>"


def line_safe(text: str) -> str:
    """Every character outside printable ASCII escaped (backslashes kept as they are:
    this runs over lines whose values `escape` already wrote)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if " " <= c <= "~" else _char(c) for c in text)


_FIELD = re.compile(r'(?:^|(?<= ))([A-Za-z0-9_.-]+)='
                    r'("(?:[^"\\ ]|\\.)*"|<[^<>" ]*>|[^ "<>=]*)(?= |$)')
_UNESC = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|.)")


def unescape(token: str) -> str:
    """The value `escape` (or `field`) was given, from the token it wrote."""
    if len(token) >= 2 and token[0] == '"' and token[-1] == '"':
        token = token[1:-1]

    def one(m: re.Match[str]) -> str:
        g = m.group(1)
        return chr(int(g[1:], 16)) if len(g) > 1 else g

    return _UNESC.sub(one, token)


ANGLE_KEYS = frozenset({"from", "hdr_from"})  # the fields written with angle=True


def parse_fields(line: str, angle: frozenset[str] = ANGLE_KEYS) -> dict[str, str]:
    """The key=value pairs of a line written with `field`, unescaped. Text that is not
    a whole `key=value` token (free text, a value inside quotes) yields nothing. The
    brackets come off only the `angle` keys: a plain value may itself be `<...>`."""
    out: dict[str, str] = {}
    for m in _FIELD.finditer(line):
        key, raw = m.group(1), m.group(2)
        value = unescape(raw)
        if key in angle and value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        out.setdefault(key, value)
    return out
