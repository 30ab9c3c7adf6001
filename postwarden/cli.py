"""`postwarden` command line: milter, selfcheck, status, config check."""

from __future__ import annotations

import argparse
import sys

from postwarden import __version__
from postwarden import config as configmod
from postwarden.config import ConfigError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
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
                    help="do not record this run in the store history")

    st = sub.add_parser("status", help="rate-limit use, held messages, recent findings")
    st.add_argument("--json", action="store_true")

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
    args = _parser().parse_args(argv)
    if args.command == "findings":
        return _findings(args.markdown)
    try:
        if args.command == "config":
            cfg = configmod.load(args.config)
            print(f"{cfg.source}: OK")
            return 0
        if args.command == "milter":
            from postwarden.milter import daemon

            return daemon.run(args.config, log_stderr=args.log_stderr)
        if args.command == "selfcheck":
            from postwarden.checks import cli as selfcheck_cli

            return selfcheck_cli.run(args)
        if args.command == "status":
            from postwarden import status

            return status.run(args)
        if args.command == "dmarc-reports":
            from postwarden import dmarc_reports_cli

            return dmarc_reports_cli.run(args)
    except ConfigError as e:
        print(f"postwarden: fatal: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
