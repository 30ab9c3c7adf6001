"""The generated man pages build, render with man, and miss no key or subcommand."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness import need
from postwarden import cli, manpage

EXAMPLE = Path(__file__).resolve().parents[1] / "packaging" / "postwarden.toml"


def render(page: Path) -> str:
    r = subprocess.run([need("man"), "--warnings", "-l", str(page)], capture_output=True,
                       text=True, env=dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8"),
                       check=True)
    assert r.stderr == "", r.stderr  # groff warnings: the page is malformed
    return r.stdout


def keys(table: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key; a dict below a [table] is an inline-table value (enforce, weights)."""
    out: list[str] = []
    for k, v in table.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix:
            out += keys(v, full + ".")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for entry in v:
                out += keys(entry, full + ".")
        else:
            out.append(full)
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("man")
    eight, five = manpage.write(out)
    return {"8": render(eight), "5": render(five)}


def test_every_subcommand_and_option_is_in_postwarden_8(pages: dict[str, str]) -> None:
    text = pages["8"]
    found = manpage.subcommands(cli.parser())
    names = {name for name, _, _ in found}
    assert {"milter", "selfcheck", "status", "config check", "postfix-setup"} <= names
    for name, sub, _ in found:
        assert f"\n   {name}\n" in text, name  # an .SS heading each
        for action in sub._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert opt in text, f"{name} {opt}"
    for section in ("EXIT STATUS", "SIGNALS", "FILES", "SIGHUP", "/etc/postwarden/postwarden.toml"):
        assert section in text


def test_every_key_of_the_example_config_is_in_postwarden_toml_5(
        pages: dict[str, str]) -> None:
    text = pages["5"]
    example = tomllib.loads(EXAMPLE.read_text())
    listed = keys(example)
    assert len(listed) > 80  # the whole file was parsed, not one table
    for key in listed:
        assert key in text, key
    # The defaults are shown with the key, and the commented-out [[dkim.keys]] example
    # is documented too.
    assert 'mode = "monitor"' in text
    assert "[[dkim.keys]]" in text and "key_file" in text


def test_key_documentation_comes_from_the_comment_above_it() -> None:
    intro, tables = manpage.parse_example(
        "# intro\n\n# about a\na = 1\n[t]\n# table doc\n\n# about b\nb = [1,\n  2]\n")
    assert intro == ["intro"]
    top, t = tables
    assert [(k.full, k.default, k.doc) for k in top.keys] == [("a", "1", ["about a"])]
    assert t.doc == ["table doc"]
    assert [(k.full, k.default, k.doc) for k in t.keys] == [("t.b", "[1, 2]", ["about b"])]
