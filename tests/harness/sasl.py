"""Real SASL for the submission listener: Dovecot's auth service, nothing else."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from harness import HarnessError, need, stop_process

_CONF = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


class Dovecot:
    def __init__(self, directory: Path, socket: Path, users: dict[str, str]) -> None:
        self.dir = directory
        self.socket = socket
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for sub in ("run", "state"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        (self.dir / "passwd").write_text(
            "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()))
        conf = self.dir / "dovecot.conf"
        conf.write_text(_CONF.format(d=self.dir, socket=self.socket))
        with open(self.dir / "stderr.log", "ab") as log:
            self.proc = subprocess.Popen([need("dovecot"), "-F", "-c", str(conf)],
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError("dovecot auth did not start: "
                                   + (self.dir / "stderr.log").read_text()[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
