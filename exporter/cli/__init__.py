"""`python -m exporter` (also the `exporter` console script): parse the command line, run the
command, and turn its errors into one line and an exit code.

Exit codes (`exporter.cli.exit_codes`): 0 done; 1 a run, a connection test or the demo's check
failed, SendGrid refused, or storage, SendGrid or Key Vault cannot be reached (one line
`error: ...`); 2 the input is wrong, or names what does not exist (one line `error: ...` on
stderr, no traceback); 3 timed out waiting for runs.

One module a command: `check`, `export`, `destinations`, `runs`, and `local` (`up`, `demo`,
`sandbox`); the parser in `parser`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from azure.core.exceptions import AzureError

from exporter.admin.errors import SendGridRefused
from exporter.cli import check, destinations, export, local, runs, snapshots
from exporter.cli.connect import azure_error_line, unreachable_line
from exporter.cli.exit_codes import EXIT_FAILED, EXIT_INPUT
from exporter.cli.parser import build_parser
from exporter.core.errors import ExporterError, InputError, Unreachable
from exporter.ports.sendgrid import TransientError


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if args.command == "sandbox":
        return local.sandbox([*extra, *args.args])
    if extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "check":
            return check.command(args)
        if args.command == "export":
            return export.command(args)
        if args.command == "runs":
            return runs.command(args)
        if args.command == "destinations":
            return destinations.command(args)
        if args.command == "snapshots":
            return snapshots.command(args)
        if args.command == "up":
            return local.up(args)
        if args.offline:
            return local.demo_offline(args)
        return local.demo(args)
    except Unreachable as exc:  # storage, SendGrid or Key Vault: where, why, what to do
        print(f"error: {unreachable_line(exc, getattr(args, 'settings', None))}", file=sys.stderr)
        return EXIT_FAILED
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (SendGridRefused, TransientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    except ExporterError as exc:  # raised on purpose, with a message for a person
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    except AzureError as exc:  # anything else the Azure SDK raised: one line, no traceback
        print(f"error: {azure_error_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
