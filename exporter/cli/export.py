"""`exporter export`: upload a snapshot (FILE --segment NAME: read whole first, nothing uploaded
when it cannot be read or no destination selects the segment), or export stored snapshots to one
destination now (--destination NAME); optionally follow the runs to their end; --json prints one
JSON object with the run ids."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from exporter.admin.exports import FileCheck, export_now, upload_checked
from exporter.admin.operations import follow, follow_runs
from exporter.admin.requests import ExportBody, parse
from exporter.cli.connect import connect
from exporter.cli.exit_codes import EXIT_FAILED, EXIT_TIMEOUT
from exporter.cli.progress import printer, summaries, wait_for
from exporter.core.errors import InputError
from exporter.flow.services import Services
from exporter.model.runs import RunRecord


def command(args: argparse.Namespace) -> int:
    if args.destination:
        if args.file is not None or args.segment:
            raise InputError(
                "give FILE --segment NAME (upload a snapshot) or --destination NAME (export "
                "stored snapshots now), not both"
            )
        if args.force:
            raise InputError("--force goes with FILE --segment NAME")
        return _export_to(args)
    if args.file is None or not args.segment:
        raise InputError("export needs FILE --segment NAME, or --destination NAME")
    if args.snapshot or args.full_refresh or args.allow_mass_removal or args.verify:
        raise InputError(
            "--snapshot, --full-refresh, --allow-mass-removal and --verify go with --destination"
        )
    _, svc = connect(args.settings)
    uploaded = upload_checked(svc, args.file, args.segment, force=args.force)
    version = uploaded.version
    answer = uploaded.as_json()
    if not args.json:
        print(f"checked {args.file}: {_kind(uploaded.check)}, {uploaded.check.rows:,} rows")
        print(f"uploaded {args.file} as segments/{version.name} (version {version.etag})")
    if not uploaded.runs:
        print(
            f"warning: no destination selects segment {args.segment!r} yet: nothing is "
            "exported until one does",
            file=sys.stderr,
        )
        return _done(args, answer, 0)
    if not args.json:
        print(f"destinations: {', '.join(d for _, d in uploaded.runs)}")
        for run_id, destination in uploaded.runs:
            print(f"run {run_id}: destination {destination}")
    if not args.wait:
        return _done(args, answer, 0)
    try:
        done = follow(svc, version, len(uploaded.runs), timeout=args.timeout, on_progress=printer())
    except TimeoutError as exc:
        return _timed_out(args, answer, exc)
    if args.json:
        return _done(args, _with_states(answer, done), _exit(done))
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
    run_ids = [r.run_id for r in exported.runs]
    if args.json:
        return _follow_json(svc, args, exported.as_json(), run_ids)
    for run in exported.runs:
        print(f"run {run.run_id}: segment {run.segment}, snapshot {run.snapshot}")
    if exported.without_snapshot:
        print(f"no snapshot yet for segment(s): {', '.join(exported.without_snapshot)}")
    if not args.wait:
        return 0
    return wait_for(svc, run_ids, args.timeout)


def _follow_json(
    svc: Services, args: argparse.Namespace, answer: dict[str, Any], run_ids: list[str]
) -> int:
    if not args.wait:
        return _done(args, answer, 0)
    try:
        done = follow_runs(svc, run_ids, timeout=args.timeout, on_progress=printer())
    except TimeoutError as exc:
        return _timed_out(args, answer, exc)
    return _done(args, _with_states(answer, done), _exit(done))


def _kind(check: FileCheck) -> str:
    kind = check.format.upper()
    if check.delimiter:
        kind += f", delimiter {check.delimiter!r}"
    if check.compressed:
        kind += ", gzip"
    return kind


def _with_states(answer: dict[str, Any], done: list[RunRecord]) -> dict[str, Any]:
    """The answer, each run with the state it ended in."""
    states = {r.run_id: r.state for r in done}
    for run in answer["runs"]:
        run["state"] = states.get(run["run_id"])
    return answer


def _exit(done: list[RunRecord]) -> int:
    return 0 if all(r.state == "succeeded" for r in done) else EXIT_FAILED


def _timed_out(args: argparse.Namespace, answer: dict[str, Any], exc: TimeoutError) -> int:
    if args.json:
        print(json.dumps(answer))
    print(f"error: timed out waiting for the runs: {exc}", file=sys.stderr)
    return EXIT_TIMEOUT


def _done(args: argparse.Namespace, answer: dict[str, Any], code: int) -> int:
    if args.json:
        print(json.dumps(answer))
    return code
