"""`postwarden postfix-setup`: the postconf commands that wire Postfix to postwarden.

The settings come from postfix-examples/ (the same files the end-to-end tests
build their Postfix from), so what is printed is what is tested. Without
--apply nothing is changed: the commands are printed for the admin to read and
run. With --apply they are run, after a copy of main.cf and master.cf is kept
next to them; a setting that already has the wanted value is left alone, so a
second run changes nothing.

master.cf is handled carefully: an existing submission service keeps its
options and only gets `milter_macro_daemon_name=ORIGINATING`; a new one (with
the example's SASL and TLS options) is added only with --submission, because
it needs SASL and a TLS certificate that the admin sets up.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EXAMPLE_DIRS = (
    Path("/usr/share/postwarden/postfix-examples"),
    Path(__file__).resolve().parents[1] / "postfix-examples",
)
SERVICE = "submission/inet"
MARK = ("milter_macro_daemon_name", "ORIGINATING")


class SetupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Change:
    """One postconf invocation (without -c) and what it is for."""

    args: tuple[str, ...]
    why: str

    def command(self, config_dir: str) -> list[str]:
        c = ["-c", config_dir] if config_dir else []
        return ["postconf", *c, *self.args]


def examples_dir() -> Path:
    for d in EXAMPLE_DIRS:
        if (d / "main.cf").is_file() and (d / "master.cf").is_file():
            return d
    raise SetupError("postfix-examples not found in "
                     + " or ".join(str(d) for d in EXAMPLE_DIRS))


def main_cf_settings(text: str) -> list[tuple[str, str]]:
    """(name, value) of each parameter in a main.cf fragment, continuations joined."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if not out:
                raise SetupError(f"continuation line without a parameter: {line!r}")
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise SetupError(f"not a parameter line: {line!r}")
        out.append((name.strip(), value.strip()))
    return out


def master_cf_service(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The example's submission entry (without -o options) and its -o options."""
    entry = ""
    options: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            flag, _, opt = line.strip().partition(" ")
            name, _, value = opt.strip().partition("=")
            if flag != "-o" or not name:
                raise SetupError(f"unexpected master.cf line: {line!r}")
            options.append((name, value))
        elif line.split()[:2] == ["submission", "inet"]:
            entry = " ".join(line.split())
    if not entry:
        raise SetupError("no submission service in the master.cf example")
    return entry, options


def _postconf(config_dir: str, *args: str) -> str:
    cmd = ["postconf", *(["-c", config_dir] if config_dir else []), *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise SetupError("postconf not found: is Postfix installed?") from e
    if r.returncode != 0:
        raise SetupError(f"{shlex.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


def _norm(value: str) -> str:
    return " ".join(value.replace(",", " , ").split())


def plan(config_dir: str, submission: bool) -> tuple[list[Change], list[str]]:
    """The changes still needed, and notes for the admin."""
    ex = examples_dir()
    changes: list[Change] = []
    notes: list[str] = []
    for name, value in main_cf_settings((ex / "main.cf").read_text()):
        current = _postconf(config_dir, "-h", name).strip()
        if _norm(current) != _norm(value):
            changes.append(Change(("-e", f"{name}={value}"), f"main.cf {name}"))
    entry, options = master_cf_service((ex / "master.cf").read_text())
    existing = _postconf(config_dir, "-M", SERVICE).strip()
    if existing:
        params = _postconf(config_dir, "-P", f"{SERVICE}/{MARK[0]}").strip()
        if params != f"{SERVICE}/{MARK[0]} = {MARK[1]}":
            changes.append(Change(("-P", f"{SERVICE}/{MARK[0]}={MARK[1]}"),
                                  "master.cf: mark the submission service for postwarden"))
    elif submission:
        full = " ".join([entry, *(f"-o {n}={v}" for n, v in options)])
        changes.append(Change(("-M", f"{SERVICE}={full}"),
                              "master.cf: a submission service (port 587, SASL + TLS)"))
    else:
        notes.append("no submission service in master.cf: add one with --submission "
                     "(it needs SASL, e.g. Dovecot, and a TLS certificate), or see "
                     f"{ex / 'master.cf'}")
    return changes, notes


def _backup(config_dir: str) -> list[Path]:
    directory = Path(config_dir or _postconf("", "-h", "config_directory").strip())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    saved = []
    for name in ("main.cf", "master.cf"):
        src = directory / name
        dst = directory / f"{name}.postwarden-{stamp}"
        shutil.copy2(src, dst)
        saved.append(dst)
    return saved


def run(args: argparse.Namespace) -> int:
    config_dir = args.postfix_config_dir or ""
    try:
        changes, notes = plan(config_dir, args.submission)
        for note in notes:
            print(f"# note: {note}")
        if not changes:
            print("# Postfix is already set up for postwarden; nothing to change.")
            return 0
        if not args.apply:
            print("# Run these (or `postwarden postfix-setup --apply`), then `postfix reload`:")
            for c in changes:
                print(f"# {c.why}\n{shlex.join(c.command(config_dir))}")
            return 0
        for path in _backup(config_dir):
            print(f"# saved {path}")
        for c in changes:
            print(shlex.join(c.command(config_dir)))
            _postconf(config_dir, *c.args)
        remaining, _ = plan(config_dir, args.submission)
        if remaining:
            raise SetupError("settings did not take: "
                             + ", ".join(shlex.join(c.args) for c in remaining))
        print("# done; run `postfix reload` to apply (`postfix -c DIR reload` for -c DIR).")
        return 0
    except (SetupError, OSError) as e:
        print(f"postwarden: error: postfix-setup: {e}", file=sys.stderr)
        return 1
