"""Read the MTA's macros ourselves instead of through libmilter's smfi_getsymval().

Why: libmilter (sendmail 8.17, engine.c) splits a `D` (macro) packet with dec_argv()
into an array holding one pointer per NUL-terminated string and a NULL at the end,
and never checks that the strings come in name/value pairs. smfi_getsymval() then
walks that array two entries at a time, stopping only when it lands on the NULL.
With an odd number of entries (three strings, or `D C j\\0host` without the last NUL,
which dec_argv turns into ["j", NULL]) the walk steps over the terminator and takes
whatever lies past the allocation on the heap for string pointers: SIGSEGV, in the
thread of one session, which ends the whole daemon. pymilter's getsymval is a plain
call into it; nothing on the Python side can validate first.

The arrays themselves are sound: dec_argv always writes the NULL terminator inside
the allocation and every non-NULL entry ends at a NUL inside the packet buffer. So
this module reads them with bounds: count the entries up to the terminator, then
pair them; a trailing name without a value is ignored. The struct offsets are those
of libmilter's `struct smfi_str` and pymilter's `milter_ContextObject` (type
milter.Context). Before every read they are proven on the live session: libmilter's
own smfi_getpriv() of the context must be the pymilter context object, and so must
the private-data field at our offset. Where the proof fails (another libmilter
build) Unavailable is raised; the adapter then falls back to smfi_getsymval only on
a unix socket, where the peer is Postfix (app.PostwardenMilter._macro), and says so
once in the log.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from postwarden.milter import clib

# struct smfi_str on LP64: ctx_id, ctx_sd, ctx_dbg, ctx_timeout, ctx_state, ctx_smfi,
# ctx_prot_vers, ctx_aflags, ctx_pflags, ctx_pflags2mta, ctx_prot_vers2mta, then
# ctx_mac_ptr[7], ctx_mac_buf[7], ctx_mac_list[7], ctx_reply, ctx_privdata.
MAX_MACROS_ENTRIES = 7
_PTR = ctypes.sizeof(ctypes.c_void_p)
_MAC_PTR = 80
_MAC_BUF = _MAC_PTR + MAX_MACROS_ENTRIES * _PTR
_PRIVDATA = _MAC_BUF + 2 * MAX_MACROS_ENTRIES * _PTR + _PTR
# milter_ContextObject: PyObject_HEAD (refcount, type), then SMFICTX *ctx.
_PYCTX_CTX = 2 * _PTR
_MAX_ENTRIES = 1 << 20  # a 1 MiB packet holds fewer strings than this


_lib: Any = clib.load("smfi_getpriv")
if _lib is not None:
    _lib.smfi_getpriv.restype = ctypes.c_void_p
    _lib.smfi_getpriv.argtypes = [ctypes.c_void_p]
available = _lib is not None and _PTR == 8 and not hasattr(sys, "gettotalrefcount")


def _ptr(addr: int) -> int:
    return ctypes.c_void_p.from_address(addr).value or 0


def _smfictx(pyctx: object) -> int:
    """The SMFICTX pointer behind a pymilter context object, or 0 if unproven."""
    tp = type(pyctx)
    if not available or (tp.__module__, tp.__name__) != ("milter", "Context"):
        return 0
    addr = id(pyctx)
    ctx = _ptr(addr + _PYCTX_CTX)
    if not ctx or _lib.smfi_getpriv(ctx) != addr or _ptr(ctx + _PRIVDATA) != addr:
        return 0
    return ctx


def _pairs(array: int) -> list[tuple[bytes, bytes]]:
    entries: list[int] = []
    while len(entries) < _MAX_ENTRIES:
        p = _ptr(array + len(entries) * _PTR)
        if not p:
            break
        entries.append(p)
    return [(ctypes.string_at(entries[i]), ctypes.string_at(entries[i + 1]))
            for i in range(0, len(entries) - 1, 2)]


def _names(symname: str) -> set[bytes]:
    """`{x}` and `x` name the same one-letter macro (as in smfi_getsymval)."""
    s = symname.encode("utf-8", "surrogateescape")
    names = {s}
    if len(s) == 3 and s[:1] == b"{" and s[2:] == b"}":
        names.add(s[1:2])
    if len(s) == 1:
        names.add(b"{" + s + b"}")
    return names


class Unavailable(Exception):
    """The session's macros cannot be read safely (unproven struct layout)."""


def getsymval(pyctx: object, symname: str) -> str | None:
    """The value of one macro, newest stage first; None if the MTA did not send it.

    Undecodable bytes come back as U+FFFD. Raises Unavailable when the layout of
    this libmilter build could not be proven for this session."""
    ctx = _smfictx(pyctx)
    if not ctx:
        raise Unavailable("cannot prove libmilter's context layout")
    wanted = _names(symname)
    for i in range(MAX_MACROS_ENTRIES - 1, -1, -1):
        array = _ptr(ctx + _MAC_PTR + i * _PTR)
        if not array or not _ptr(ctx + _MAC_BUF + i * _PTR):
            continue
        for name, value in _pairs(array):
            if name in wanted:
                return value.decode("utf-8", "replace")
    return None
