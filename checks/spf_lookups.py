"""How many DNS-querying terms a receiver's SPF evaluation of a domain may cost.

RFC 7208 4.6.4: `include`, `a`, `mx`, `ptr`, `exists` and `redirect=` each count,
at most 10 per evaluation, and every evaluation of a term counts: a domain
included from two branches is evaluated, and counted, twice. The count here is
the worst case, an IP that matches nothing (forged mail, or our own IP when it
matches late): every term up to the first `all` (nothing after it is
evaluated), and `redirect=` only in a record without `all` (RFC 7208 6.1 says
it is ignored then).

`gather` does the I/O (each record of the tree fetched once); `count` judges
the gathered records and does none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postwarden.dns import Budget, Resolver

MAX_LOOKUPS = 10
# pyspf gives up (permerror) past four times the limit; so does the count.
HARD_STOP = 4 * MAX_LOOKUPS
MAX_NAMES = 50  # distinct records fetched for one tree
_LOOKUP_TERMS = frozenset(("include", "a", "mx", "ptr", "exists"))
_SPF_START = re.compile(r"^v=spf1(\s|$)", re.I)


def spf_records(records: tuple[str, ...]) -> list[str]:
    return [r for r in records if _SPF_START.match(r.strip())]


@dataclass(frozen=True)
class Term:
    qualifier: str  # "+", "-", "~", "?" or "" (none written)
    name: str       # mechanism name, or "name=" for a modifier
    arg: str


def terms(record: str) -> list[Term]:
    """The terms after `v=spf1`, names lowercased; arguments as written."""
    out = []
    for text in record.split()[1:]:
        qualifier = text[0] if text[0] in "+-~?" else ""
        rest = text[1:] if qualifier else text
        if "=" in rest.split(":", 1)[0]:
            name, _, arg = rest.partition("=")
            out.append(Term(qualifier, name.lower() + "=", arg))
            continue
        name, _, arg = rest.partition(":")
        out.append(Term(qualifier, name.split("/", 1)[0].lower(), arg))
    return out


def evaluated(record: str) -> list[Term]:
    """The terms an evaluation that matches nothing goes through, in order."""
    ts = terms(record)
    names = [t.name for t in ts]
    cut = names.index("all") if "all" in names else len(ts)
    mechanisms = [t for t in ts[:cut] if not t.name.endswith("=")]
    redirect = [] if "all" in names else [t for t in ts if t.name == "redirect="][:1]
    return mechanisms + redirect


def target(t: Term) -> str | None:
    """The domain an `include`/`redirect=` leads to, or None when not followable."""
    if t.name not in ("include", "redirect=") or not t.arg or "%" in t.arg:
        return None
    return t.arg.lower().rstrip(".")


@dataclass(frozen=True)
class Fetched:
    records: tuple[str, ...] = ()  # the v=spf1 records published
    error: str = ""                # set when the lookup failed (temperror)


def gather(domain: str, resolver: Resolver,
           budget: Budget | None = None) -> dict[str, Fetched]:
    """The SPF records of `domain` and of every domain its evaluation leads to."""
    out: dict[str, Fetched] = {}
    todo = [domain.lower().rstrip(".")]
    while todo and len(out) < MAX_NAMES:
        name = todo.pop(0)
        if name in out:
            continue
        ans = resolver.txt(name, budget)
        if ans.failed:
            out[name] = Fetched(error=ans.error)
            continue
        recs = tuple(spf_records(ans.records)) if ans.ok else ()
        out[name] = Fetched(recs)
        if len(recs) == 1:
            todo += [d for t in evaluated(recs[0]) if (d := target(t)) and d not in out]
    return out


@dataclass(frozen=True)
class Count:
    lookups: int                # DNS-querying terms an IP that matches nothing costs
    problems: tuple[str, ...]   # what makes such an evaluation permerror besides the count
    unknown: tuple[str, ...]    # parts of the tree that could not be fetched
    notes: tuple[str, ...]      # terms not followed (their target depends on the message)

    def texts(self) -> list[str]:
        return [*self.problems, *self.unknown, *self.notes]


def count(domain: str, tree: dict[str, Fetched]) -> Count:
    """Count the evaluated DNS-querying terms of the gathered tree under `domain`."""
    problems: list[str] = []
    unknown: list[str] = []
    notes: list[str] = []
    total = 0

    def walk(name: str, path: tuple[str, ...]) -> None:
        nonlocal total
        fetched = tree.get(name)
        if fetched is None:
            unknown.append(f"{name} not fetched (more than {MAX_NAMES} records in the tree)")
            return
        if fetched.error:
            unknown.append(f"could not fetch SPF of {name} ({fetched.error})")
            return
        if len(fetched.records) != 1:
            if path:  # the top record's count is check_spf's own finding
                what = "no SPF record" if not fetched.records else \
                    f"{len(fetched.records)} SPF records"
                problems.append(f"{name} (reached from {path[-1]}) has {what}")
            return
        for t in evaluated(fetched.records[0]):
            if t.name not in _LOOKUP_TERMS and t.name != "redirect=":
                continue
            total += 1
            if total > HARD_STOP:
                return
            sub = target(t)
            if sub is None:
                if t.name in ("include", "redirect=") and t.arg:
                    notes.append(f"{t.name.rstrip('=')} {t.arg} in {name} not followed "
                                 "(macro: depends on the message)")
                continue
            if sub == name or sub in path:
                problems.append(f"include loop at {sub} (from {name})")
                continue
            walk(sub, (*path, name))

    walk(domain.lower().rstrip("."), ())
    if total > HARD_STOP:
        problems.append(f"more than {HARD_STOP} DNS-querying terms: receivers stop there")
    return Count(min(total, HARD_STOP + 1), tuple(problems), tuple(unknown), tuple(notes))
