"""The Debian package carries pinned libraries (packaging/requirements.txt): every
runtime dependency of pyproject.toml must be pinned there, or the .deb's virtualenv
gets whatever version pip finds at build time (or fails to build offline)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_every_runtime_dependency_is_pinned_for_the_package() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {}
    for line in (ROOT / "packaging" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"not pinned: {line}"
            pinned[_name(line)] = line
    missing = sorted(_name(d) for d in deps if _name(d) not in pinned)
    assert missing == [], f"add to packaging/requirements.txt, pinned: {missing}"
