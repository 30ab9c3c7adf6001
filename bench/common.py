"""Setup the benchmarks share: a work directory, fixture DNS on Knot, the daemon's own
Inspector in this process and a message for it, and the settings of a postwarden
daemon without DNS.

Imported after a script has put tests/ and bench/ on sys.path, as each of them does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fixtures import RCPT, SENDER, postwarden_settings, zones
from peers import make_key

from harness.knot import DnsServer
from harness.milterproc import toml_dumps
from postwarden import config as pwconfig
from postwarden.config import Config
from postwarden.log import log
from postwarden.message import Message
from postwarden.milter.daemon import build_inspector
from postwarden.milter.origin import classify
from postwarden.milter.pipeline import Inspector
from postwarden.store import Store, open_store


def workdir(prefix: str) -> Path:
    """A fresh directory that Knot and Postfix, running as their own users, can enter."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    return base


def serve_zones(dns: DnsServer, base: Path) -> Path:
    """Start `dns` with the fixture zones, signed for a new DKIM key; the key's file."""
    key = make_key(base / "keys")
    for name, records in zones(key).items():
        dns.zone(name, records)
    dns.start()
    return key


def inspector(dns: DnsServer, base: Path, extra: dict[str, Any]
              ) -> tuple[Config, Store, Inspector]:
    """The Inspector exactly as the daemon builds it (daemon.build_inspector: real
    resolver on `dns`, SQLite store) on the benchmarks' settings plus `extra`. The log
    lines are formatted and written (and flushed), to nowhere."""
    settings = postwarden_settings(dns.port, base, extra)  # type: ignore[arg-type]
    settings["socket"] = f"unix:{base}/p.sock"
    (base / "p.toml").write_text(toml_dumps(settings))
    cfg = pwconfig.load(base / "p.toml")
    devnull = open(os.devnull, "w")
    log.setup("stderr", cfg.log.facility, cfg.log.repeat_interval, stream=devnull)
    store = open_store(cfg.store)
    return cfg, store, build_inspector(cfg, store)


def smtpd_message(cfg: Config, headers: list[tuple[str, str]], body: bytes,
                  queue_id: str) -> Message:
    """The benchmark message as eom hands it over from smtpd on loopback, its origin
    classified on every call as the daemon does."""
    origin = classify(cfg.outbound, "127.0.0.1", 40000, "smtpd", "")
    return Message(client_name="client.example.net", client_addr="127.0.0.1",
                   client_port=40000, daemon_name="smtpd", mail_from=SENDER, rcpts=[RCPT],
                   headers=list(headers), body=body, queue_id=queue_id, origin=origin)


def no_dns_settings(work: Path) -> dict[str, Any]:
    """A daemon's settings (all but the socket) with no DNS server on the port it asks:
    every lookup fails at once and the checks say temperror."""
    return {
        "host": {"ips": ["192.0.2.25"], "hostname": "mail.example.com",
                 "domains": ["example.com"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": 9, "timeout": 0.2},
        "store": {"path": str(work / "state.db")},
        "log": {"target": "stderr"}, "selfcheck": {"periodic": False},
    }
