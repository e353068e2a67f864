"""How a run reads to a person (and to a machine): progress while it runs, its details after.

Shared by the CLI and the HTTP API. Renders what the ledger and the reject report hold: counts,
reasons, row numbers; never a contact's data. A reject sample's text (its message and partition)
is shown as the report holds it, a cell that a spreadsheet would run as a formula escaped
(`exporter.core.reject_report.spreadsheet_safe`), so pasting the API's or the CLI's samples into
one is as safe as opening the report; reports written before the escaping are escaped here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from exporter.core.redact import mask_emails
from exporter.core.reject_report import spreadsheet_safe
from exporter.model.layout import APP_CONTAINER
from exporter.model.runs import BatchRecord, RunRecord, differences, totals


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands: rows read, batches planned, sent (accepted), confirmed, failed."""

    state: str
    read: int
    planned: int
    sent: int
    confirmed: int
    failed: int

    looks: int = 0
    """Looks taken at the list (SendGrid exports of it read back)."""
    verified: bool = False

    @property
    def final(self) -> bool:
        return self.state in ("succeeded", "succeeded_with_errors", "failed", "skipped")


def progress(run: RunRecord, batches: list[BatchRecord]) -> Progress:
    sums = totals(batches)
    return Progress(
        state=run.state,
        read=run.rows,
        planned=run.batches,
        sent=sums["accepted"] + sums["failed"],
        confirmed=sums["done"],
        failed=sums["failed"],
        looks=run.looks,
        verified=run.verified,
    )


def bar(p: Progress, width: int = 30) -> str:
    """`[####----] read 10,000, planned 10, sent 7, 5/10 batches confirmed, 0 failed  (sending)`."""
    total = max(p.planned, 1)
    done = p.confirmed + p.failed
    filled = round(width * done / total) if p.planned else (width if p.final else 0)
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] read {p.read:,}, planned {p.planned:,}, "
        f"sent {p.sent:,}, {done:,}/{p.planned:,} batches confirmed, {p.failed:,} failed"
        + (", list verified" if p.verified else f", {p.looks} looks at the list" if p.looks else "")
        + f"  ({p.state})"
    )


@dataclass(frozen=True, slots=True)
class RejectSample:
    """One rejected row as the reject report names it: where it is and why (no values)."""

    row: int
    line: int
    message: str
    partition: str = ""
    """The file `line` is in for a snapshot in parts (a CDM partition's blob); else empty."""

    @property
    def where(self) -> str:
        """`line 41`, or `line 41 of <partition>` when the row is in a partition."""
        return f"line {self.line:,}" + (f" of {self.shown_partition}" if self.partition else "")

    @property
    def shown_message(self) -> str:
        """The message as the CLI and the API show it: addresses masked, formula-safe."""
        return spreadsheet_safe(mask_emails(self.message))

    @property
    def shown_partition(self) -> str:
        """The partition as the CLI and the API show it: formula-safe."""
        return spreadsheet_safe(self.partition)


@dataclass(frozen=True, slots=True)
class RunDetails:
    """A run with what a person needs to judge it: batches, reject samples, the report's place."""

    run: RunRecord
    batches: list[BatchRecord]
    samples: dict[str, list[RejectSample]] = field(default_factory=dict)
    """Reason -> the first rows rejected for it (from the reject report)."""
    report_blob: str = ""
    """The reject report's blob name in the app's container (empty: no row was rejected)."""
    report_url: str = ""
    """Its URL in the app's storage account (no SAS: reading it takes access to the account)."""


def _breakdown(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _row(label: str, value: int | str, detail: str) -> str:
    shown = f"{value:>12,}" if isinstance(value, int) else f"{value:>12}"
    return f"  {label:<11}{shown}   {detail}".rstrip()


def _removed(run: RunRecord) -> str:
    parts = []
    if run.leavers:
        parts.append(f"of {run.leavers:,} who left the segment")
    if run.extra_removed:
        parts.append(f"{run.extra_removed:,} not in the segment, to heal the list")
    return "; ".join(parts)


def _list_holds(run: RunRecord) -> tuple[str, int | str, str]:
    if run.list_count is None:
        return "list holds", "unknown", run.list_count_note
    drift = f", drift {run.drift:+,}" if run.drift is not None else ""
    return "list holds", run.list_count, f"{run.members:,} expected{drift}"


def _verified(run: RunRecord) -> tuple[str, int | str, str]:
    """Whether the list was read back and held what the segment says, and what it took."""
    if run.verified:
        healed = ""
        if run.heals:
            healed = f"; healed: {run.resent:,} sent again"
            if run.extra_removed:
                healed += f", {run.extra_removed:,} removed"
        detail = f"the list holds exactly the segment (look {run.looks}{healed})"
        if run.unverifiable:
            detail += f"; fields of {run.unverifiable:,} not shown by SendGrid's export"
        return "verified", "yes", detail
    if run.missing is not None:
        return "verified", "no", f"last look: {differences(run)}; {run.verify_note}".rstrip("; ")
    return "verified", "no", run.verify_note or ("pending" if not run.final else "")


def _job_errors(batches: list[BatchRecord]) -> list[BatchRecord]:
    return [b for b in batches if b.errored or b.errors_url]


def summary(
    run: RunRecord,
    batches: list[BatchRecord],
    *,
    samples: dict[str, list[RejectSample]] | None = None,
    report_url: str = "",
) -> str:
    """The run summary a person reads at the end (or at any time)."""
    lines = [
        f"run {run.run_id}: {run.state}",
        f"  destination {run.destination}, segment {run.segment}, snapshot {run.snapshot}",
        f"  trigger {run.trigger}, started {run.created_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f", finished {run.finished_at:%H:%M:%S}" if run.finished_at else ""),
    ]
    if run.error:
        lines.append(f"  reason: {run.error}")
    mode = run.sync_mode + (", full refresh: everyone sent" if run.full_refresh else "")
    sent = f"{run.sent:,} sent ({mode})"
    heal_batches = sum(1 for b in batches if b.round > 0)
    rows: list[tuple[str, int | str, str]] = [
        ("rows read", run.rows, ""),
        ("valid", run.valid, sent if run.full_refresh else f"{run.unchanged:,} unchanged, {sent}"),
        ("rejected", run.rejected, _breakdown(run.reasons)),
        ("duplicates", run.duplicates, ""),
        ("blank", run.blank, ""),
        ("warnings", run.warnings, _breakdown(run.warning_kinds)),
        (
            "batches",
            run.batches,
            f"{run.batches_done:,} done, {run.batches_failed:,} failed"
            + (f" ({heal_batches:,} sent to heal the list)" if heal_batches else ""),
        ),
        ("upserted", run.requested, f"created {run.created:,}, updated {run.updated:,}"),
        ("errored", run.errored, "contacts SendGrid did not take" if run.errored else ""),
        ("removed", run.removed, _removed(run)),
        _list_holds(run),
        _verified(run),
    ]
    lines += [_row(label, value, detail) for label, value, detail in rows]
    for reason, found in sorted((samples or {}).items()):
        for sample in found:
            lines.append(
                f"  rejected {reason}: row {sample.row:,} ({sample.where}): {sample.shown_message}"
            )
    failed = [b for b in batches if b.state == "failed"]
    for b in failed[:5]:
        lines.append(f"  batch {b.index} failed: {b.error}")
    if len(failed) > 5:
        lines.append(f"  ... and {len(failed) - 5} more failed batches")
    for b in _job_errors(batches)[:5]:
        where = f"; SendGrid's error file: {b.errors_url}" if b.errors_url else ""
        lines.append(f"  batch {b.index}: SendGrid errored {b.errored:,} contacts{where}")
    if run.reject_report:
        lines.append(f"  reject report: blob {APP_CONTAINER}/{run.reject_report}")
        if report_url:
            lines.append(f"    {report_url}")
    return "\n".join(lines)


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run's record as JSON-ready values (times as ISO 8601 text)."""
    out = asdict(run)
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


def _sample_json(sample: RejectSample) -> dict[str, Any]:
    """A reject sample; `partition` only when the row is in one (a CDM entity's run)."""
    out: dict[str, Any] = {"row": sample.row, "line": sample.line}
    if sample.partition:
        out["partition"] = sample.shown_partition
    return out | {"message": sample.shown_message}


def details_json(details: RunDetails) -> dict[str, Any]:
    """`runs show --json` and `GET /api/runs/{id}`: the record, progress, rejects, SendGrid's
    job errors and the failed batches."""
    run, batches = details.run, details.batches
    state = progress(run, batches)
    return run_json(run) | {
        "progress": asdict(state) | {"final": state.final},
        "rejects": {
            "count": run.rejected,
            "reasons": run.reasons,
            "samples": {
                reason: [_sample_json(s) for s in found]
                for reason, found in details.samples.items()
            },
            "report": (
                {"container": APP_CONTAINER, "blob": details.report_blob, "url": details.report_url}
                if details.report_blob
                else None
            ),
        },
        "sendgrid_job_errors": [
            {"batch": b.index, "job_id": b.job_id, "errored": b.errored, "errors_url": b.errors_url}
            for b in _job_errors(batches)
        ],
        "failed_batches": [
            {"batch": b.index, "kind": b.kind, "contacts": b.contacts, "error": b.error}
            for b in batches
            if b.state == "failed"
        ],
    }
