"""The one config loader: TOML file -> typed, validated Config.

Every key is declared once here, as a dataclass field with its default; the
commented example in packaging/postwarden.toml documents each one. Errors name the
key and say how to fix it; callers exit 2 on ConfigError.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import stat
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postwarden import ids, replies

DEFAULT_PATH = Path("/etc/postwarden/postwarden.toml")
ACTIONS = ("accept", "hold", "tempfail", "reject")


class ConfigError(Exception):
    """A config problem: the message names the key and the fix."""


def _check(fn: Callable[[Any], str | None]) -> dict[str, Any]:
    """Field metadata: fn returns an error text, or None when the value is fine."""
    return {"check": fn}


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(repr(c) for c in choices)}"
        return None

    return check


def _networks(values: Any) -> str | None:
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            return f"{v!r} is not an IP network (write e.g. '192.0.2.0/24' or '::1/128')"
    return None


def _ips(values: Any) -> str | None:
    for v in values:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            return f"{v!r} is not an IP address (write e.g. '192.0.2.25')"
    return None


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


MAX_SECONDS = 30 * 86400  # past this a timer's wait overflows or never ends in practice


def _seconds(value: Any) -> str | None:
    if value <= 0:
        return "must be greater than 0"
    if value > MAX_SECONDS:
        return f"must be at most {MAX_SECONDS} seconds (30 days)"
    return None


def _seconds_or_zero(value: Any) -> str | None:
    return None if value == 0 else _seconds(value)


def _finite_positive(value: Any) -> str | None:
    """Timeouts: inf or nan would reach socket.settimeout() and raise there."""
    if value != value or value in (float("inf"), float("-inf")):
        return "must be a finite number of seconds (e.g. 0.5)"
    return _seconds(value)


def _port(value: Any) -> str | None:
    return None if 0 < value < 65536 else "must be a port number between 1 and 65535"


def _socket(value: Any) -> str | None:
    if value.startswith("unix:") and len(value) > 5:
        return None
    if value.startswith(("inet:", "inet6:")):
        spec = value.split(":", 1)[1]
        port = spec.partition("@")[0]
        if port.isdigit() and 0 < int(port) < 65536:
            return None
    return "must be 'unix:/path/to/socket' or 'inet:PORT@HOST' (e.g. 'inet:8894@127.0.0.1')"


def _mode_octal(value: Any) -> str | None:
    try:
        mode = int(value, 8)
    except ValueError:
        return "must be an octal permission string such as '0660'"
    if mode & 0o002:
        return "must not make the socket world-writable (use '0660' and group postfix)"
    return None


@dataclass
class OutboundConfig:
    """Which mail is ours (outbound) and so gets inspected."""

    internal_networks: list[str] = field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"], metadata=_check(_networks)
    )
    local_is_outbound: bool = True
    submission_daemon_names: list[str] = field(default_factory=lambda: ["ORIGINATING"])
    log_inbound: bool = False


@dataclass
class HostConfig:
    """The host as receivers see it; empty values are detected from postconf."""

    ips: list[str] = field(default_factory=list, metadata=_check(_ips))
    hostname: str = ""
    domains: list[str] = field(default_factory=list)


@dataclass
class DnsConfig:
    nameservers: list[str] = field(default_factory=list, metadata=_check(_ips))
    port: int = field(default=53, metadata=_check(_port))
    timeout: float = field(default=2.0, metadata=_check(_seconds))
    message_budget: float = field(default=2.0, metadata=_check(_seconds))
    cache_size: int = field(default=10000, metadata=_check(_positive))


def _redis_url(value: Any) -> str | None:
    from postwarden.store.redis_url import parse_url

    try:
        parse_url(str(value))
    except ValueError as e:
        return (f"is not a usable Redis URL ({e}); e.g. redis://127.0.0.1:6379/0, "
                "redis+cluster://h1:6379,h2:6379 or redis+sentinel://h1:26379/SERVICE/0")
    return None


def _share(value: Any) -> str | None:
    if value != value or not 0 <= value <= 1:
        return "must be a fraction from 0 (off: fail open unlimited) to 1 (the whole limit)"
    return None


def _no_braces(value: Any) -> str | None:
    # The key builder puts the Redis Cluster hash tag right after the prefix: a brace
    # in the prefix would become the tag and put every key in one slot.
    return "must not contain { or }" if "{" in value or "}" in value else None


@dataclass
class StoreConfig:
    backend: str = field(default="sqlite", metadata=_check(_one_of("sqlite", "redis")))
    path: str = "/var/lib/postwarden/postwarden.db"
    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=_check(_redis_url))
    redis_prefix: str = field(default="postwarden:", metadata=_check(_no_braces))
    redis_timeout: float = field(default=0.5, metadata=_check(_finite_positive))
    seen_ttl: float = field(default=900.0, metadata=_check(_finite_positive))


@dataclass
class LogConfig:
    target: str = field(default="syslog", metadata=_check(_one_of("syslog", "stderr")))
    facility: str = field(
        default="mail",
        metadata=_check(
            _one_of("mail", "daemon", "user", *(f"local{i}" for i in range(8)))
        ),
    )
    repeat_interval: int = field(default=600, metadata=_check(_seconds))


@dataclass
class PolicyConfig:
    """Finding id (or `family.*`) -> action in enforce mode."""

    enforce: dict[str, str] = field(
        default_factory=lambda: {
            "dmarc.fail": "hold",
            "ratelimit.exceeded": "hold",
            "form.suspicious": "hold",
        }
    )
    # uceprotect.listed_form is not here: [selfcheck] hold_forms_when_listed adds it
    # to both (postwarden.policy.effective), so the one switch turns the hold on.
    hold_in_monitor: list[str] = field(
        default_factory=lambda: ["ratelimit.exceeded", "form.suspicious"]
    )


_FIX_ORIGINS = ("local", "submission", "internal")


def _origins(values: Any) -> str | None:
    for v in values:
        if v not in _FIX_ORIGINS:
            return f"{v!r} is not an origin; use some of {', '.join(_FIX_ORIGINS)}"
    return None


def _address_or_empty(value: Any) -> str | None:
    local, at, domain = value.rpartition("@")
    if value and (not at or not local or "." not in domain or " " in value):
        return "must be an address such as 'noreply@example.com'"
    return None


def _readable_file(value: Any) -> str | None:
    if not os.access(value, os.R_OK):
        return "cannot read this file (missing, or not readable by this user)"
    return None


@dataclass
class DkimKey:
    """One signing key: the algorithm (RSA or Ed25519) is read from the key file."""

    domain: str = field(default="", metadata=_check(lambda v: None if "." in v else
                                                    "must be a domain such as 'example.com'"))
    selector: str = field(default="", metadata=_check(lambda v: None if v else
                                                      "must name the selector"))
    key_file: str = field(default="", metadata=_check(_readable_file))

    def __post_init__(self) -> None:
        if not (self.domain and self.selector and self.key_file):
            raise ConfigError("every [[dkim.keys]] entry needs domain, selector and key_file")


@dataclass
class DkimConfig:
    """DKIM presence, alignment, verification and (opt-in) signing. Owner: issue 3."""

    verify: bool = True
    sign: bool = False
    sign_origins: list[str] = field(default_factory=lambda: list(_FIX_ORIGINS),
                                    metadata=_check(_origins))
    keys: list[DkimKey] = field(default_factory=list)
    canonicalization: str = field(default="relaxed/relaxed", metadata=_check(_one_of(
        "relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple")))
    sign_headers: list[str] = field(default_factory=lambda: [
        "from", "reply-to", "subject", "date", "to", "cc", "message-id", "in-reply-to",
        "references", "mime-version", "content-type", "content-transfer-encoding",
        "list-unsubscribe", "list-unsubscribe-post", "sender",
    ], metadata=_check(lambda v: None if "from" in [h.lower() for h in v] else
                       "must include 'from' (RFC 6376 5.4)"))

    def __post_init__(self) -> None:
        if self.sign and not self.keys:
            raise ConfigError("dkim.sign = true needs at least one [[dkim.keys]] entry "
                              "(domain, selector, key_file); see packaging/postwarden.toml")


@dataclass
class FromRewriteConfig:
    """Rewrite a foreign From that would fail DMARC (opt-in). Owner: issue 3."""

    enabled: bool = False
    origins: list[str] = field(default_factory=lambda: ["local", "internal"],
                               metadata=_check(_origins))
    address: str = field(default="", metadata=_check(_address_or_empty))
    site_name: str = ""

    def __post_init__(self) -> None:
        if self.enabled and not self.address:
            raise ConfigError("from_rewrite.enabled = true needs from_rewrite.address, an "
                              "address in your domain such as 'noreply@example.com'")


FORM_SIGNALS = tuple(ids.FORM_SIGNALS)  # each is the finding form.<signal>
LIMIT_KEYS = ("source", "sasl_user", "sender", "client_ip", "from_domain")
ORIGINS = ("local", "submission", "internal")


def _weights(values: Any) -> str | None:
    for k, v in values.items():
        if k not in FORM_SIGNALS:
            return f"unknown signal {k!r}; known: {', '.join(FORM_SIGNALS)}"
        if v < 0:
            return f"weight of {k!r} must be 0 or more"
    return None


def _limit_origins(values: Any) -> str | None:
    bad = [v for v in values if v not in ORIGINS]
    return f"unknown origin {bad[0]!r}; use {', '.join(ORIGINS)}" if bad else None


@dataclass
class FormsConfig:
    """Recognising web-form and script mail, and its suspicion signals. Owner: issue 4."""

    enabled: bool = True
    web_users: list[str] = field(
        default_factory=lambda: ["www-data", "apache", "nginx", "nobody", "http", "wwwrun"]
    )
    form_sasl_users: list[str] = field(default_factory=list)
    max_rcpts: int = field(default=3, metadata=_check(_positive))
    max_rcpt_domains: int = field(default=2, metadata=_check(_positive))
    max_urls: int = field(default=3, metadata=_check(_positive))
    body_scan_bytes: int = field(default=8192, metadata=_check(_positive))
    url_shorteners: list[str] = field(
        default_factory=lambda: ["bit.ly", "tinyurl.com", "t.co", "goo.gl", "ow.ly", "is.gd",
                                 "buff.ly", "rebrand.ly", "cutt.ly", "shorturl.at", "tiny.cc",
                                 "rb.gy", "t.ly", "s.id", "v.gd"]
    )
    repeat_count: int = field(default=5, metadata=_check(_positive))
    repeat_window: int = field(default=3600, metadata=_check(_positive))
    burst_factor: float = field(default=10.0, metadata=_check(_positive))
    burst_min: int = field(default=10, metadata=_check(_positive))
    weights: dict[str, int] = field(
        default_factory=lambda: {"many_rcpts": 3, "many_domains": 3, "foreign_from": 2,
                                 "reply_to_differs": 1, "many_urls": 3, "url_shortener": 3,
                                 "repeated_body": 4, "burst": 4},
        metadata=_check(_weights),
    )
    suspicious_score: int = field(default=8, metadata=_check(_positive))


@dataclass
class LimitConfig:
    """One rate limit: `rate` units per `window` seconds, at most `burst` at once."""

    name: str = ""
    key: str = field(default="source", metadata=_check(_one_of(*LIMIT_KEYS)))
    count: str = field(default="messages", metadata=_check(_one_of("messages", "recipients")))
    rate: int = field(default=20, metadata=_check(_positive))
    window: int = field(default=3600, metadata=_check(_positive))
    burst: int = field(default=5, metadata=_check(_positive))
    origins: list[str] = field(default_factory=lambda: list(ORIGINS),
                               metadata=_check(_limit_origins))
    forms_only: bool = False


def _limits(values: Any) -> str | None:
    names = [lim.name for lim in values]
    if any(not n for n in names):
        return "every limit needs a name (name = \"form\")"
    dup = {n for n in names if names.count(n) > 1}
    return f"limit name {sorted(dup)[0]!r} is used twice" if dup else None


@dataclass
class RateLimitConfig:
    """Rate limits per source, SASL user, sender, client IP or From domain. Owner: issue 4."""

    enabled: bool = True
    costly_score: int = field(default=4, metadata=_check(_positive))
    suspicious_cost: float = field(default=2.0, metadata=_check(_positive))
    degraded_fraction: float = field(default=0.5, metadata=_check(_share))
    limits: list[LimitConfig] = field(
        default_factory=lambda: [
            LimitConfig("form", "source", "messages", 20, 3600, 5, list(ORIGINS), True),
            # A budget in recipients next to the one in messages: one message to 500
            # addresses must not cost what one to a single address costs.
            LimitConfig("form_rcpts", "source", "recipients", 40, 3600, 10, list(ORIGINS),
                        True),
            LimitConfig("sasl", "sasl_user", "messages", 200, 3600, 50, ["submission"]),
            LimitConfig("local", "source", "messages", 100, 3600, 20, ["local"]),
            LimitConfig("local_rcpts", "source", "recipients", 1000, 3600, 200, ["local"]),
            LimitConfig("internal", "client_ip", "recipients", 500, 3600, 100, ["internal"]),
        ],
        metadata=_check(_limits),
    )


_SEVERITIES = ("ok", "info", "warning", "critical")


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _zones(values: Any) -> str | None:
    for v in values:
        if not isinstance(v, str) or "." not in v.strip(".") or " " in v:
            return f"{v!r} is not a DNS zone (write e.g. 'bl.example.net')"
    return None


def _key_names(values: Any) -> str | None:
    for k in values:
        if "._domainkey." not in k:
            return (f"key {k!r} must be 'SELECTOR._domainkey.DOMAIN' "
                    "(e.g. 'mail._domainkey.example.com' = '/etc/dkim/mail.private')")
    return None


@dataclass
class SelfcheckConfig:
    """Blocklists, DNS records and Postfix audit; periodic run in the daemon. Owner: issue 5."""

    interval: int = field(default=3600, metadata=_check(_seconds))
    periodic: bool = True
    startup_delay: float = field(default=60.0, metadata=_check(_seconds_or_zero))
    query_timeout: float = field(default=3.0, metadata=_check(_seconds))
    run_timeout: float = field(default=20.0, metadata=_check(_seconds))
    lists_add: list[str] = field(default_factory=list, metadata=_check(_zones))
    lists_remove: list[str] = field(default_factory=list, metadata=_check(_zones))
    spamhaus_dqs_key: str = ""
    severity_l1: str = field(default="critical", metadata=_check(_one_of(*_SEVERITIES)))
    severity_l2: str = field(default="warning", metadata=_check(_one_of(*_SEVERITIES)))
    severity_l3: str = field(default="info", metadata=_check(_one_of(*_SEVERITIES)))
    dkim_selectors: dict[str, list[str]] = field(default_factory=dict)
    dkim_key_files: dict[str, str] = field(default_factory=dict, metadata=_check(_key_names))
    postfix_config_dir: str = ""
    php_ini: list[str] = field(default_factory=list)
    history: int = field(default=200, metadata=_check(_positive))
    reminder_interval: int = field(default=86400, metadata=_check(_seconds))
    hold_forms_when_listed: bool = False
    probe: bool = False
    probe_wait: float = field(default=15.0, metadata=_check(_positive))
    probe_recipient: str = ""
    probe_sasl_user: str = ""
    probe_sasl_password_file: str = ""


def _loopback_listen(value: Any) -> str | None:
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be 'HOST:PORT', e.g. '127.0.0.1:9851' (or '' for no endpoint)"
    try:
        if not ipaddress.ip_address(host.strip("[]")).is_loopback:
            return ("must be a loopback address: the metrics endpoint has no "
                    "authentication (scrape it locally or through a proxy)")
    except ValueError:
        return f"{host!r} is not an IP address (write e.g. '127.0.0.1:9851')"
    return None


@dataclass
class MetricsConfig:
    """Prometheus metrics of the daemon: off unless listen or textfile is set."""

    listen: str = field(default="", metadata=_check(_loopback_listen))
    textfile: str = ""
    textfile_interval: float = field(default=60.0, metadata=_check(_positive))


def _regex(value: Any) -> str | None:
    import re

    try:
        re.compile(value)
    except re.error as e:
        return f"not a valid regular expression: {e}"
    return None if value else "must not be empty"


def _fraction(value: Any) -> str | None:
    return None if 0 < value <= 1 else "must be a fraction between 0 (exclusive) and 1"


@dataclass
class ReplyConfig:
    """One extra entry of the reply table (postwarden.replies), tried before the built-in."""

    pattern: str = field(default="", metadata=_check(_regex))
    kind: str = field(default="other", metadata=_check(_one_of(*replies.CLASSES)))
    meaning: str = ""
    advice: str = ""
    zone: str = ""


@dataclass
class FeedbackConfig:
    """Postfix's delivery results read back and tied to the source that sent the mail."""

    source: str = field(default="auto", metadata=_check(_one_of("auto", "file", "journal",
                                                                  "off")))
    log_file: str = ""
    journal_identifiers: list[str] = field(
        default_factory=lambda: ["postfix/smtp", "postfix/lmtp", "postfix/relay"])
    start_at: str = field(default="end", metadata=_check(_one_of("end", "start")))
    poll_interval: float = field(default=0.5, metadata=_check(_positive))
    retention: int = field(default=7 * 86400, metadata=_check(_positive))
    recheck_interval: int = field(default=3600, metadata=_check(_positive))
    replies: list[ReplyConfig] = field(default_factory=list)
    brake_window: int = field(default=3600, metadata=_check(_positive))
    brake_min: int = field(default=5, metadata=_check(_positive))
    brake_ratio: float = field(default=0.5, metadata=_check(_fraction))
    dmarc_maildir: str = ""
    dmarc_interval: int = field(default=3600, metadata=_check(_positive))


@dataclass
class Config:
    socket: str = field(
        default="unix:/var/spool/postfix/postwarden/postwarden.sock",
        metadata=_check(_socket),
    )
    allow_inet: bool = False
    socket_mode: str = field(default="0660", metadata=_check(_mode_octal))
    socket_group: str = "postfix"
    user: str = ""
    pin_cpu: bool = True
    body_memory: int = field(default=1024 * 1024, metadata=_check(_positive))
    mode: str = field(default="monitor", metadata=_check(_one_of("monitor", "enforce")))
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    host: HostConfig = field(default_factory=HostConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    from_rewrite: FromRewriteConfig = field(default_factory=FromRewriteConfig)
    forms: FormsConfig = field(default_factory=FormsConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    selfcheck: SelfcheckConfig = field(default_factory=SelfcheckConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    source: str = field(default="", metadata={"internal": True})


MAX_FILE_SIZE = 1024 * 1024


def _read_regular(p: Path) -> bytes:
    """The file's bytes; ConfigError for anything but a readable regular file (a FIFO
    or a device would block `config check` and the daemon forever)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else "the path holds a NUL byte"
        raise ConfigError(
            f"{p}: cannot read the config file ({reason}); "
            "pass --config PATH or install packaging/postwarden.toml there"
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{p}: not a regular file; point --config at the TOML file")
        if st.st_size > MAX_FILE_SIZE:
            raise ConfigError(f"{p}: {st.st_size} bytes, larger than any config needs "
                              f"({MAX_FILE_SIZE}); is this the right file?")
        return f.read(MAX_FILE_SIZE + 1)


def load(path: Path | str | None = None, reader: bool = False) -> Config:
    """Read and validate a config file; ConfigError on any problem, never another
    exception (the daemon's reload and `config check` rely on that). A `reader`
    (status, a monitoring plugin) only reads the store, so it need not be able to
    write there."""
    p = Path(path) if path is not None else DEFAULT_PATH
    raw = _read_regular(p)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML: arrays or tables nested too deeply") from None
    cfg = from_dict(data, str(p), reader)
    cfg.source = str(p)
    return cfg


def from_dict(data: dict[str, Any], where: str = "config", reader: bool = False) -> Config:
    try:
        cfg = _build(Config, data, where, "")
        _validate_cross(cfg, where, reader)
    except RecursionError:
        raise ConfigError(f"{where}: values nested too deeply; see packaging/postwarden.toml "
                          "for the shape of each key") from None
    except (ValueError, TypeError, OverflowError) as e:  # a check that met an odd value
        raise ConfigError(f"{where}: invalid value ({type(e).__name__}: {e}); see "
                          "packaging/postwarden.toml") from None
    return cfg


def _show(value: Any) -> str:
    """A value for an error message: its repr, cut short (a hostile file can hold
    megabytes in one key)."""
    try:
        text = repr(value)
    except RecursionError:
        text = "<deeply nested value>"
    return text if len(text) <= 80 else text[:77] + "..."


T = typing.TypeVar("T")


def _build(cls: type[T], data: Any, where: str, prefix: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: [{prefix.rstrip('.')}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")  # type: ignore[arg-type]
    }
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = prefix + key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key {name!r}{hint}; see packaging/postwarden.toml for every key"
            )
        f = fields[key]
        kwargs[key] = _convert(hints[key], value, where, name)
        check = f.metadata.get("check")
        if check is not None:
            problem = check(kwargs[key])
            if problem:
                raise ConfigError(f"{where}: {name} = {_show(value)}: {problem}")
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, where: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(
        f"{where}: {name} = {_show(value)}: wrong type, expected {_type_name(tp)}"
    )
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, name + ".")  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [_convert(item, v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, vt = typing.get_args(tp)
        for k in value:
            if "\0" in str(k):
                raise ConfigError(f"{where}: {name}: key {_show(k)} must not contain a NUL "
                                  "character")
        return {str(k): _convert(vt, v, where, f"{name}.{k}") for k, v in value.items()}
    if origin in (types.UnionType, typing.Union):
        for alt in typing.get_args(tp):
            try:
                return _convert(alt, value, where, name)
            except ConfigError:
                continue
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} = {value!r}: must be a finite number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise bad
        if tp is str and "\0" in value:
            raise ConfigError(f"{where}: {name} = {_show(value)}: must not contain a NUL "
                              "character")
        return value
    raise ConfigError(f"{where}: {name}: internal error, unsupported type {tp!r}")


def inet_host(spec: str) -> str | None:
    """The host part of an inet:/inet6: socket spec ('' when missing), None for unix:."""
    if not spec.startswith(("inet:", "inet6:")):
        return None
    return spec.split(":", 1)[1].partition("@")[2].strip("[]")


def _validate_socket(cfg: Config, where: str) -> None:
    """A TCP socket lets every local user (not only Postfix) talk to the milter, and
    a malformed packet from one is a risk to the daemon, so it is opt-in and loopback."""
    host = inet_host(cfg.socket)
    if host is None:
        return
    if not cfg.allow_inet:
        raise ConfigError(
            f"{where}: socket = {cfg.socket!r}: a TCP socket is reachable by every local "
            "user, not only Postfix; use a unix socket (the default), or set "
            "allow_inet = true if you must"
        )
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"{where}: socket = {cfg.socket!r}: an inet socket must name a loopback "
            "address, e.g. 'inet:8894@127.0.0.1' or 'inet6:8894@::1' (without one, "
            "libmilter listens on every interface)"
        )




_IDS_HELP = "`postwarden findings` and docs/findings.md list every id"


def _validate_cross(cfg: Config, where: str, reader: bool = False) -> None:
    _validate_socket(cfg, where)
    # An unknown id would be a silent no-op: a typo must not switch a hold off.
    for fid in cfg.policy.enforce:
        problem = ids.policy_key_problem(fid)
        if problem:
            raise ConfigError(f"{where}: policy.enforce.{fid}: {problem}; {_IDS_HELP}")
    for i, fid in enumerate(cfg.policy.hold_in_monitor):
        problem = ("takes exact ids, not family.*" if fid.endswith(".*")
                   else ids.policy_key_problem(fid))
        if problem:
            raise ConfigError(f"{where}: policy.hold_in_monitor[{i}] = {fid!r}: {problem}; "
                              f"{_IDS_HELP}")
    for fid, action in cfg.policy.enforce.items():
        if action not in ACTIONS:
            raise ConfigError(
                f"{where}: policy.enforce.{fid} = {action!r}: must be one of "
                f"{', '.join(ACTIONS)}"
            )
    if cfg.store.backend == "sqlite" and not reader:
        parent = Path(cfg.store.path).parent
        if parent.exists() and not os.access(parent, os.W_OK):
            raise ConfigError(
                f"{where}: store.path = {cfg.store.path!r}: directory {parent} is not writable "
                "by this user; create it and give it to the postwarden user"
            )
