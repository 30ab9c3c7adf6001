"""`postwarden` command line: milter, selfcheck, status, config check, postfix-setup, and the
operator commands held, release, delete, ratelimit."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from postwarden import __version__
from postwarden import config as configmod
from postwarden.config import ConfigError

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def write_stdout(text: str) -> None:
    """Print a command's output. A reader that went away (`| head -1`) is not an error:
    the rest goes nowhere and the command still exits with its own status."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    # Python flushes stdout again at exit; on the dead pipe that prints a traceback.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postwarden", description=__doc__)
    p.add_argument("--version", action="version", version=f"postwarden {__version__}")
    p.add_argument("--config", "-c", default=None,
                   help=f"config file (default {configmod.DEFAULT_PATH})")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("milter", help="run the milter daemon in the foreground")
    m.add_argument("--log-stderr", action="store_true",
                   help="log to stderr instead of syslog (foreground runs, tests)")

    sc = sub.add_parser("selfcheck", help="check blocklists, DNS records and the Postfix setup")
    sc.add_argument("--json", action="store_true", help="print the JSON report")
    sc.add_argument("--nagios", action="store_true", help="one line with perfdata")
    sc.add_argument("--prometheus", metavar="FILE", help="write node_exporter textfile metrics")
    sc.add_argument("--ip", action="append", default=[], help="check this IP (repeatable)")
    sc.add_argument("--domain", action="append", default=[],
                    help="check this domain (repeatable)")
    sc.add_argument("--only", action="append", default=[], help="only check ids with prefix")
    sc.add_argument("--skip", action="append", default=[], help="skip check ids with prefix")
    sc.add_argument("--no-record", action="store_true",
                    help="write nothing: open the store read-only, record no history")
    sc.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                    help="bound the whole run (default 8); past it: one unknown result")
    sc.add_argument("--probe", action="store_true",
                    help="send a probe through sendmail and each SMTP listener with "
                         "postwarden; critical when the milter never sees one")
    sc.add_argument("--cached", type=float, metavar="MAXAGE", default=None,
                    help="print the daemon's last stored report (no DNS); unknown when it "
                         "is older than MAXAGE seconds")

    st = sub.add_parser("status", help="rate-limit use, held messages, recent findings")
    st.add_argument("--json", action="store_true", help="print the status as JSON")

    dm = sub.add_parser("dmarc-reports",
                        help="import DMARC aggregate reports and compare them with the "
                             "predictions")
    dm.add_argument("paths", nargs="+", metavar="PATH",
                    help="report files (.xml, .gz, .zip, a mail) or directories / Maildirs")
    dm.add_argument("--json", action="store_true")

    cfg = sub.add_parser("config", help="configuration tools")
    cfgsub = cfg.add_subparsers(dest="config_command", required=True)
    cfgsub.add_parser("check", help="validate the config file; exit 2 if it is invalid")

    fi = sub.add_parser("findings", help="list every finding id (family, severity, meaning)")
    fi.add_argument("--markdown", action="store_true", help="print docs/findings.md")

    from postwarden import admin

    admin.add_parsers(sub)

    ps = sub.add_parser(
        "postfix-setup", help="print (or --apply) the postconf commands that wire Postfix",
        description="Prints the postconf -e / -P / -M commands that add the lines of "
                    "postfix-examples/ to Postfix's main.cf and master.cf, skipping what is "
                    "already set. --apply runs them after saving main.cf and master.cf as "
                    "*.postwarden-TIMESTAMP next to them; running it again changes nothing. "
                    "Postfix is not reloaded.")
    ps.add_argument("--apply", action="store_true",
                    help="run the commands (after a backup of main.cf and master.cf)")
    ps.add_argument("-c", "--postfix-config-dir", metavar="CONFIG_DIR", default=None,
                    help="Postfix configuration directory (postconf -c; default: Postfix's own)")
    ps.add_argument("--submission", action="store_true",
                    help="also add the example's submission service (port 587, SASL and TLS "
                         "required) when master.cf has none")
    return p


def _findings(markdown: bool) -> int:
    from postwarden import ids

    if markdown:
        print(ids.markdown(), end="")
        return 0
    for f in ids.REGISTRY.values():
        print(f"{f.id:32} {f.half:9} {f.severity!s:8} {f.doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "findings":
        return _findings(args.markdown)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        _stdout_to_devnull()
        return 1
    except KeyboardInterrupt:
        # Not a normal exit: that would join the self-check's worker threads, each
        # waiting out its DNS timeout. Nothing is left half-written (the store writes
        # in transactions), so leave at once.
        print("postwarden: interrupted", file=sys.stderr)
        try:
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "config":
            from postwarden import config_advice, hostinfo

            cfg = configmod.load(args.config)
            for w in config_advice.warnings(cfg, hostinfo.interface_ips):
                write_stdout(f"{cfg.source}: warning: {w}\n")
            write_stdout(f"{cfg.source}: OK\n")
            return 0
        if args.command == "milter":
            # Before the heavy imports: a SIGHUP from here on is a reload once the
            # daemon is up, never the default action (exit).
            hup = threading.Event()
            signal.signal(signal.SIGHUP, lambda signum, frame: hup.set())
            from postwarden.milter import daemon

            return daemon.run(args.config, log_stderr=args.log_stderr, pending_reload=hup)
        if args.command == "selfcheck":
            from postwarden.checks import cli as selfcheck_cli

            return selfcheck_cli.run(args)
        if args.command == "postfix-setup":
            from postwarden import postfix_setup

            return postfix_setup.run(args)
        if args.command in ("held", "release", "delete", "ratelimit"):
            from postwarden import admin

            return admin.run(args)
        if args.command == "status":
            from postwarden import status

            return status.run(args)
        if args.command == "dmarc-reports":
            from postwarden import dmarc_reports_cli

            return dmarc_reports_cli.run(args)
    except ConfigError as e:
        print(f"postwarden: fatal: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 1


if __name__ == "__main__":
    sys.exit(main())
