"""How a run reads to a person: progress while it runs, a summary when it has finished.

Shared by the CLI (and later the HTTP API). Reads the ledger only; never a contact's data.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.ledger import BatchRecord, RunRecord, totals


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands: rows read, batches planned, sent (accepted), confirmed, failed."""

    state: str
    rows: int
    batches: int
    sent: int
    confirmed: int
    failed: int

    @property
    def final(self) -> bool:
        return self.state in ("succeeded", "succeeded_with_errors", "failed", "skipped")


def progress(run: RunRecord, batches: list[BatchRecord]) -> Progress:
    sums = totals(batches)
    return Progress(
        state=run.state,
        rows=run.rows,
        batches=run.batches,
        sent=sums["accepted"] + sums["failed"],
        confirmed=sums["done"],
        failed=sums["failed"],
    )


def bar(p: Progress, width: int = 30) -> str:
    """`[##########----------]  12/34 batches confirmed, 0 failed  (sending)`."""
    total = max(p.batches, 1)
    done = p.confirmed + p.failed
    filled = round(width * done / total) if p.batches else (width if p.final else 0)
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {done:>5,}/{p.batches:,} batches confirmed, "
        f"{p.failed:,} failed  ({p.state})"
    )


def _breakdown(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def summary(run: RunRecord, batches: list[BatchRecord]) -> str:
    """The run summary a person reads at the end (or at any time)."""
    lines = [
        f"run {run.run_id}: {run.state}",
        f"  destination {run.destination}, segment {run.segment}, snapshot {run.snapshot}",
        f"  trigger {run.trigger}, started {run.created_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f", finished {run.finished_at:%H:%M:%S}" if run.finished_at else ""),
    ]
    if run.error:
        lines.append(f"  reason: {run.error}")
    mode = run.sync_mode + (", full refresh" if run.full_refresh else "")
    rows = [
        ("rows read", run.rows, ""),
        ("valid", run.valid, f"{run.unchanged:,} unchanged, {run.sent:,} sent ({mode})"),
        ("rejected", run.rejected, _breakdown(run.reasons)),
        ("duplicates", run.duplicates, ""),
        ("blank", run.blank, ""),
        ("warnings", run.warnings, _breakdown(run.warning_kinds)),
        ("batches", run.batches, f"{run.batches_done:,} done, {run.batches_failed:,} failed"),
        ("upserted", run.requested, f"created {run.created:,}, updated {run.updated:,}"),
        ("errored", run.errored, "contacts SendGrid did not take" if run.errored else ""),
        ("removed", run.removed, f"of {run.leavers:,} who left the segment" if run.leavers else ""),
        (
            "list holds",
            run.list_count,
            f"{run.members:,} expected, drift {run.drift:+,}" if run.list_count >= 0 else "",
        ),
    ]
    lines += [f"  {label:<11}{value:>12,}   {detail}".rstrip() for label, value, detail in rows]
    failed = [b for b in batches if b.state == "failed"]
    for b in failed[:5]:
        lines.append(f"  batch {b.index} failed: {b.error}")
    if len(failed) > 5:
        lines.append(f"  ... and {len(failed) - 5} more failed batches")
    if run.reject_report:
        lines.append(f"  reject report: blob exporter/{run.reject_report}")
    return "\n".join(lines)
