"""Malformed milter macro packets, and a driver that sends them to a running milter.

Postfix never sends these; anyone who can reach the milter socket can. libmilter's
smfi_getsymval() reads past the macro array when a `D` packet carries an odd number
of strings, so each session here sends a broken macro packet for a stage and then
the command whose callback asks for a macro of that stage ({daemon_name} at
connect, {auth_authen} at MAIL FROM, `i` at end of message).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from harness.milter_client import MilterClient, _z


def payloads(rng: random.Random) -> list[bytes]:
    """Macro packet bodies (stage byte + strings) that do not pair up."""
    noise = bytes(rng.choice(b"\0abc{}_j") for _ in range(rng.randint(1, 40)))
    return [
        b"j\0host",                                   # name, value without its NUL
        b"j\0",                                       # a name and no value
        b"{daemon_name}\0ORIGINATING\0{x}\0",         # three strings
        b"a\0b\0c\0d\0e\0",                           # five strings
        b"\0" * rng.randint(1, 9),                    # empty strings, odd or even
        b"nothing-terminated",                        # no NUL at all
        b"",                                          # nothing after the stage
        noise,
    ]


STAGES = (b"C", b"M", b"E")


@dataclass
class Tally:
    sessions: int = 0
    packets: int = 0
    answered: int = 0  # end-of-message replies received


def one_session(address: str, rng: random.Random, per_session: int, qid: str) -> int:
    """One connection: malformed macros before connect, MAIL FROM and end of message.
    Returns the number of malformed packets sent."""
    sent = 0
    with MilterClient(address, timeout=10) as c:
        c.negotiate()
        bodies = payloads(rng)
        for _ in range(per_session):
            c.raw(b"D", rng.choice(STAGES) + rng.choice(bodies))
            sent += 1
        c.raw(b"D", b"C" + rng.choice(bodies))
        c.connect_cmd(("192.0.2.80", 41000))
        c.raw(b"D", b"M" + rng.choice(bodies))
        c._step(b"M", _z("<alice@example.com>"), 0x04, 0x4000)
        c._step(b"R", _z("<bob@example.net>"), 0x08, 0x8000)
        c._step(b"L", _z("From", " alice@example.com"), 0x20, 0x80)
        c._step(b"N", b"", 0x40, 0x40000)
        c._step(b"B", b"hello\r\n", 0x10, 0x80000)
        c.raw(b"D", b"E" + rng.choice(bodies))
        c.raw(b"D", b"E" + _z("i", qid))
        c.raw(b"D", b"E" + rng.choice(bodies))
        sent += 5
        c.raw(b"E")
        c._reply()
    return sent


def hammer(address: str, packets: int, seed: int = 1,
           on_dead: Callable[[], bool] | None = None) -> tuple[Tally, int]:
    """Send at least `packets` malformed macro packets, 10 per session plus 5 around
    the callbacks. on_dead() is asked after a session fails: True means the daemon
    died (and was restarted by the caller); returns (tally, deaths)."""
    rng = random.Random(seed)
    tally, deaths = Tally(), 0
    while tally.packets < packets:
        qid = f"MF{tally.sessions:08X}"
        try:
            tally.packets += one_session(address, rng, 10, qid)
            tally.answered += 1
        except (TimeoutError, OSError, ConnectionError, struct.error):
            tally.packets += 1
            if on_dead is not None and on_dead():
                deaths += 1
        tally.sessions += 1
    return tally, deaths
