"""`exporter runs`: list runs, show one (with its reject report), follow runs to their end."""

from __future__ import annotations

import argparse
import json
import sys

from exporter.admin.runs import download_report, find_runs, run_details
from exporter.admin.views import details_json, run_json, summary
from exporter.cli.connect import connect
from exporter.cli.progress import wait_for


def command(args: argparse.Namespace) -> int:
    _, svc = connect(args.settings)
    if args.runs_command == "list":
        found = find_runs(svc, destination=args.destination, state=args.state, limit=args.limit)
        if args.json:
            print(json.dumps([run_json(r) for r in found]))
            return 0
        for r in found:
            print(
                f"{r.run_id}  {r.state:<21} {r.destination:<20} {r.snapshot:<40} "
                f"valid {r.valid:>9,}  rejected {r.rejected:>7,}"
            )
        return 0
    if args.runs_command == "follow":
        return wait_for(svc, args.run_ids, args.timeout)
    details = run_details(svc, args.run_id)
    if args.rejects is not None:
        with args.rejects.open("wb") as out:
            size = download_report(svc, details.run, out.write)
        print(f"reject report: {size:,} bytes written to {args.rejects}", file=sys.stderr)
    if args.json:
        print(json.dumps(details_json(details)))
    else:
        print(
            summary(
                details.run,
                details.batches,
                samples=details.samples,
                report_url=details.report_url,
            )
        )
    return 0
