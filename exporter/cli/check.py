"""`exporter check`: dry-run a snapshot offline and report what an export would find."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from exporter.core.batching import DEFAULT_LIMITS
from exporter.core.mapping import FieldMapping
from exporter.core.planning import PlanStats, plan
from exporter.core.reject_report import RejectReport
from exporter.core.snapshots.formats import Format
from exporter.core.snapshots.snapshot import Snapshot, open_snapshot


def command(args: argparse.Namespace) -> int:
    summary = run_check(args.file, FieldMapping.parse(args.map), args.format, args.rejects)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(render(summary, args.rejects))
    return 0


def run_check(
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


def render(summary: dict[str, Any], rejects: Path | None) -> str:
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
