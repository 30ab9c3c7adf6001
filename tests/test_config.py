"""The config loader: every key typed, validated, named in errors, documented once."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path

import pytest

from postwarden import config
from postwarden.config import Config, ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "packaging" / "postwarden.toml"


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, prefix + f.name + ".")  # type: ignore[arg-type]
        else:
            out.append(prefix + f.name)
    return out


def test_example_config_loads_and_equals_the_defaults() -> None:
    cfg = config.load(EXAMPLE)
    default = Config()
    default.source = cfg.source
    assert cfg == default


def test_every_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    missing = []
    for key in _keys(Config):
        node: object = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                # A key without a useful default (a list of tables) may be documented
                # by a commented example: `# [[dkim.keys]]` or `# name = ...`.
                name = key.rpartition(".")[2]
                if not re.search(rf"^#\s*(\[\[{re.escape(key)}\]\]|{name}\s*=)", text,
                                 re.M):
                    missing.append(key)
                break
            node = node[part]
    assert missing == []


@pytest.mark.parametrize("toml, key, words", [
    ('mdoe = "monitor"', "mdoe", "did you mean 'mode'"),
    ('[dns]\nport = "53"', "dns.port", "integer"),
    ("[dns]\nport = 70000", "dns.port", "between 1 and 65535"),
    ('[dns]\nnameservers = ["resolver.example"]', "dns.nameservers", "not an IP address"),
    ('[outbound]\ninternal_networks = ["10.0.0.0/33"]', "outbound.internal_networks",
     "not an IP network"),
    ('mode = "enforcing"', "mode", "'enforce'"),
    ('socket = "/run/postwarden.sock"', "socket", "unix:"),
    ('socket_mode = "0666"', "socket_mode", "world-writable"),
    ('[policy.enforce]\n"dkim.missing" = "drop"', "policy.enforce.dkim.missing", "hold"),
    ('[policy.enforce]\n"ratelimit.exceded" = "hold"', "policy.enforce.ratelimit.exceded",
     "did you mean 'ratelimit.exceeded'"),
    ('[policy.enforce]\n"dkmi.*" = "hold"', "policy.enforce.dkmi.*", "did you mean 'dkim.*'"),
    ('[policy.enforce]\n"dnsbl.*" = "hold"', "policy.enforce.dnsbl.*", "only self-check ids"),
    ('[policy.enforce]\n"spf.record" = "hold"', "policy.enforce.spf.record", "self-check id"),
    ('[policy]\nhold_in_monitor = ["form.suspicios"]', "policy.hold_in_monitor[0]",
     "did you mean 'form.suspicious'"),
    ('[policy]\nhold_in_monitor = ["form.*"]', "policy.hold_in_monitor[0]", "exact ids"),
    ('[log]\ntarget = "file"', "log.target", "syslog"),
    ("[host]\nips = 5", "host.ips", "list"),
    ("dns = 5", "dns", "table"),
    ('[dkim]\ncanonicalization = "relaxed"', "dkim.canonicalization", "'relaxed/relaxed'"),
])
def test_bad_values_name_the_key_and_the_fix(toml: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict(tomllib.loads(toml))
    assert key in str(e.value)
    assert words in str(e.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("mode = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
