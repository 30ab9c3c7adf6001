"""The libmilter that pymilter already loaded, for the calls pymilter does not expose.

ctypes.CDLL of a library already in the process returns that same copy, so a setting
made through it (daemon: smfi_setmaxdatasize) and a read of its structures (macros.py:
smfi_getpriv) reach the libmilter serving the sessions. The sonames Debian ships come
first; find_library covers other builds.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_SONAMES = ("libmilter.so.1.0.1", "libmilter.so.1.0.2", "libmilter.so.1.0")


def load(symbol: str) -> ctypes.CDLL | None:
    """The first libmilter found that has `symbol`, or None."""
    for name in (*_SONAMES, ctypes.util.find_library("milter")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            getattr(lib, symbol)
        except (OSError, AttributeError):
            continue
        return lib
    return None
