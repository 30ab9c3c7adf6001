"""Man pages postwarden(8) and postwarden.toml(5), generated, so they cannot drift.

postwarden(8) is built from the argparse parser (every subcommand and option with
its help text) plus the exit codes, signals and files below; postwarden.toml(5)
from packaging/postwarden.toml, the one place every key is documented with its
default. `python -m postwarden.manpage OUTDIR` writes both (the Debian build runs
it); the tests render them with man and look for every key and subcommand.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from postwarden import __version__

DATE = "2026-12-01"
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "packaging" / "postwarden.toml"

EXIT_CODES = [
    ("0", "Success. For selfcheck: everything ok (or informational only)."),
    ("1", "selfcheck: a warning. Other commands: an error they name on stderr "
          "(store unreachable, postconf or postsuper failed)."),
    ("2", "The configuration is invalid (the message names the key and the fix). "
          "selfcheck: a critical result."),
    ("3", "selfcheck: unknown (a check could not be completed, e.g. DNS timed out)."),
    ("75", "milter: libmilter stopped unexpectedly; the service manager should "
           "restart the daemon (EX_TEMPFAIL)."),
    ("130", "Interrupted (SIGINT at a terminal)."),
]

SIGNALS = [
    ("SIGHUP", "Reload the configuration. An invalid file is refused, logged, and "
               "the running configuration kept. socket and [store] changes take "
               "effect only on restart."),
    ("SIGTERM, SIGINT", "Stop gracefully: finish open milter sessions, write pending "
                        "activity to the store, log \"stopped after N messages\"."),
]

FILES = [
    ("/etc/postwarden/postwarden.toml", "The configuration, see postwarden.toml(5)."),
    ("/var/lib/postwarden/postwarden.db", "The SQLite store: rate-limit buckets, hold "
                                          "reasons, self-check history."),
    ("/var/spool/postfix/postwarden/postwarden.sock", "The milter socket, inside Postfix's "
                                                     "queue directory (unix:postwarden/"
                                                     "postwarden.sock in main.cf)."),
    ("/usr/share/doc/postwarden/examples/postfix-examples/", "The main.cf and master.cf "
                                                            "lines postfix-setup applies, "
                                                            "explained."),
    ("/var/lib/postwarden/textfile/postwarden.prom", "Self-check metrics written by "
                                                     "postwarden-selfcheck.service."),
]


def esc(text: str) -> str:
    """Text as roff body text: backslashes and leading dots/quotes defused."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def _header(name: str, section: int, title: str) -> list[str]:
    return [f'.TH {name.upper()} {section} "{DATE}" "postwarden {__version__}" "{title}"']


def _option_label(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{esc(action.metavar or action.dest)}\\fR"  # type: ignore[arg-type]
    label = ", ".join(f"\\fB{esc(o)}\\fR" for o in action.option_strings)
    if action.nargs != 0:
        metavar = action.metavar or action.dest.upper()
        label += f" \\fI{esc(str(metavar))}\\fR"
    return label


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        out += [".TP", _option_label(action), esc(action.help or "")]
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.nargs != 0:
            out.append(f"Default: {esc(str(action.default))}.")
    return out


def subcommands(parser: argparse.ArgumentParser,
                prefix: str = "") -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(full name, parser, help) of every subcommand, nested ones too."""
    found: list[tuple[str, argparse.ArgumentParser, str]] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        for name, sub in action.choices.items():
            full = f"{prefix}{name}"
            found.append((full, sub, helps.get(name, "")))
            found += subcommands(sub, full + " ")
    return found


def postwarden_8(parser: argparse.ArgumentParser) -> str:
    out = _header("postwarden", 8, "System Manager's Manual")
    out += [".SH NAME", "postwarden \\- Postfix milter and self-check that keep a "
            "self-hosted mail server off blocklists",
            ".SH SYNOPSIS", "\\fBpostwarden\\fR [\\fB\\-\\-config\\fR \\fIFILE\\fR] "
            "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
            ".SH DESCRIPTION",
            esc("postwarden inspects every outbound message Postfix hands it (SASL "
                "submission, internal clients, local sendmail and PHP mail()) and logs, "
                "with the queue ID first, what a receiver's DKIM, SPF and DMARC checks "
                "will conclude. It recognises mail from web forms and scripts and "
                "rate-limits it by putting it on hold (never losing it), and checks the "
                "sending IPs against UCEPROTECT and other blocklists."),
            ".PP",
            esc("It logs to syslog facility mail with ident postwarden, next to "
                "Postfix's lines. It never changes Postfix's configuration unless asked "
                "to with postfix-setup --apply."),
            ".SH GLOBAL OPTIONS"]
    out += _options(parser)
    out.append(".SH COMMANDS")
    for full, sub, help_text in subcommands(parser):
        has_own = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
        out += [".SS " + esc(full), esc(help_text[:1].upper() + help_text[1:]) + "."]
        if sub.description:
            out += [".PP", esc(sub.description)]
        if not has_own:
            opts = _options(sub)
            if opts:
                out += [".PP", "Options:", ".RS", *opts, ".RE"]
    out.append(".SH EXIT STATUS")
    for code, text in EXIT_CODES:
        out += [".TP", f"\\fB{code}\\fR", esc(text)]
    out.append(".SH SIGNALS")
    for name, text in SIGNALS:
        out += [".TP", f"\\fB{name}\\fR", esc(text)]
    out.append(".SH FILES")
    for path, text in FILES:
        out += [".TP", f"\\fI{esc(path)}\\fR", esc(text)]
    out += [".SH SEE ALSO", "\\fBpostwarden.toml\\fR(5), \\fBpostconf\\fR(1), "
            "\\fBpostsuper\\fR(1), \\fBpostqueue\\fR(1), \\fBsystemd.service\\fR(5)",
            ".PP", esc("/usr/share/doc/postwarden/README.md")]
    return "\n".join(out) + "\n"


@dataclass
class Key:
    """One documented key of the example config."""

    table: str
    name: str
    default: str
    doc: list[str] = field(default_factory=list)

    @property
    def full(self) -> str:
        return f"{self.table}.{self.name}" if self.table else self.name


@dataclass
class Table:
    name: str
    doc: list[str] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    notes: list[list[str]] = field(default_factory=list)  # comment blocks after the keys
    repeat: bool = False  # a further entry of an array of tables


_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_TABLE = re.compile(r"^\[\[?([A-Za-z0-9_.]+)\]\]?\s*$")
_COMMENTED_KEY = re.compile(r"^#\s?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def _balanced(value: str) -> bool:
    depth = 0
    in_str = False
    for ch in value:
        if ch == '"':
            in_str = not in_str
        elif not in_str and ch in "[{":
            depth += 1
        elif not in_str and ch in "]}":
            depth -= 1
    return depth <= 0


def parse_example(text: str) -> tuple[list[str], list[Table]]:
    """The file's introduction and its tables, each key with its comment block.

    A comment block belongs to the key (or table header) right after it; comment
    lines at the start of a table, before a blank line, document the table. A
    commented-out table (`# [[dkim.keys]]` and its keys) stays in the prose.
    """
    lines = text.splitlines()
    intro: list[str] = []
    tables = [Table("")]
    pending: list[str] = []
    seen_tables: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if line.startswith("#"):
            pending.append(line[1:].removeprefix(" "))
            continue
        if not line.strip():
            if pending and not tables[-1].keys and tables[-1].name == "" and not intro:
                intro = pending
            elif pending and not tables[-1].keys and not tables[-1].doc:
                tables[-1].doc = pending
            elif pending:
                tables[-1].notes.append(pending)
            pending = []
            continue
        m = _TABLE.match(line)
        if m:
            name = m.group(1)
            # A further entry of an array of tables is listed as a default entry.
            repeat = name in seen_tables and line.startswith("[[")
            tables.append(Table(name, pending, repeat=repeat))
            seen_tables.add(name)
            pending = []
            continue
        m = _KEY.match(line)
        if m:
            value = m.group(2)
            while not _balanced(value) and i < len(lines):
                value += " " + lines[i].strip()
                i += 1
            tables[-1].keys.append(Key(tables[-1].name, m.group(1), value.strip(), pending))
            pending = []
    if pending:
        tables[-1].notes.append(pending)
    return intro, tables


def postwarden_toml_5(text: str) -> str:
    intro, tables = parse_example(text)
    out = _header("postwarden.toml", 5, "File Formats Manual")
    out += [".SH NAME", "postwarden.toml \\- configuration of the postwarden milter",
            ".SH SYNOPSIS", "\\fI/etc/postwarden/postwarden.toml\\fR",
            ".SH DESCRIPTION", esc(" ".join(line for line in intro if line)),
            ".PP", esc("A TOML file. This page is generated from the example shipped "
                       "as /etc/postwarden/postwarden.toml: the defaults below are the "
                       "values a key has when it is left out. `postwarden config check` "
                       "validates the file.")]
    for table in tables:
        if table.repeat:
            entry = ", ".join(f"{k.name} = {k.default}" for k in table.keys)
            out += [".PP", f"Another default entry of [[{esc(table.name)}]]: {esc(entry)}"]
            continue
        first = next((t for t in tables if t.name == table.name), table)
        heading = f"[{table.name}]" if table.name else "TOP-LEVEL KEYS"
        if any(t.repeat and t.name == table.name for t in tables) or first is not table:
            heading = f"[[{table.name}]]"
        out.append(".SH " + esc(heading))
        if table.doc:
            out += [".nf", esc("\n".join(table.doc)), ".fi"]
        for key in table.keys:
            out += [".TP", f"\\fB{esc(key.full)}\\fR = {esc(key.default)}"]
            if key.doc:
                out += [".nf", esc("\n".join(key.doc)), ".fi"]
        for note in table.notes:
            out += [".PP", ".nf", esc("\n".join(note)), ".fi"]
    out += [".SH SEE ALSO", "\\fBpostwarden\\fR(8)"]
    return "\n".join(out) + "\n"


def write(outdir: Path, example: Path = EXAMPLE_CONFIG) -> list[Path]:
    from postwarden.cli import parser

    outdir.mkdir(parents=True, exist_ok=True)
    eight = outdir / "postwarden.8"
    five = outdir / "postwarden.toml.5"
    eight.write_text(postwarden_8(parser()), encoding="utf-8")
    five.write_text(postwarden_toml_5(example.read_text(encoding="utf-8")), encoding="utf-8")
    return [eight, five]


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
