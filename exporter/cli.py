"""`python -m exporter` (also the `exporter` console script).

Exit codes: 0 done; 2 the input is wrong (one line `error: ...` on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.batching import DEFAULT_LIMITS
from exporter.errors import InputError
from exporter.mapping import FieldMapping
from exporter.planning import PlanStats, plan
from exporter.reports import RejectReport
from exporter.samples import generate
from exporter.snapshots import Format, Snapshot, open_snapshot

EXIT_INPUT = 2


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

    sandbox = commands.add_parser(
        "sandbox",
        help="run the local SendGrid sandbox (same flags as python -m exporter.local.sandbox)",
        add_help=False,
    )
    sandbox.add_argument("args", nargs=argparse.REMAINDER)

    demo = commands.add_parser(
        "demo", help="generate a 50k-profile segment with some bad rows and check it"
    )
    demo.add_argument("--rows", type=int, default=50_000)
    demo.add_argument("--dir", type=Path, default=Path(".demo"))
    return parser


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


def _demo(args: argparse.Namespace) -> int:
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


if __name__ == "__main__":
    raise SystemExit(main())
