"""Two DKIM verifiers independent of postwarden, both asking the fixture Knot for keys.

- OpenDKIM (Debian's opendkim 2.11) as a verifying milter, driven over the milter
  protocol exactly as Postfix drives it (header_leading_space granted, folded
  header lines joined with LF, body in CRLF): its Authentication-Results says
  pass or fail. Its DNS goes through libunbound, configured to forward every
  query to Knot. `opendkim -t FILE` is not used: its test mode re-parses the
  file and puts a space after every colon, so a c=simple signature over
  `Subject:x` fails there although the milter (what receivers run) passes it.
- dkimpy under Debian's /usr/bin/python3 (python3-dkim, not the venv's copy),
  one process for a whole batch, DNS by dnspython against Knot.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path

from harness import HarnessError, need, stop_process
from harness.milter_client import MilterClient

_UNBOUND = """\
server:
    do-not-query-localhost: no
    module-config: "iterator"
    do-ip6: no
    verbosity: 0
    # unbound answers names under test. (RFC 6761) itself; the fixtures live there
    local-zone: "test." nodefault
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{port}
"""

_CONF = """\
Syslog no
Mode v
Socket local:{sock}
PidFile {d}/opendkim.pid
ResolverConfiguration {d}/unbound.conf
DNSTimeout 5
AuthservID verifier.test
AlwaysAddARHeader yes
"""

_DKIM_RESULT = re.compile(rb"\bdkim=(\w+)(?:(?!dkim=).)*?header\.s=([^\s;]+)", re.S)


def split_message(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers as a milter gets them from Postfix (value = what follows the colon,
    folded lines joined with LF) and the CRLF body."""
    raw = raw.replace(b"\r\n", b"\n")
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, body = raw, b""
    headers: list[tuple[str, str]] = []
    for line in head.split(b"\n"):
        text = line.decode("utf-8", "surrogateescape")
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + text)
        elif line:
            name, _, value = text.partition(":")
            headers.append((name, value))
    return headers, body.replace(b"\n", b"\r\n")


class OpenDkimMilter:
    """`verify(headers, body)` -> {selector: result} from OpenDKIM's A-R header."""

    def __init__(self, directory: Path, dns_port: int) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = self.dir / "opendkim.sock"
        (self.dir / "unbound.conf").write_text(_UNBOUND.format(port=dns_port))
        (self.dir / "opendkim.conf").write_text(_CONF.format(sock=self.sock, d=self.dir))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.dir / "opendkim.log", "ab") as log:
            self.proc = subprocess.Popen(
                [need("opendkim"), "-f", "-x", str(self.dir / "opendkim.conf")],
                stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError("opendkim did not start: "
                                   f"{(self.dir / 'opendkim.log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def verify(self, headers: list[tuple[str, str]], body: bytes) -> dict[str, str]:
        with MilterClient(f"unix:{self.sock}") as c:
            c.negotiate()
            reply = c.message(("127.0.0.1", 40000), "client.example.net",
                              "sender@example.net", ["rcpt@example.net"], headers, body)
        out: dict[str, str] = {}
        for cmd, payload in reply.actions:
            if cmd in (b"h", b"i") and b"Authentication-Results\0" in payload:
                for result, selector in _DKIM_RESULT.findall(payload):
                    out[selector.decode()] = result.decode()
        return out


_DKIMPY = r"""
import base64, json, sys, dkim, dns.resolver
res = dns.resolver.Resolver(configure=False)
res.nameservers, res.port = ["127.0.0.1"], int(sys.argv[1])
def dnsfunc(name, timeout=5):
    try:
        a = res.resolve(name.decode().rstrip("."), "TXT", lifetime=5)
    except Exception:
        return None
    return b"".join(a[0].strings)
out = []
for raw in json.load(sys.stdin):
    d = dkim.DKIM(base64.b64decode(raw))
    n = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
    row = {}
    for i in range(n):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            ok = False
        row[(d.selector or b"?").decode()] = "pass" if ok else "fail"
    out.append(row)
print(json.dumps(out))
"""


def dkimpy_verify(messages: list[bytes], dns_port: int) -> list[dict[str, str]]:
    """Each message's {selector: pass|fail} from Debian's dkimpy."""
    payload = json.dumps([base64.b64encode(m).decode() for m in messages])
    if not Path("/usr/bin/python3").exists():
        raise HarnessError("/usr/bin/python3 missing: install python3-dkim (make deps)")
    done = subprocess.run(["/usr/bin/python3", "-c", _DKIMPY, str(dns_port)],
                          input=payload.encode(), capture_output=True, timeout=300)
    if done.returncode != 0:
        raise HarnessError(f"dkimpy verifier failed: {done.stderr.decode()[-2000:]}")
    rows: list[dict[str, str]] = json.loads(done.stdout)
    return rows
