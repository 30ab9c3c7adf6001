"""The registry of finding ids (postwarden/ids.py) matches what the code can emit.

Every `Finding(...)`, `Finding.result(...)` and `CheckResult(...)` (the one record
type and its self-check constructor) in the package is read from the source (AST).
A literal id must be registered. An id built at run time (an f-string, an
attribute) must be listed in DYNAMIC below with the function that enumerates what
it can produce from its own source (the blocklist table, the checklist's `_item`
calls, the form signals...), and each of those must be registered. A new
construction that is neither fails here until it is registered; an id in the
registry that nothing can emit any more fails too (config would accept it and the
docs would list it).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import spf

from postwarden import blocklists, config, ids, replies
from postwarden.milter import spf_check

ROOT = Path(__file__).resolve().parent.parent
RESULT_TYPES = ("Finding", "Finding.result", "CheckResult")


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for folder in ("postwarden", "milter", "checks"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            rel = str(p.relative_to(ROOT))
            yield rel, ast.parse(p.read_text(), rel)


def _calls(tree: ast.AST, name: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                f, ast.Attribute) else ""
            dotted = ast.unparse(f)
            if called == name or dotted == name or dotted.endswith("." + name):
                yield node


def _id_arg(call: ast.Call) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "id":
            return kw.value
    return call.args[0] if call.args else None


def _str_consts(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "literal" (e.g. FINDING = "uceprotect.listed_form")."""
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            out[node.targets[0].id] = node.value.value
    return out


@functools.cache
def _tree(rel: str) -> ast.Module:
    return ast.parse((ROOT / rel).read_text(), rel)


def _lit_args(rel: str, func: str, pos: int) -> set[str]:
    out = set()
    for call in _calls(_tree(rel), func):
        if len(call.args) > pos and isinstance(call.args[pos], ast.Constant):
            out.add(str(call.args[pos].value))
    return out


# --- the dynamic ids, each enumerated from its own source --------------------------

def _spf_results() -> set[str]:
    # pyspf's results, minus pass (no finding), ambiguous (only in its harsh mode,
    # strict > 1; we use strict=True) and local/trusted (only with a local policy or
    # trusted-forwarder list, which we never pass).
    results = set(spf.RESULTS.values()) - {"pass", "ambiguous", "local", "trusted"}
    assert results <= set(spf_check._SEVERITY), "a pyspf result without a severity"
    return {f"spf.{r}" for r in results}


def _form_signals() -> set[str]:
    rel = "milter/forms.py"
    hits = {str(t.slice.value) for node in ast.walk(_tree(rel))
            if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
            and t.value.id == "hits" and isinstance(t.slice, ast.Constant)}
    assert hits, "forms.signals() no longer fills `hits`: update this test"
    lits = _lit_args("milter/ratelimit.py", "signal", 1)
    return {f"form.{s}" for s in hits | lits}


def _blocklist_ids() -> set[str]:
    return {bl.check_id for bl in blocklists.DEFAULT_LISTS}


def _checklist_items() -> set[str]:
    return {f"checklist.{i}" for i in _lit_args("checks/checklist.py", "_item", 0)}


def _task_ids() -> set[str]:
    out = set()
    for call in _calls(_tree("checks/runner.py"), "Task"):
        first = call.args[0]
        assert isinstance(first, ast.Tuple)
        head = first.elts[0]
        if ast.unparse(head) == "bl.check_id":
            out |= _blocklist_ids()
            continue
        assert isinstance(head, ast.Constant), f"runner.py:{call.lineno}: update this test"
        fid = str(head.value)
        out.add(fid + "config" if fid.endswith(".") else fid)  # Task.failed_id
    return out


def _feedback_ids() -> set[str]:
    return {fid for fid in replies.CLASSES.values() if fid is not None}


DYNAMIC: dict[tuple[str, str], Callable[[], set[str]]] = {
    ("milter/feedback_brake.py", "fid"): _feedback_ids,
    ("postwarden/feedback/attribute.py", "fid"): _feedback_ids,
    ("milter/spf_check.py", "f'spf.{o.result}'"): _spf_results,
    ("milter/forms.py", "f'form.{name}'"): _form_signals,
    ("checks/dnsbl.py", "bl.check_id"): _blocklist_ids,
    ("checks/checklist.py", "f'checklist.{item_id}'"): _checklist_items,
    ("checks/runner.py", "task.failed_id"): _task_ids,
    ("checks/probe_send.py", "rid"): lambda: {"probe.sendmail", "probe.smtp"},
}
# Constructions that read ids back rather than emit them.
NOT_EMITTED: set[tuple[str, str]] = set()


def emittable(modules: Iterable[tuple[str, ast.Module]] | None = None
              ) -> tuple[set[str], list[str]]:
    """(every id the code can emit, constructions this test cannot account for)."""
    found: set[str] = set()
    unknown: list[str] = []
    for rel, tree in _modules() if modules is None else modules:
        consts = _str_consts(tree)
        for name in RESULT_TYPES:
            for call in _calls(tree, name):
                arg = _id_arg(call)
                if arg is None:
                    continue
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
                    continue
                if isinstance(arg, ast.Name) and arg.id in consts:
                    found.add(consts[arg.id])
                    continue
                key = (rel, ast.unparse(arg))
                if key in DYNAMIC:
                    found |= DYNAMIC[key]()
                elif key not in NOT_EMITTED:
                    unknown.append(f"{rel}:{call.lineno}: {name}({key[1]}, ...)")
    return found, unknown


def test_every_emitted_id_is_registered() -> None:
    found, unknown = emittable()
    assert unknown == [], ("ids built at run time that this test cannot enumerate: add "
                           "them to DYNAMIC and to postwarden/ids.py")
    assert sorted(found - set(ids.REGISTRY)) == [], "emitted but not in postwarden/ids.py"


def test_no_registered_id_is_dead() -> None:
    found, _ = emittable()
    assert sorted(set(ids.REGISTRY) - found) == [], \
        "in postwarden/ids.py but no code emits it: remove it"


def test_the_scan_catches_a_new_unregistered_id() -> None:
    """The scanner itself: a new literal id, a new f-string id, a keyword id."""
    src = ('ID = "form.named"\n'
           'def check(m, c):\n'
           '    return [Finding("dkim.brand_new", S, "t"), Finding(f"spf.{x.y}", S, "t"),\n'
           '            CheckResult(id="mx.new", target="", status="ok", summary=""),\n'
           '            Finding(ID, S, "t"),\n'
           '            Finding.result("helo.new", "", "ok", "")]\n')
    found, unknown = emittable([("milter/new_check.py", ast.parse(src))])
    assert found == {"dkim.brand_new", "mx.new", "form.named", "helo.new"}
    assert unknown == ["milter/new_check.py:3: Finding(f'spf.{x.y}', ...)"]
    assert found - set(ids.REGISTRY) == found


def test_sources_and_registry_agree_on_the_dynamic_families() -> None:
    assert set(config.FORM_SIGNALS) == set(ids.FORM_SIGNALS)
    assert set(spf_check._SEVERITY) == set(ids.SPF_RESULTS)
    for r, (sev, _doc) in ids.SPF_RESULTS.items():
        assert spf_check._SEVERITY[r] == sev, r
    for bl in blocklists.DEFAULT_LISTS:
        assert ids.REGISTRY[bl.check_id].half == ids.SELFCHECK


def test_reply_classes_and_registry_agree() -> None:
    assert _feedback_ids() == set(ids.FEEDBACK)
    assert all(ids.REGISTRY[f].half == ids.MILTER for f in ids.FEEDBACK)


def test_families_and_halves() -> None:
    reg = ids.REGISTRY
    assert reg["dkim.missing"].family == "dkim" and reg["helo"].family == "helo"
    assert "uceprotect.listed_form" in ids.MILTER_IDS
    assert "uceprotect.l1" not in ids.MILTER_IDS
    assert "dnsbl" in ids.FAMILIES and "dnsbl" not in ids.MILTER_FAMILIES
    assert all(f.doc and "\n" not in f.doc and "|" not in f.doc for f in reg.values())
    assert ids.blocklist_id("Bl.Example.") == "dnsbl.bl.example"


def test_policy_keys_with_did_you_mean() -> None:
    assert ids.policy_key_problem("ratelimit.exceeded") is None
    assert ids.policy_key_problem("dkim.*") is None
    assert "did you mean 'ratelimit.exceeded'" in str(ids.policy_key_problem("ratelimit.exceded"))
    assert "did you mean 'dkim.*'" in str(ids.policy_key_problem("dkmi.*"))
    assert "self-check id" in str(ids.policy_key_problem("spf.record"))
    assert "only self-check ids" in str(ids.policy_key_problem("dnsbl.*"))


def test_docs_findings_md_is_generated_from_the_registry() -> None:
    committed = (ROOT / "docs" / "findings.md").read_text()
    assert committed == ids.markdown(), \
        "docs/findings.md is stale: postwarden findings --markdown > docs/findings.md"
    for fid in ids.REGISTRY:
        assert f"| `{fid}` |" in committed
