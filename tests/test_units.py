"""The shipped systemd units: ordering, readiness, hardening exposure.

`systemd-analyze verify` needs the units' programs installed, so it runs in
`make deb-check` on the installed package; the offline security score does not.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness import need

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"


def settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (PACKAGING / unit).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_milter_unit_orders_itself_before_the_real_postfix_and_signals_readiness() -> None:
    s = settings("postwarden.service")
    before = " ".join(s["Before"]).split()
    assert "postfix@-.service" in before and "postfix.service" in before
    after = " ".join(s["After"]).split()
    assert {"network-online.target", "nss-lookup.target"} <= set(after)
    assert s["Wants"] == ["network-online.target"]
    assert s["Type"] == ["notify"]
    assert s["ExecStart"] == ["/usr/bin/postwarden milter"]
    assert s["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert s["Restart"] == ["on-failure"]
    assert s["StateDirectory"] == ["postwarden"]


def test_every_program_a_unit_runs_is_the_packaged_one() -> None:
    for unit in ("postwarden.service", "postwarden-selfcheck.service"):
        for key, values in settings(unit).items():
            if key.startswith("Exec"):
                for v in values:
                    assert v.split()[0] in ("/usr/bin/postwarden", "/bin/kill"), (unit, v)


def test_hardening_exposure_stays_below_2() -> None:
    for unit in ("postwarden.service", "postwarden-selfcheck.service"):
        r = subprocess.run([need("systemd-analyze"), "security", "--offline=yes",
                            str(PACKAGING / unit)], capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        assert m, r.stdout + r.stderr
        assert float(m.group(1)) < 2.0, (unit, m.group(1))
