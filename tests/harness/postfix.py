"""A private Postfix instance on loopback, configured from postfix-examples/.

Own config, queue and data directories under one base directory, chroot off,
relaying everything to the Sink. Its main.cf is a loopback base plus the lines of
postfix-examples/main.cf verbatim; its submission listener is the service from
postfix-examples/master.cf with only the port changed. So the examples are proven.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

from harness import HarnessError, free_port, need

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "postfix-examples"

BASE_MAIN = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.example.com
mydomain = example.com
myorigin = $mydomain
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_tls_security_level = may
smtpd_tls_cert_file = {tls}/cert.pem
smtpd_tls_key_file = {tls}/key.pem
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
maillog_file = {base}/maillog
maillog_file_prefixes = /
biff = no
delay_warning_time = 0
smtpd_error_sleep_time = 0
in_flow_delay = 0
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
default_destination_concurrency_limit = 20
default_destination_rate_delay = 0
smtp_connect_timeout = 5s
milter_connect_timeout = 5s
milter_command_timeout = 10s
milter_content_timeout = 60s
"""


def _master_cf(smtp_port: int, submission_port: int, plain_port: int,
               examples: bool = True) -> str:
    dist = Path("/usr/share/postfix/master.cf.dist").read_text()
    out = []
    for line in dist.splitlines():
        fields = line.split()
        if line.startswith(("#", " ", "\t")) or len(fields) < 8:
            out.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"127.0.0.1:{smtp_port}"
        fields[4] = "n"  # chroot off: the test instance lives outside /var/spool
        out.append("  ".join(fields))
    lines = (EXAMPLES / "master.cf").read_text().splitlines() if examples else []
    for line in lines:
        if line.startswith("submission "):
            fields = line.split()
            fields[0], fields[4] = f"127.0.0.1:{submission_port}", "n"
            line = "  ".join(fields)
        out.append(line)
    # A listener without any milter, for tests that need a clean baseline.
    out.append(f"127.0.0.1:{plain_port} inet n - n - - smtpd")
    out.append("  -o smtpd_milters=")
    return "\n".join(out) + "\n"


def _tls_material(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "cert.pem").exists():
        return
    subprocess.run([need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-days", "2", "-subj", "/CN=mail.example.com",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
                   check=True, capture_output=True)
    os.chmod(directory / "key.pem", 0o600)


class Postfix:
    def __init__(self, base: Path, sink_port: int, extra_main: str = "",
                 examples: bool = True) -> None:
        """examples=False: a plain Postfix, for tests that wire it up themselves."""
        self.base = base
        self.conf = base / "conf"
        self.queue = base / "queue"
        self.data = base / "data"
        self.tls = base / "tls"
        self.sink_port = sink_port
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.plain_port = free_port()
        self.extra_main = extra_main
        self.examples = examples
        self.milter_socket = self.queue / "postwarden" / "postwarden.sock"
        self.maillog = base / "maillog"

    # -- configuration ------------------------------------------------------------
    def write_config(self, extra_main: str | None = None) -> None:
        if extra_main is not None:
            self.extra_main = extra_main
        for d in (self.conf, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        subprocess.run(["chown", "postfix", str(self.data)], check=True)
        _tls_material(self.tls)
        main = BASE_MAIN.format(queue=self.queue, data=self.data, sink_port=self.sink_port,
                                tls=self.tls, base=self.base)
        if self.examples:
            main += "\n# --- postfix-examples/main.cf ---\n" + (EXAMPLES / "main.cf").read_text()
        main += "\n# --- test overrides ---\n" + self.extra_main + "\n"
        (self.conf / "main.cf").write_text(main)
        (self.conf / "master.cf").write_text(
            _master_cf(self.smtp_port, self.submission_port, self.plain_port, self.examples))

    def postconf(self, *args: str) -> str:
        return subprocess.run([need("postconf"), "-c", str(self.conf), *args], check=True,
                              capture_output=True, text=True).stdout

    # -- lifecycle ----------------------------------------------------------------
    def start(self, write: bool = True) -> None:
        """write=False starts from the configuration as it is on disk."""
        if write:
            self.write_config()
        subprocess.run([need("postfix"), "-c", str(self.conf), "check"], check=True,
                       capture_output=True, text=True)
        r = subprocess.run([need("postfix"), "-c", str(self.conf), "start"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"postfix start failed: {r.stderr}{self.log_text()[-2000:]}")
        self.wait_banner(self.smtp_port)

    def reload(self) -> None:
        self.write_config()
        subprocess.run([need("postfix"), "-c", str(self.conf), "reload"], check=True,
                       capture_output=True)
        time.sleep(0.5)
        self.wait_banner(self.smtp_port)

    def master_pid(self) -> int | None:
        pidfile = self.queue / "pid" / "master.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pid = self.master_pid()
        subprocess.run([need("postfix"), "-c", str(self.conf), "stop"], capture_output=True)
        deadline = time.monotonic() + 20
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def wait_banner(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=2) as s:
                    s.noop()
                    return
            except (OSError, smtplib.SMTPException):
                time.sleep(0.1)
        raise HarnessError(f"no 220 banner on port {port}: {self.log_text()[-2000:]}")

    # -- sending ------------------------------------------------------------------
    def smtp(self, data: bytes, sender: str, rcpts: list[str], port: int | None = None,
             login: tuple[str, str] | None = None) -> str:
        """Send over SMTP (STARTTLS + AUTH when `login` is given); returns the queue ID."""
        port = port or (self.submission_port if login else self.smtp_port)
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.net",
                          timeout=60) as s:
            s.ehlo()
            if login:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s.starttls(context=ctx)
                s.ehlo()
                s.login(*login)
            code, resp = s.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, resp, sender)
            for r in rcpts:
                code, resp = s.rcpt(r)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({r: (code, resp)})
            code, resp = s.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, resp)
        m = re.search(rb"queued as ([0-9A-Za-z]+)", resp)
        if not m:
            raise HarnessError(f"no queue ID in {resp!r}")
        return m.group(1).decode()

    def sendmail(self, data: bytes, sender: str, rcpts: list[str]) -> None:
        """The real sendmail command (local mail: postdrop -> pickup -> cleanup)."""
        subprocess.run([need("sendmail"), "-C", str(self.conf), "-f", sender, "-i", *rcpts],
                       input=data, check=True, timeout=60)

    def queue_id_for(self, message_id: str, timeout: float = 30.0) -> str:
        """Postfix's queue ID of the message with this Message-ID (from its cleanup log)."""
        needle = f"message-id=<{message_id.strip('<>')}>"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_text().splitlines():
                if needle in line:
                    m = re.search(r"\]: ([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-z]{10,}): ", line)
                    if m:
                        return m.group(1)
            time.sleep(0.1)
        raise HarnessError(f"no cleanup line for {needle} in the maillog")

    # -- observing ----------------------------------------------------------------
    def queue_entries(self) -> list[dict[str, object]]:
        out = subprocess.run([need("postqueue"), "-c", str(self.conf), "-j"], check=True,
                             capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def held(self) -> list[str]:
        return [str(e["queue_id"]) for e in self.queue_entries() if e["queue_name"] == "hold"]

    def wait_queue(self, pred: object, timeout: float = 30.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            entries = self.queue_entries()
            if callable(pred) and pred(entries):
                return entries
            if time.monotonic() > deadline:
                raise AssertionError(f"queue never reached the expected state: {entries}")
            time.sleep(0.2)

    def wait_idle(self, timeout: float = 60.0) -> list[dict[str, object]]:
        """Until only held messages remain (everything else delivered or bounced)."""
        return self.wait_queue(lambda es: all(e["queue_name"] == "hold" for e in es), timeout)

    def postsuper(self, *args: str) -> None:
        subprocess.run([need("postsuper"), "-c", str(self.conf), *args], check=True,
                       capture_output=True)

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""
