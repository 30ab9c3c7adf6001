"""A real authoritative DNS server (Knot) on a loopback port, serving fixture zones."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.resolver

from harness import HarnessError, free_port, need, stop_process

_CONF = """\
server:
    rundir: "{d}/run"
    listen: 127.0.0.1@{port}
    user: root:root
    tcp-idle-timeout: 5
control:
    listen: "{d}/run/knot.sock"
log:
  - target: stderr
    any: error
database:
    storage: "{d}/db"
template:
  - id: default
    storage: "{d}/zones"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
{zones}
"""


# The fixture TLD, served empty: a real resolver answers NXDOMAIN for a name that
# does not exist under a TLD, while Knot refuses names outside its zones. RFC 9989's
# DMARC tree walk asks _dmarc.<TLD>, so fixture .test domains need it answered.
FIXTURE_TLD = "test"


class DnsServer:
    """`zone(name, records)` publishes or replaces a zone; SOA and NS are added.

    `zone(".", ...)` serves the root zone: every name not published is then a
    real NXDOMAIN, not a REFUSED from a server without the zone.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.zones: dict[str, int] = {}  # name -> serial
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("run", "db", "zones"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "knot.conf"
        self.zone(FIXTURE_TLD, "")

    def _write_conf(self) -> None:
        zones = "\n".join(f"  - domain: {z or '.'}" for z in sorted(self.zones)) or "  []"
        if not self.zones:
            zones = "  - domain: harness.test"
            self._zone_file("harness.test", "", 1)
        self.conf.write_text(_CONF.format(d=self.dir, port=self.port, zones=zones))

    def _zone_file(self, name: str, records: str, serial: int) -> None:
        origin = f"{name}." if name else "."  # "" is the root zone (Knot's file ".zone")
        suffix = origin if name else ""
        ns, hostmaster = f"ns.{suffix}", f"hostmaster.{suffix}"
        text = (f"$ORIGIN {origin}\n$TTL 60\n"
                f"@ SOA {ns} {hostmaster} {serial} 3600 600 86400 60\n"
                f"@ NS {ns}\nns A 127.0.0.1\n{records}\n")
        (self.dir / "zones" / f"{name}.zone").write_text(text)

    def start(self) -> None:
        self._write_conf()
        with open(self.dir / "knot.log", "ab") as log:
            self.proc = subprocess.Popen([need("knotd"), "-c", str(self.conf)],
                                         stdout=log, stderr=log)
        self._wait(lambda: self._serial("harness.test" if not self.zones else
                                        next(iter(self.zones))) is not None)

    def _knotc(self, *args: str) -> None:
        subprocess.run([need("knotc"), "-c", str(self.conf), *args], check=True,
                       capture_output=True, timeout=20)

    def zone(self, name: str, records: str) -> None:
        """Publish `records` (zone-file lines, names relative to the zone) as zone `name`."""
        name = name.rstrip(".").lower()
        new = name not in self.zones
        serial = self.zones.get(name, 0) + 1
        self.zones[name] = serial
        self._zone_file(name, records, serial)
        if self.proc is None:
            return
        if new:
            self._write_conf()
            self._knotc("reload")
        else:
            self._knotc("zone-reload", name or ".")
        self._wait(lambda: self._serial(name) == serial)

    def remove(self, name: str) -> None:
        self.zones.pop(name.rstrip(".").lower(), None)
        self._write_conf()
        self._knotc("reload")

    def _serial(self, name: str) -> int | None:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port, r.lifetime = ["127.0.0.1"], self.port, 1.0
        try:
            ans = r.resolve(name or ".", "SOA")
        except Exception:
            return None
        return int(ans[0].serial)  # type: ignore[attr-defined]

    def _wait(self, ok: object, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(ok) and ok():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(f"knotd exited: {(self.dir / 'knot.log').read_text()}")
            time.sleep(0.05)
        raise HarnessError("Knot DNS did not serve the expected zone in time")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
