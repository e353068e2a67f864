"""`exporter export`: upload a snapshot (FILE --segment NAME), or export stored snapshots to one
destination now (--destination NAME); optionally follow the runs to their end."""

from __future__ import annotations

import argparse
import sys

from exporter.admin.exports import export_now
from exporter.admin.operations import expected_destinations, follow, upload_snapshot
from exporter.admin.requests import ExportBody, parse
from exporter.cli.connect import connect
from exporter.cli.exit_codes import EXIT_TIMEOUT
from exporter.cli.progress import printer, summaries, wait_for
from exporter.core.errors import InputError


def command(args: argparse.Namespace) -> int:
    if args.destination:
        if args.file is not None or args.segment:
            raise InputError(
                "give FILE --segment NAME (upload a snapshot) or --destination NAME (export "
                "stored snapshots now), not both"
            )
        return _export_to(args)
    if args.file is None or not args.segment:
        raise InputError("export needs FILE --segment NAME, or --destination NAME")
    if args.snapshot or args.full_refresh or args.allow_mass_removal or args.verify:
        raise InputError(
            "--snapshot, --full-refresh, --allow-mass-removal and --verify go with --destination"
        )
    storage, svc = connect(args.settings)
    version = upload_snapshot(storage, args.file, args.segment)
    destinations = expected_destinations(svc, version)
    print(f"uploaded {args.file} as segments/{version.name} (version {version.etag})")
    if not destinations:
        print(f"warning: no destination selects segment {args.segment!r}: nothing will be sent")
        return 1
    print(f"destinations: {', '.join(destinations)}")
    if not args.wait:
        return 0
    try:
        done = follow(svc, version, len(destinations), timeout=args.timeout, on_progress=printer())
    except TimeoutError as exc:
        print(f"error: timed out waiting for the runs: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    return summaries(svc, done)


def _export_to(args: argparse.Namespace) -> int:
    _, svc = connect(args.settings)
    body = parse(
        ExportBody,
        {
            "snapshot": args.snapshot,
            "full_refresh": args.full_refresh,
            "allow_mass_removal": args.allow_mass_removal,
            "verify": args.verify,
        },
    )
    exported = export_now(svc, args.destination, body, trigger="cli")
    for run in exported.runs:
        print(f"run {run.run_id}: segment {run.segment}, snapshot {run.snapshot}")
    if exported.without_snapshot:
        print(f"no snapshot yet for segment(s): {', '.join(exported.without_snapshot)}")
    if not args.wait:
        return 0
    return wait_for(svc, [r.run_id for r in exported.runs], args.timeout)
