"""`exporter check`: dry-run a snapshot offline and report what an export would find.

With `--destination NAME` the file is read with that destination's mapping (the document read
from storage through the CLI's settings; `--map` adds to it or overrides it). Nothing is sent.
The first valid contact is shown as SendGrid would receive it: the user's own file on their own
terminal, shown as it is (never logged)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from exporter.admin.destinations import get_destination
from exporter.admin.preview import dry_run_source, summary
from exporter.cli.connect import connect
from exporter.core.batching import DEFAULT_LIMITS
from exporter.core.mapping import FieldMapping, field_spec
from exporter.core.reject_report import RejectReport
from exporter.core.snapshots.formats import Format


def command(args: argparse.Namespace) -> int:
    mapping = FieldMapping.parse(args.map)
    name = getattr(args, "destination", None)
    if name:
        mapping = over(destination_mapping(args.settings, name), mapping)
    summary = run_check(args.file, mapping, args.format, args.rejects)
    summary["destination"] = name or None
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(render(summary, args.rejects))
    return 0


def destination_mapping(settings: Path, name: str) -> FieldMapping:
    """The mapping of destination `name`, from the storage the settings file names."""
    _, svc = connect(settings)
    return get_destination(svc, name).field_mapping()


def over(base: FieldMapping, given: FieldMapping) -> FieldMapping:
    """`given` (the command line's --map) over `base` (a destination's mapping): a field mapped
    in both takes the command line's column (`custom:x` and `custom:x:Number` are one field)."""
    mine = {field_spec(name).name for name in given.explicit}
    kept = {k: v for k, v in base.explicit.items() if field_spec(k).name not in mine}
    return FieldMapping({**kept, **given.explicit}, base.use_defaults and given.use_defaults)


def run_check(
    path: Path, mapping: FieldMapping, format: Format | None, rejects: Path | None
) -> dict[str, Any]:
    report = RejectReport(rejects) if rejects else None
    try:
        result = dry_run_source(path, mapping, format=format, on_reject=report)
    except BaseException:
        if report is not None and rejects is not None:
            report.close()
            rejects.unlink(missing_ok=True)  # a partial report would mislead
        raise
    if report is not None:
        report.close()
    first = result.first.first
    sample = json.loads(first) if first is not None else None
    return summary(str(path), result.snapshot, result.stats) | {"sample": sample}


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
    if summary.get("destination"):
        lines[-1] += f" (the mapping of destination {summary['destination']!r})"
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
    lines += _sample_lines(summary.get("sample"))
    return "\n".join(lines)


def _sample_lines(sample: dict[str, Any] | None) -> list[str]:
    if sample is None:
        return ["sample contact: none (no valid row)"]
    by_name = " (custom fields by name: SendGrid takes them by field id)"
    return [
        "sample contact, the first valid row as SendGrid would receive it"
        + (by_name if "custom_fields" in sample else "")
        + ":",
        "  " + json.dumps(sample, ensure_ascii=False),
    ]
