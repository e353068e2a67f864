"""`exporter snapshots`: list the snapshot files in `segments/`, show one, remove one."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from exporter.admin.snapshots import (
    SnapshotEntry,
    get_snapshot,
    list_snapshots,
    remove_snapshot,
    show_snapshot,
)
from exporter.cli.connect import connect
from exporter.cli.exit_codes import EXIT_FAILED
from exporter.core.errors import InputError
from exporter.flow.services import Services

LIST_ROW = "{:<48} {:>14}  {:<23}  {:<8} {}"
RUN_ROW = "  {:<28} {:<20} {:<21} {:<7} {}"


def command(args: argparse.Namespace) -> int:
    _, svc = connect(args.settings)
    action = args.snapshots_command
    if action == "list":
        return _list(svc, args)
    if action == "show":
        return _show(svc, args)
    return _remove(svc, args)


def _list(svc: Services, args: argparse.Namespace) -> int:
    listing = list_snapshots(svc, args.segment, limit=args.limit)
    if args.json:
        print(json.dumps(listing.as_json()))
        return 0
    if not listing.snapshots:
        of = f" of segment {args.segment!r}" if args.segment else ""
        print(f"no snapshots{of} yet (upload one with: exporter export FILE --segment NAME)")
        return 0
    print(LIST_ROW.format("SNAPSHOT", "SIZE", "LAST MODIFIED", "FORMAT", "NEWEST").rstrip())
    for entry in listing.snapshots:
        print(_row(entry).rstrip())
    if listing.truncated:
        print(
            f"(the first {len(listing.snapshots):,} only: use --segment, or a larger --limit)",
            file=sys.stderr,
        )
    return 0


def _row(entry: SnapshotEntry) -> str:
    shown = entry.as_json()
    return LIST_ROW.format(
        shown["name"],
        f"{shown['size']:,}",
        _time(entry.version.last_modified),
        _format(shown),
        "newest" if entry.newest else "",
    )


def _show(svc: Services, args: argparse.Namespace) -> int:
    details = show_snapshot(svc, args.name)
    shown = details.as_json()
    if args.json:
        print(json.dumps(shown))
        return 0
    newest = "the newest of its segment" if details.entry.newest else "not the newest"
    lines = [
        f"snapshot   {shown['name']}  (blob segments/{shown['name']})",
        f"segment    {shown['segment']} ({newest})",
        "selected   by " + (", ".join(details.destinations) or "no destination"),
        f"size       {shown['size']:,} bytes",
        f"etag       {shown['etag']}",
        f"modified   {_time(details.entry.version.last_modified)}",
        f"format     {_content(shown)}",
        f"runs       {details.runs_total:,}"
        + (f" (the newest {len(details.runs)})" if details.runs_total > len(details.runs) else ""),
    ]
    if details.runs:
        lines.append(RUN_ROW.format("RUN ID", "DESTINATION", "STATE", "TRIGGER", "CREATED"))
        for run in shown["runs"]:
            version = "" if run["this_version"] else "  (an earlier version)"
            lines.append(
                RUN_ROW.format(
                    run["run_id"],
                    run["destination"],
                    run["state"],
                    run["trigger"],
                    _time(datetime.fromisoformat(run["created_at"])) + version,
                )
            )
    print("\n".join(lines))
    return 0


def _remove(svc: Services, args: argparse.Namespace) -> int:
    version = get_snapshot(svc, args.name)
    name = version.name
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError(
                f"removing snapshot {name!r} deletes segments/{name}: pass --yes to confirm"
            )
        answer = input(
            f"remove snapshot {name!r} ({version.size:,} bytes, "
            f"{_time(version.last_modified)})? type its name to confirm: "
        )
        if answer.strip() not in (name, f"segments/{name}"):
            print("not removed", file=sys.stderr)
            return EXIT_FAILED
    removed = remove_snapshot(svc, name, etag=version.etag)
    print(f"snapshot {name!r} removed (version {version.etag})")
    segment = name.split("/", 1)[0]
    if removed.newest:
        print(f"  the newest snapshot of segment {segment!r} is now {removed.newest}")
    else:
        print(f"  segment {segment!r} has no snapshot file left")
    if removed.skipped_runs:
        print(f"  {len(removed.skipped_runs)} run(s) that had not read it yet end skipped:")
        for run_id in removed.skipped_runs:
            print(f"    {run_id}")
    return 0


def _format(shown: dict[str, Any]) -> str:
    return str(shown["format"] or "?") + (".gz" if shown["compressed"] else "")


def _content(shown: dict[str, Any]) -> str:
    content = shown["content"]
    if content.get("readable") is False:
        return f"UNREADABLE: {content['error']} (exports of it fail; remove it?)"
    if not content.get("readable"):
        return f"{_format(shown)} ({content.get('error') or 'not read'})"
    kind = str(content["format"]).upper()
    if content["delimiter"]:
        kind += f", delimiter {content['delimiter']!r}"
    if content["compressed"]:
        kind += ", gzip"
    mappings = []
    for fitted in content["mappings"]:
        of = f" ({', '.join(fitted['destinations'])})" if fitted["destinations"] else ""
        pairs = ", ".join(f"{f} <- {c}" for f, c in fitted["mapping"].items())
        mappings.append(f"mapping{of}: {pairs}")
    return f"{kind}, {content['columns_total']:,} columns; " + "; ".join(mappings)


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
