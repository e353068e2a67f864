"""`python -m exporter.local.host`: the host in the foreground until SIGTERM or SIGINT.

Prints one `host started: N functions (name: trigger, ...)` line on stdout once every trigger
runs (a function switched off by `AzureWebJobs.<name>.Disabled` shows as `name: trigger
(disabled)`), and `host stopped` at the end; exit status 2 when the app cannot run here. Logs go
to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from exporter.local.host.config import HostError
from exporter.local.host.http import DEFAULT_HTTP_PORT
from exporter.local.host.runtime import LocalHost
from exporter.local.process import configure_logging, serve_until_signal


def main(argv: Sequence[str] | None = None) -> int:
    """Run the host in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.local.host",
        description="Run the function app's triggers against Azurite (a local Functions host).",
    )
    parser.add_argument("--app-dir", type=Path, default=Path("."), help="folder of the app")
    parser.add_argument(
        "--settings", type=Path, help="settings file (default: local.settings.json in app dir)"
    )
    parser.add_argument("--host-json", type=Path, help="host.json (default: the app dir's)")
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="0: any free")
    parser.add_argument("--module", default="function_app", help="the app module's name")
    parser.add_argument(
        "--default",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting the settings file and the environment override (repeatable)",
    )
    parser.add_argument(
        "--restart-hint",
        default="restart the host",
        help="how the warning about a settings change that needs a restart begins",
    )
    args = parser.parse_args(argv)
    defaults = {}
    for item in args.default:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--default {item!r}: expected NAME=VALUE")
        defaults[name] = value
    configure_logging(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)

    def started() -> str:
        listed = ", ".join(
            f"{f.name}: {f.trigger}{' (disabled)' if host.disabled(f.name) else ''}"
            for f in host.functions
        )
        return f"host started: {len(host.functions)} functions ({listed})"

    try:
        host = LocalHost(
            args.app_dir,
            args.settings,
            args.host_json,
            args.http_port,
            module=args.module,
            defaults=defaults,
            restart_hint=args.restart_hint,
        )
        serve_until_signal(host.start, host.stop, started, poll=0.5)
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print("host stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
