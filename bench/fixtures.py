"""What every benchmark sends and how postwarden is configured for it.

One realistic outbound message (From/To/Date/Message-ID/MIME, a URL in the body)
of a given size, the fixture zones its SPF/DMARC/DKIM lookups are answered from,
and postwarden's settings: monitor mode, every per-message check on, rate limits
evaluated on every message but set so high they never hold one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from peers import DOMAIN, SELECTOR, public_key_txt

from postwarden import config as pwconfig

SENDER, RCPT = f"bench@{DOMAIN}", "rcpt@example.org"
HOST_IP = "192.0.2.25"
HUGE = 1_000_000_000  # rate limits evaluated on every message, never exceeded


def message(size: int, n: int = 0) -> bytes:
    """A plain outbound message of about `size` bytes (headers included)."""
    head = (f"From: Bench <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: benchmark message\r\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench.{n}@{DOMAIN}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    line = ("The quarterly figures are attached below; see https://www.example.com/report "
            "for details.\r\n")
    body = "Hello,\r\n\r\n"
    while len(head) + len(body) + len(line) <= size:
        body += line
    return (head + body).encode()


def postwarden_settings(dns_port: int, workdir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Monitor mode, every per-message check on, fixture DNS, nothing ever held."""
    limits = [dataclasses.asdict(lim) for lim in pwconfig.RateLimitConfig().limits]
    for lim in limits:
        lim["rate"], lim["burst"] = HUGE, HUGE
    settings: dict[str, Any] = {
        "mode": "monitor",
        "host": {"ips": [HOST_IP], "hostname": f"mail.{DOMAIN}", "domains": [DOMAIN]},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 1.0},
        "store": {"backend": "sqlite", "path": str(workdir / "state.db")},
        "log": {"target": "stderr"},
        # monitor mode holds nothing, so every message reaches the sink
        "policy": {"hold_in_monitor": []},
        "forms": {"enabled": True},
        "ratelimit": {"enabled": True, "limits": limits},
        "dkim": {"verify": True},
        "selfcheck": {"periodic": False},
    }
    for key, value in extra.items():
        settings[key] = dict(settings.get(key, {}), **value) if isinstance(value, dict) \
            else value
    return settings


def zones(key: Path) -> dict[str, str]:
    return {
        DOMAIN: (f'@ TXT "v=spf1 ip4:{HOST_IP} -all"\n'
                 '_dmarc TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r"\n'
                 f"@ MX 10 mail\nmail A {HOST_IP}\n"
                 f'{SELECTOR}._domainkey TXT "v=DKIM1; k=rsa; p={public_key_txt(key)}"\n'),
        "example.org": '@ TXT "v=spf1 -all"\n@ MX 10 mail\nmail A 198.51.100.7\n',
    }


def selfcheck_always(postfix_conf: Path) -> dict[str, Any]:
    """The periodic self-check back to back (interval 1 s) for the whole run."""
    fields = {f.name for f in dataclasses.fields(pwconfig.SelfcheckConfig)}
    sc: dict[str, Any] = {"periodic": True, "interval": 1, "postfix_config_dir": str(postfix_conf),
                          "query_timeout": 1.0, "run_timeout": 5.0}
    if "startup_delay" in fields:
        sc["startup_delay"] = 0
    return {k: v for k, v in sc.items() if k in fields}
