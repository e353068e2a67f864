"""`python -m exporter` (also the `exporter` console script).

Exit codes: 0 done; 1 a run (or the demo's check) failed; 2 the input is wrong (one line
`error: ...` on stderr, no traceback); 3 timed out waiting for runs.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from exporter.batching import DEFAULT_LIMITS
from exporter.destinations import Consent, Destination
from exporter.errors import InputError
from exporter.ledger import RunRecord
from exporter.mapping import FieldMapping
from exporter.operations import expected_destinations, follow, upload_snapshot
from exporter.planning import PlanStats, plan
from exporter.reporting import Progress, bar, progress, summary
from exporter.reports import RejectReport
from exporter.runs import Services
from exporter.samples import generate
from exporter.sendgrid import SendGridClient
from exporter.settings import SendGridSettings, load_app_settings
from exporter.snapshots import Format, Snapshot, open_snapshot
from exporter.storage import Storage

EXIT_INPUT = 2
EXIT_TIMEOUT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exporter", description="Keep SendGrid contact lists in step with customer segments."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="dry-run a snapshot offline: counts valid, rejected, duplicates, batches",
        description="Read a snapshot as an export would, send nothing, and report what it found.",
    )
    check.add_argument("file", type=Path, metavar="FILE", help=".csv or .jsonl, optionally .gz")
    check.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="map a column to a SendGrid field (email, first_name, ..., custom:NAME); "
        "repeatable; an empty COLUMN leaves the field unmapped",
    )
    check.add_argument("--format", choices=("csv", "jsonl"), help="override the file name's format")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--rejects", type=Path, metavar="PATH", help="write the reject report (CSV)")

    export = commands.add_parser(
        "export",
        help="upload a snapshot into segments/<segment>/ and (with --wait) follow its runs",
    )
    export.add_argument("file", type=Path, metavar="FILE")
    export.add_argument("--segment", required=True, help="the segment (folder) it belongs to")
    export.add_argument("--wait", action="store_true", help="follow the runs until they end")
    export.add_argument("--timeout", type=float, default=1800, help="seconds to wait (--wait)")
    _settings_flag(export)

    runs = commands.add_parser("runs", help="list runs, or show one")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    listing = runs_commands.add_parser("list", help="the newest runs first")
    listing.add_argument("--destination")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    _settings_flag(listing)
    show = runs_commands.add_parser("show", help="one run's summary and batches")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true")
    _settings_flag(show)

    sandbox = commands.add_parser(
        "sandbox",
        help="run the local SendGrid sandbox (same flags as python -m exporter.local.sandbox)",
        add_help=False,
    )
    sandbox.add_argument("args", nargs=argparse.REMAINDER)

    up = commands.add_parser(
        "up", help="run Azurite, the SendGrid sandbox and the Functions host until Ctrl-C"
    )
    up.add_argument("--data", type=Path, default=Path(".azurite"), help="Azurite's data folder")
    up.add_argument("--quiet", action="store_true", help="do not echo the parts' logs")

    demo = commands.add_parser(
        "demo",
        help="start the local stack, export a generated 50k-profile segment, show the result",
    )
    demo.add_argument("--rows", type=int, default=50_000)
    demo.add_argument("--dir", type=Path, default=Path(".demo"))
    demo.add_argument(
        "--offline", action="store_true", help="only check the generated file (no stack)"
    )
    return parser


def _settings_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        type=Path,
        default=Path("local.settings.json"),
        help="app settings file (its Values; the environment wins)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if args.command == "sandbox":
        # Imported here: openapi-core is slow to import and only the sandbox needs it.
        from exporter.local.sandbox import main as sandbox_main  # noqa: PLC0415

        return sandbox_main([*extra, *args.args])
    if extra:
        _parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "export":
            return _export(args)
        if args.command == "runs":
            return _runs(args)
        if args.command == "up":
            return _up(args)
        if args.offline:
            return _demo_offline(args)
        return _demo(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT


def _check(args: argparse.Namespace) -> int:
    summary = _run_check(args.file, FieldMapping.parse(args.map), args.format, args.rejects)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(_render(summary, args.rejects))
    return 0


def _run_check(
    path: Path, mapping: FieldMapping, format: Format | None, rejects: Path | None
) -> dict[str, Any]:
    report = RejectReport(rejects) if rejects else None
    try:
        with open_snapshot(path, mapping=mapping, format=format) as snapshot:
            stats = plan(snapshot, on_reject=report)
    except BaseException:
        if report is not None and rejects is not None:
            report.close()
            rejects.unlink(missing_ok=True)  # a partial report would mislead
        raise
    if report is not None:
        report.close()
    return _summary(path, snapshot, stats)


def _summary(path: Path, snapshot: Snapshot, stats: PlanStats) -> dict[str, Any]:
    mapping = snapshot.mapping
    return {
        "file": str(path),
        "format": snapshot.format,
        "compressed": snapshot.compressed,
        "delimiter": snapshot.delimiter,
        "mapping": {f.name: c for f, c in zip(mapping.fields, mapping.columns, strict=True)},
        **stats.as_dict(),
    }


def _breakdown(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _render(summary: dict[str, Any], rejects: Path | None) -> str:
    limits = DEFAULT_LIMITS
    kind = summary["format"].upper()
    if summary["delimiter"]:
        kind += f", delimiter {summary['delimiter']!r}"
    if summary["compressed"]:
        kind += ", gzip"
    lines = [
        f"{summary['file']}: {kind}",
        "mapping: " + ", ".join(f"{f} <- {c}" for f, c in summary["mapping"].items()),
    ]
    rows = [
        ("rows read", summary["rows"], ""),
        ("valid", summary["valid"], ""),
        ("rejected", summary["rejected"], _breakdown(summary["reasons"])),
        ("duplicates", summary["duplicates"], ""),
        ("blank", summary["blank"], ""),
        ("warnings", summary["warnings"], _breakdown(summary["warning_kinds"])),
        (
            "batches",
            summary["batches"],
            f"at most {limits.max_contacts:,} contacts and {limits.max_body_bytes:,} bytes each",
        ),
    ]
    for label, value, detail in rows:
        lines.append(f"  {label:<11}{value:>12,}   {detail}".rstrip())
    if rejects is not None:
        lines.append(f"reject report: {rejects} ({summary['rejected']:,} rows)")
    return "\n".join(lines)


def _demo_offline(args: argparse.Namespace) -> int:
    args.dir.mkdir(parents=True, exist_ok=True)
    segment = args.dir / "segment.csv"
    rejects = args.dir / "rejects.csv"
    sample = generate(segment, rows=args.rows, seed=7, blank_rate=0.001)
    print(
        f"generated {segment}: {sample.rows:,} profiles, {sample.invalid:,} invalid emails, "
        f"{sample.duplicates:,} duplicates"
    )
    summary = _run_check(segment, FieldMapping(), None, rejects)
    print(_render(summary, rejects))
    print("(offline dry run: nothing was sent; exporting to SendGrid comes with the function app)")
    planted = (sample.valid, sample.invalid, sample.duplicates, sample.blank)
    found = (summary["valid"], summary["rejected"], summary["duplicates"], summary["blank"])
    if found != planted:
        print(f"error: the generator planted {planted}, the check found {found}", file=sys.stderr)
        return 1
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C does, so every child is stopped on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _up(args: argparse.Namespace) -> int:
    from exporter.local.stack import Stack  # noqa: PLC0415  # local tooling, loaded on demand

    _stop_on_sigterm()
    stack = Stack(args.data.resolve(), fixed_ports=True, echo=not args.quiet)
    try:
        with stack:
            print("local stack is up (Ctrl-C stops it):")
            print("  storage  Azurite, UseDevelopmentStorage=true (ports 10000-10002)")
            print(f"  SendGrid sandbox at {stack.sandbox_url}")
            print("  Functions host, HTTP on http://127.0.0.1:7071/api")
            print("drop a snapshot with: python -m exporter export FILE --segment NAME --wait")
            sys.stdout.flush()
            while stack.host is not None and stack.host.alive():
                time.sleep(0.5)
            print("error: the Functions host stopped", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0


def _demo(args: argparse.Namespace) -> int:
    from exporter.local.stack import Stack  # noqa: PLC0415  # local tooling, loaded on demand

    _stop_on_sigterm()
    root = args.dir.resolve()
    shutil.rmtree(root / "stack", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    key = "SG.demo-" + secrets.token_hex(8)  # the sandbox takes any key; none is real here
    print("starting Azurite, the SendGrid sandbox and the Functions host ...", flush=True)
    try:
        with Stack(root / "stack", settings={"SENDGRID_KEY_DEMO": key}) as stack:
            return _demo_run(args, stack, key)
    except KeyboardInterrupt:
        print("interrupted: everything the demo started was stopped", file=sys.stderr)
        return 130


def _demo_run(args: argparse.Namespace, stack: Any, key: str) -> int:
    client = SendGridClient(key, SendGridSettings(base_url=stack.sandbox_url))
    contact_list = client.create_list("Demo: loyal customers")
    storage, svc = _connect_to(stack.settings)
    svc.destinations.put(
        Destination(
            name="demo",
            display_name="Demo: loyal customers",
            list_id=contact_list.id,
            api_key_secret="SENDGRID_KEY_DEMO",
            segments=["loyal-customers"],
            consent=Consent(accepted_by="make demo", accepted_at=datetime.now(UTC)),
        )
    )
    print(f"sandbox list {contact_list.id!r} and destination 'demo' (consent recorded)")
    segment = args.dir.resolve() / "loyal-customers.csv"
    sample = generate(segment, rows=args.rows, seed=7, blank_rate=0.001)
    print(
        f"generated {segment.name}: {sample.rows:,} profiles ({sample.invalid:,} invalid emails, "
        f"{sample.duplicates:,} duplicates, {sample.blank:,} blank rows)"
    )
    started = time.monotonic()
    version = upload_snapshot(storage, segment, "loyal-customers")
    print(f"dropped it into segments/{version.name}; following the run ...", flush=True)
    (run,) = follow(svc, version, 1, timeout=600, on_progress=_printer())
    elapsed = time.monotonic() - started
    print(summary(run, svc.ledger.batches(run.run_id)))
    count = client.list_count(contact_list.id)
    print(f"the sandbox's list holds {count:,} contacts; the run sent {run.valid:,} valid ones")
    print(f"from drop to every import job confirmed: {elapsed:.1f} s")
    if count != run.valid or run.valid != sample.valid:
        print("error: the list does not hold exactly the valid contacts", file=sys.stderr)
        return 1
    return 0 if run.state in ("succeeded", "succeeded_with_errors") else 1


def _printer() -> Callable[[dict[str, Progress]], None]:
    """Progress lines on stderr: redrawn in place on a terminal, one per change otherwise."""
    tty = sys.stderr.isatty()
    last: dict[str, str] = {}

    def show(states: dict[str, Progress]) -> None:
        for run_id, state in sorted(states.items()):
            line = f"{run_id} {bar(state)}"
            if last.get(run_id) != line:
                print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr)
                sys.stderr.flush()
                last[run_id] = line
                if tty and state.final:
                    print(file=sys.stderr)

    return show


def _connect(settings_file: Path) -> tuple[Storage, Services]:
    settings = load_app_settings(settings_file)
    settings.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    return _connect_to(settings)


def _connect_to(settings: Mapping[str, str]) -> tuple[Storage, Services]:
    svc = Services.from_env(settings)
    return cast(Storage, svc.storage), svc


def _export(args: argparse.Namespace) -> int:
    storage, svc = _connect(args.settings)
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
        done = follow(svc, version, len(destinations), timeout=args.timeout, on_progress=_printer())
    except TimeoutError as exc:
        print(f"error: timed out waiting for the runs: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    for run in done:
        print(summary(run, svc.ledger.batches(run.run_id)))
    return 0 if all(r.state in ("succeeded", "succeeded_with_errors") for r in done) else 1


def _runs(args: argparse.Namespace) -> int:
    _, svc = _connect(args.settings)
    if args.runs_command == "list":
        found = svc.ledger.runs(args.destination, limit=args.limit)
        if args.json:
            print(json.dumps([_run_json(r) for r in found], default=str))
            return 0
        for r in found:
            print(
                f"{r.run_id}  {r.state:<21} {r.destination:<20} {r.snapshot:<40} "
                f"valid {r.valid:>9,}  rejected {r.rejected:>7,}"
            )
        return 0
    run = svc.ledger.get_run(args.run_id)
    if run is None:
        raise InputError(f"no run {args.run_id!r}")
    batches = svc.ledger.batches(run.run_id)
    if args.json:
        print(
            json.dumps(_run_json(run) | {"progress": asdict(progress(run, batches))}, default=str)
        )
    else:
        print(summary(run, batches))
    return 0


def _run_json(run: RunRecord) -> dict[str, Any]:
    return asdict(run)


if __name__ == "__main__":
    raise SystemExit(main())
