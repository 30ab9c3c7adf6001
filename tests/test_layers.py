"""The two halves meet in one place: no import cycle, no shared module-level state.

The milter (milter/, postwarden.milter) and the self-check (checks/,
postwarden.checks) share the core (postwarden/). The daemon, in the milter half,
starts the periodic self-check, so milter -> checks imports are allowed and
checks -> milter imports are not: that rules out every cycle between the halves.
What the self-check tells the milter travels in a HostState the daemon creates and
passes to both (postwarden/hoststate.py), never through a module global.

The rule for shared state, checked below: a module-level name whose value is
mutable (anything but modules, functions, classes, type aliases, numbers, strings,
bytes, None, enum members, compiled patterns, frozen dataclasses and tuples or
frozensets of those; a dict used as a constant table counts as mutable, since
nothing stops a write) may be named only inside its own half, or, for a core
module's, by one half; a core global both halves name is listed in SHARED_CORE
with the reason. "Named" is an import of the name or `module.name`, anywhere in a
file (function-level imports included).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"postwarden": "postwarden", "milter": "postwarden.milter",
           "checks": "postwarden.checks"}
MILTER, CHECKS, CORE = "postwarden.milter", "postwarden.checks", "postwarden"
# The entry point dispatches to both halves; it is the application, not core.
ENTRY_POINTS = {"postwarden.cli", "postwarden.__main__"}
# Core module globals both halves may use, and why.
SHARED_CORE = {
    ("postwarden.log", "log"): "the process logger, set up once at start",
    ("postwarden.metrics", "metrics"): "the process's metrics registry: both halves only "
                                       "add to its counters, the exporter reads them",
}


def _sources() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for p in sorted((ROOT / folder).rglob("*.py")):
            parts = list(p.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = p
    return out


SOURCES = _sources()


def half(module: str) -> str:
    for h in (MILTER, CHECKS):
        if module == h or module.startswith(h + "."):
            return h
    return CORE


def _imports(module: str, tree: ast.Module) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import in the
    file, at any depth (function-level and TYPE_CHECKING imports count)."""
    package = module if SOURCES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in SOURCES:
                    yield sub, None, node.lineno
                else:
                    yield base, a.name, node.lineno


def graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(), str(path))
        out[module] = {m for m, _, _ in _imports(module, tree) if m in SOURCES}
    return out


def _cycles(g: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_checks_never_imports_milter_and_core_imports_neither() -> None:
    bad = []
    for module, deps in graph().items():
        for dep in deps:
            h, d = half(module), half(dep)
            if h == CHECKS and d == MILTER:
                bad.append(f"{module} -> {dep}")
            if h == CORE and d != CORE and module not in ENTRY_POINTS:
                bad.append(f"{module} -> {dep}")
    assert bad == []


def test_no_import_cycle_spans_the_two_halves() -> None:
    spanning = [sorted(c) for c in _cycles(graph())
                if {half(m) for m in c} >= {MILTER, CHECKS}]
    assert spanning == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [{"a", "b", "c"}]


def test_every_module_imports_on_its_own() -> None:
    """Each module in a fresh set of postwarden modules: an import that only works
    because another module was imported first (a hidden cycle) fails here."""
    script = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        f"for name in {sorted(SOURCES)!r}:\n"
        "    for m in [m for m in sys.modules if m == 'postwarden' or "
        "m.startswith('postwarden.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        bad.append(name + ': ' + traceback.format_exc().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=ROOT / "tests", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


_IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), enum.Enum, re.Pattern,
              types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
              property, staticmethod, classmethod)


def immutable(value: object) -> bool:
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, tuple | frozenset):
        return all(immutable(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return bool(type(value).__dataclass_params__.frozen)  # type: ignore[attr-defined]
    # type aliases (`Status = Literal[...]`, `Current = Callable[...]`), TypeVars
    return isinstance(value, types.GenericAlias) or type(value).__module__ in (
        "typing", "_collections_abc")


def mutable_globals() -> dict[tuple[str, str], str]:
    """(module, name) -> type name, for every module-level name a module assigns
    itself whose value is mutable."""
    out = {}
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(), str(path))
        assigned = set()
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        assigned.add(n.id)
        mod = importlib.import_module(module)
        for name in sorted(assigned):
            value = getattr(mod, name, None)
            if not immutable(value):
                out[(module, name)] = type(value).__name__
    return out


def test_mutable_globals_are_not_named_by_the_other_half() -> None:
    state = mutable_globals()
    users: dict[tuple[str, str], list[tuple[str, int]]] = {}
    bad = []
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> module, for `mod.name` uses
        named: list[tuple[str, str, int]] = []
        for dep, name, line in _imports(module, tree):
            if name is not None:
                named.append((dep, name, line))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    if f"{node.module}.{a.name}" in SOURCES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname and a.name in SOURCES:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases):
                named.append((aliases[node.value.id], node.attr, node.lineno))
        for dep, name, line in named:
            if (dep, name) in state and module not in ENTRY_POINTS:
                users.setdefault((dep, name), []).append((module, line))
    for (dep, name), where in sorted(users.items()):
        halves = {half(m) for m, _ in where}
        owner = half(dep)
        if owner == CORE:
            crossed = halves >= {MILTER, CHECKS} and (dep, name) not in SHARED_CORE
        else:
            crossed = bool(halves - {owner, CORE})
        if crossed:
            bad.append(f"{dep}.{name} ({state[(dep, name)]}) used by "
                       + ", ".join(f"{m}:{line}" for m, line in where))
    assert bad == []


def test_the_state_rule_sees_mutable_and_frozen_values() -> None:
    @dataclasses.dataclass(frozen=True)
    class Frozen:
        x: int = 0

    @dataclasses.dataclass
    class Loose:
        x: int = 0

    assert immutable(("a", 1, Frozen())) and immutable(frozenset({"a"}))
    assert not immutable([]) and not immutable({}) and not immutable(Loose())
    assert not immutable(("a", []))
    state = mutable_globals()
    # the milter's own state stays in the milter half; it is found, and allowed there
    assert ("postwarden.milter.app", "current") in state
    assert ("postwarden.log", "log") in state
    # the self-check keeps no reaction state of its own at module level any more
    assert not [k for k, t in state.items() if k[0] == "postwarden.checks.periodic"
                and t in ("Reaction", "HostState")]
