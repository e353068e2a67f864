"""`python -m exporter` (also the `exporter` console script).

Exit codes: 0 done; 1 a run, a connection test or the demo's check failed, or SendGrid refused
(one line `error: ...`); 2 the input is wrong, or names what does not exist (one line
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
from pathlib import Path
from typing import Any, Literal, cast, get_args

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings, load_app_settings
from exporter.admin import commands as admin
from exporter.admin.operations import expected_destinations, follow, follow_runs, upload_snapshot
from exporter.admin.views import Progress, bar, details_json, run_json, summary
from exporter.core.batching import DEFAULT_LIMITS
from exporter.core.errors import InputError
from exporter.core.mapping import FieldMapping
from exporter.core.planning import PlanStats, plan
from exporter.core.reject_report import RejectReport
from exporter.core.samples import generate
from exporter.core.snapshots import Format, Snapshot, open_snapshot
from exporter.flow.services import Services
from exporter.model.runs import RunRecord, RunState
from exporter.ports.sendgrid import TransientError
from exporter.wiring import services_from_env

EXIT_FAILED = 1
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
        help="map a column to a SendGrid field (email, first_name, ..., or custom:NAME[:TYPE], "
        "TYPE Text, Number or Date); repeatable; an empty COLUMN leaves the field unmapped",
    )
    check.add_argument("--format", choices=("csv", "jsonl"), help="override the file name's format")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--rejects", type=Path, metavar="PATH", help="write the reject report (CSV)")

    export = commands.add_parser(
        "export",
        help="upload a snapshot (FILE --segment NAME), or export stored ones (--destination NAME)",
        description="FILE --segment NAME uploads FILE into segments/<NAME>/, which exports it to "
        "every destination selecting the segment. --destination NAME exports to that destination "
        "now: the latest snapshot of each segment it selects, or --snapshot.",
    )
    export.add_argument("file", type=Path, metavar="FILE", nargs="?")
    export.add_argument("--segment", help="the segment (folder) FILE belongs to")
    export.add_argument("--destination", metavar="NAME", help="export to this destination now")
    export.add_argument(
        "--snapshot", metavar="BLOB", help="with --destination: <segment>/<file> in segments/"
    )
    export.add_argument(
        "--full-refresh", action="store_true", help="send every contact, changed or not"
    )
    export.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="mirror mode: allow removing more than the destination's max_removal_share",
    )
    export.add_argument(
        "--verify",
        action="store_true",
        help="read the list back from SendGrid after the run and heal what differs, whatever "
        "the destination's verify cadence says",
    )
    export.add_argument("--wait", action="store_true", help="follow the runs until they end")
    export.add_argument("--timeout", type=float, default=1800, help="seconds to wait (--wait)")
    _settings_flag(export)

    _destinations_parser(commands)

    runs = commands.add_parser("runs", help="list runs, show one, or follow runs to their end")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    listing = runs_commands.add_parser("list", help="the newest runs first")
    listing.add_argument("--destination")
    listing.add_argument(
        "--state",
        metavar="STATE",
        help="only runs in this state: " + ", ".join(get_args(RunState)),
    )
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    _settings_flag(listing)
    show = runs_commands.add_parser(
        "show", help="one run: counts, reject reasons with samples, SendGrid's job errors"
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--rejects", type=Path, metavar="PATH", help="download the full reject report (CSV)"
    )
    _settings_flag(show)
    follow_runs = runs_commands.add_parser(
        "follow", help="show runs' progress (read, planned, sent, confirmed) until they end"
    )
    follow_runs.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    follow_runs.add_argument("--timeout", type=float, default=1800, help="seconds to wait")
    _settings_flag(follow_runs)

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


def _destinations_parser(commands: Any) -> None:
    parser = commands.add_parser("destinations", help="add, update, list, show, test, remove")
    actions = parser.add_subparsers(dest="destinations_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="a new destination, checked against SendGrid; needs --consent-by",
        description="Checks the key and the list (a --list-name is found, or created) before "
        "saving. The data-privacy consent is required: --consent-by names who accepted the "
        "terms (recorded with the time now, or --consent-at).",
    )
    update = actions.add_parser(
        "update",
        help="change a destination (flags given replace those fields; --map merges)",
    )
    for action in (add, update):
        action.add_argument("name", metavar="NAME", help="lower-case letters, digits and dashes")
        action.add_argument("--display-name")
        target = action.add_mutually_exclusive_group()
        target.add_argument("--list-id", help="the SendGrid list id")
        target.add_argument("--list-name", help="a SendGrid list name: found, or created")
        action.add_argument(
            "--api-key-secret",
            metavar="SETTING",
            help="the app setting (or Key Vault secret) that holds the API key, named "
            "SENDGRID_KEY_<NAME> (Key Vault: SENDGRID-KEY-<NAME>); never the key itself",
        )
        action.add_argument(
            "--segment", action="append", metavar="NAME", help="a segment it exports; repeatable"
        )
        action.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="FIELD=COLUMN",
            help="SendGrid field (email, first_name, ..., or custom:NAME[:TYPE], TYPE Text, "
            "Number or Date) from a column; repeatable",
        )
        action.add_argument("--sync-mode", choices=("upsert", "mirror"))
        action.add_argument("--profile-cap", type=int)
        action.add_argument("--max-removal-share", type=float)
        action.add_argument(
            "--full-refresh-every",
            type=int,
            metavar="N",
            help="send every contact on every Nth run of a segment (0: never)",
        )
        action.add_argument(
            "--verify-up-to",
            type=int,
            metavar="N",
            help="read the list back after every run of a segment of at most N members",
        )
        action.add_argument(
            "--verify-every",
            type=int,
            metavar="N",
            help="larger segments: read the list back every Nth run (0: only when asked)",
        )
        action.add_argument(
            "--create-missing-fields",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="create custom fields the mapping names that SendGrid lacks",
        )
        action.add_argument("--consent-by", metavar="WHO", help="who accepted the privacy terms")
        action.add_argument(
            "--consent-at", metavar="TIME", help="when (ISO 8601 with zone; default: now)"
        )
        action.add_argument(
            "--file", type=Path, metavar="JSON", help="a destination document; flags win over it"
        )
        action.add_argument("--json", action="store_true", help="print the saved document")
        _settings_flag(action)
    listing = actions.add_parser("list", help="every destination")
    listing.add_argument("--json", action="store_true")
    _settings_flag(listing)
    show = actions.add_parser("show", help="one destination's document (its key's reference only)")
    show.add_argument("name", metavar="NAME")
    _settings_flag(show)
    test = actions.add_parser("test", help="is the key valid, the list there, each field known?")
    test.add_argument("name", metavar="NAME")
    test.add_argument("--json", action="store_true")
    _settings_flag(test)
    remove = actions.add_parser(
        "remove",
        help="stop every export to it now and delete its synced state (run history stays)",
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _settings_flag(remove)


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
        if args.command == "destinations":
            return _destinations(args)
        if args.command == "up":
            return _up(args)
        if args.offline:
            return _demo_offline(args)
        return _demo(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (admin.SendGridRefused, TransientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
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
    storage, svc = _connect_to(stack.settings)
    saved = admin.add_destination(
        svc,
        "demo",
        display_name="Demo: loyal customers",
        list_name="Demo: loyal customers",
        api_key_secret="SENDGRID_KEY_DEMO",
        segments=["loyal-customers"],
        consent_by="make demo",
    )
    list_id = saved.destination.list_id
    print(f"sandbox list {list_id!r} and destination 'demo' (consent recorded)")
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
    count = client.list_count(list_id)
    print(f"the sandbox's list holds {count:,} contacts; the run sent {run.valid:,} valid ones")
    verified = "read back and found equal" if run.verified else "not read back"
    print(f"from drop to the end of the run (the list {verified}): {elapsed:.1f} s")
    if count != run.valid or run.valid != sample.valid:
        print("error: the list does not hold exactly the valid contacts", file=sys.stderr)
        return 1
    return 0 if run.state == "succeeded" else 1


def _printer() -> Callable[[dict[str, Progress]], None]:
    """Progress on stderr: one line per run, redrawn in place on a terminal (a live bar), one
    line per change otherwise (logs, pipes)."""
    tty = sys.stderr.isatty()
    last: dict[str, str] = {}
    drawn = 0

    def show(states: dict[str, Progress]) -> None:
        nonlocal drawn
        lines = {run_id: f"{run_id} {bar(state)}" for run_id, state in sorted(states.items())}
        if lines == last:
            return
        if tty:
            up = f"\x1b[{drawn}F" if drawn else ""
            sys.stderr.write(up + "".join(f"\x1b[2K{line}\n" for line in lines.values()))
            drawn = len(lines)
        else:
            for run_id, line in lines.items():
                if last.get(run_id) != line:
                    print(line, file=sys.stderr)
        sys.stderr.flush()
        last.clear()
        last.update(lines)

    return show


def _connect(settings_file: Path) -> tuple[Storage, Services]:
    settings = load_app_settings(settings_file)
    settings.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    return _connect_to(settings)


def _connect_to(settings: Mapping[str, str]) -> tuple[Storage, Services]:
    svc = services_from_env(settings)
    return cast(Storage, svc.storage), svc


def _wait_for(svc: Services, run_ids: list[str], timeout: float) -> int:
    """Follow runs to their end, print their summaries; the exit code says how they ended."""
    try:
        done = follow_runs(svc, run_ids, timeout=timeout, on_progress=_printer())
    except TimeoutError as exc:
        print(f"error: timed out waiting for the runs: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    return _summaries(svc, done)


def _summaries(svc: Services, done: list[RunRecord]) -> int:
    for run in done:
        print(summary(run, svc.ledger.batches(run.run_id)))
    return 0 if all(r.state == "succeeded" for r in done) else 1


def _export(args: argparse.Namespace) -> int:
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
    return _summaries(svc, done)


def _export_to(args: argparse.Namespace) -> int:
    _, svc = _connect(args.settings)
    body = admin.parse(
        admin.ExportBody,
        {
            "snapshot": args.snapshot,
            "full_refresh": args.full_refresh,
            "allow_mass_removal": args.allow_mass_removal,
            "verify": args.verify,
        },
    )
    exported = admin.export_now(svc, args.destination, body, trigger="cli")
    for run in exported.runs:
        print(f"run {run.run_id}: segment {run.segment}, snapshot {run.snapshot}")
    if exported.without_snapshot:
        print(f"no snapshot yet for segment(s): {', '.join(exported.without_snapshot)}")
    if not args.wait:
        return 0
    return _wait_for(svc, [r.run_id for r in exported.runs], args.timeout)


def _runs(args: argparse.Namespace) -> int:
    _, svc = _connect(args.settings)
    if args.runs_command == "list":
        found = admin.find_runs(
            svc, destination=args.destination, state=args.state, limit=args.limit
        )
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
        return _wait_for(svc, args.run_ids, args.timeout)
    details = admin.run_details(svc, args.run_id)
    if args.rejects is not None:
        with args.rejects.open("wb") as out:
            size = admin.download_report(svc, details.run, out.write)
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


# --- destinations ------------------------------------------------------------------------------


def _destinations(args: argparse.Namespace) -> int:
    _, svc = _connect(args.settings)
    command = args.destinations_command
    if command in ("add", "update"):
        return _save(svc, args)
    if command == "list":
        found = admin.list_destinations(svc)
        if args.json:
            print(json.dumps([admin.destination_json(d) for d in found]))
            return 0
        for d in found:
            consent = "consent recorded" if d.consent else "NO CONSENT: exports fail"
            print(
                f"{d.name:<24} {d.list_id}  {d.sync_mode:<6} {','.join(d.segments):<30} {consent}"
            )
        return 0
    if command == "show":
        print(json.dumps(admin.destination_json(admin.get_destination(svc, args.name)), indent=2))
        return 0
    if command == "test":
        report = admin.check_connection(svc, admin.get_destination(svc, args.name))
        if args.json:
            print(json.dumps(report.as_json()))
        else:
            for check in report.checks:
                print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<14} {check.detail}")
        return 0 if report.ok else EXIT_FAILED
    return _remove(svc, args)


def _save(svc: Services, args: argparse.Namespace) -> int:
    document: dict[str, Any] = {}
    if args.destinations_command == "update":
        document = admin.destination_json(admin.get_destination(svc, args.name))
        del document["consent"]  # kept as recorded, unless given again
    if args.file is not None:
        given = _read_document(args.file)
        if "list_name" in given:
            document.pop("list_id", None)
        document |= given
    flags = {
        "display_name": args.display_name,
        "api_key_secret": args.api_key_secret,
        "segments": args.segment,
        "sync_mode": args.sync_mode,
        "profile_cap": args.profile_cap,
        "max_removal_share": args.max_removal_share,
        "full_refresh_every": args.full_refresh_every,
        "verify_up_to": args.verify_up_to,
        "verify_every": args.verify_every,
        "create_missing_fields": args.create_missing_fields,
    }
    document |= {k: v for k, v in flags.items() if v is not None}
    if args.list_id or args.list_name:
        document.pop("list_id", None)
        document.pop("list_name", None)
        document |= {"list_id": args.list_id} if args.list_id else {"list_name": args.list_name}
    if args.map:
        mapping = dict(document.get("mapping") or {})
        for item in args.map:
            field, sep, column = item.partition("=")
            if not sep or not field.strip():
                raise InputError(f"--map {item!r}: expected FIELD=COLUMN")
            mapping[field.strip()] = column.strip()
        document["mapping"] = mapping
    if args.consent_by:
        document["consent"] = {"accepted_by": args.consent_by, "accepted_at": args.consent_at}
    elif args.consent_at:
        raise InputError("--consent-at goes with --consent-by")
    if args.destinations_command == "add":
        document.setdefault("display_name", args.name)
    document["name"] = args.name
    mode: Literal["create", "update"] = "create" if args.destinations_command == "add" else "update"
    saved = admin.save_destination(svc, admin.parse(admin.DestinationRequest, document), mode=mode)
    d = saved.destination
    if args.json:
        print(json.dumps(admin.destination_json(d)))
        return 0
    verb = "added" if saved.created else "updated"
    made = " (created in SendGrid)" if saved.list_created else ""
    print(
        f"destination {d.name!r} {verb}: list {d.list_id}{made}, segments {', '.join(d.segments)}"
    )
    print(f"  key from {d.api_key_secret!r}; test it with: exporter destinations test {d.name}")
    return 0


def _read_document(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        data = file.read(admin.MAX_BODY_BYTES + 1)
    admin.check_size(len(data), f"{path}")
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InputError(f"{path} must hold one JSON object (a destination)")
    return document


def _remove(svc: Services, args: argparse.Namespace) -> int:
    # By name, not by its document: a removal that stopped half way (the document gone) is
    # finished by the same command again.
    name = args.name
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError(
                f"removing {name!r} stops its exports and deletes its synced "
                "state: pass --yes to confirm"
            )
        answer = input(f"remove destination {name!r}? type its name to confirm: ")
        if answer.strip() != name:
            print("not removed", file=sys.stderr)
            return EXIT_FAILED
    try:
        removal = admin.remove_destination(svc, name)
    except admin.RemovalIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    done = "removed" if removal.document_deleted else "removed (its document was gone already)"
    print(
        f"destination {removal.destination!r} {done}: {len(removal.stopped_runs)} unfinished "
        f"run(s) stopped, {removal.state_blobs_deleted} synced-state blob(s) and "
        f"{removal.run_blobs_deleted} batch blob(s) deleted; its run history stays"
    )
    for run_id in removal.stopped_runs:
        print(f"  stopped run {run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
