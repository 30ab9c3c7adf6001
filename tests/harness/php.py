"""PHP's own mail(): php-cli with mail.add_x_header=On, sendmail_path at the private Postfix."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import need


def run_php(script: Path, postfix_conf: Path, args: list[str] | None = None,
            timeout: float = 300, add_x_header: bool = True
            ) -> subprocess.CompletedProcess[str]:
    """`add_x_header=False`: PHP adds no X-PHP-Originating-Script, so a script can
    write its own (what a local user trying to look like someone else does)."""
    sendmail = f"{need('sendmail')} -C {postfix_conf} -t -i"
    x_header = "On" if add_x_header else "Off"
    return subprocess.run(
        [need("php"), "-n", "-d", f"mail.add_x_header={x_header}",
         "-d", f"sendmail_path={sendmail}",
         str(script), *(args or [])],
        capture_output=True, text=True, timeout=timeout, check=True)
