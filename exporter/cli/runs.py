"""`exporter runs`: list runs, show one (with its reject report), follow runs to their end (the
ones named, or every active one)."""

from __future__ import annotations

import argparse
import json
import sys

from exporter.admin.runs import active_runs, download_report, find_runs, run_details
from exporter.admin.views import details_json, run_json, summary
from exporter.cli.connect import connect
from exporter.cli.progress import wait_for
from exporter.flow.services import Services

LIST_ROW = "{:<28} {:<21} {:<20} {:<40} {:>9} {:>9}"
NO_RUNS = "no runs yet (export a file with: exporter export FILE --segment NAME)"


def command(args: argparse.Namespace) -> int:
    _, svc = connect(args.settings)
    if args.runs_command == "list":
        return _list(svc, args)
    if args.runs_command == "follow":
        return _follow(svc, args)
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


def _list(svc: Services, args: argparse.Namespace) -> int:
    found = find_runs(svc, destination=args.destination, state=args.state, limit=args.limit)
    if args.json:
        print(json.dumps({"runs": [run_json(r) for r in found]}))  # as GET /api/runs
        return 0
    if not found:
        if args.destination or args.state:
            print("no runs match (runs list without --destination and --state shows them all)")
        else:
            print(NO_RUNS)
        return 0
    print(LIST_ROW.format("RUN ID", "STATE", "DESTINATION", "SNAPSHOT", "VALID", "REJECTED"))
    for r in found:
        print(
            LIST_ROW.format(
                r.run_id, r.state, r.destination, r.snapshot, f"{r.valid:,}", f"{r.rejected:,}"
            )
        )
    return 0


def _follow(svc: Services, args: argparse.Namespace) -> int:
    run_ids = list(args.run_ids)
    if not run_ids:
        active = active_runs(svc)
        if not active:
            print("no active runs (runs list shows the latest)")
            return 0
        run_ids = [r.run_id for r in active]
        print(f"following {len(run_ids)} active run(s)", file=sys.stderr)
    return wait_for(svc, run_ids, args.timeout)
