"""PHP's own mail(): php-cli with mail.add_x_header=On, sendmail_path at the private Postfix."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import need


def run_php(script: Path, postfix_conf: Path, args: list[str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    sendmail = f"{need('sendmail')} -C {postfix_conf} -t -i"
    return subprocess.run(
        [need("php"), "-n", "-d", "mail.add_x_header=On", "-d", f"sendmail_path={sendmail}",
         str(script), *(args or [])],
        capture_output=True, text=True, timeout=timeout, check=True)
