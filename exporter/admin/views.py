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

from exporter.admin.counts import Counts, counts, counts_json
from exporter.core.redact import mask_emails
from exporter.core.reject_report import spreadsheet_safe
from exporter.flow.sending import REMOVED
from exporter.model.layout import APP_CONTAINER
from exporter.model.runs import BatchRecord, RunRecord, differences


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands: rows read; batches planned, sent (SendGrid took them), confirmed
    (its import settled), failed; and contacts to send and taken. Every batch is one of
    confirmed, failed, awaiting (sent, not confirmed) or queued (not sent)."""

    state: str
    read: int
    planned: int
    sent: int
    confirmed: int
    failed: int

    looks: int = 0
    """Looks taken at the list (SendGrid exports of it read back)."""
    verified: bool = False
    awaiting: int = 0
    queued: int = 0
    contacts: int = 0
    """Contacts to send (with those sent again to heal the list)."""
    contacts_sent: int = 0
    """Contacts SendGrid took (202)."""
    note: str = ""
    """Why a run was skipped, or that its destination was removed (else empty)."""

    @property
    def final(self) -> bool:
        return self.state in ("succeeded", "succeeded_with_errors", "failed", "skipped")


def progress(run: RunRecord, batches: list[BatchRecord]) -> Progress:
    c = counts(run, batches)
    return Progress(
        state=run.state,
        read=run.rows,
        planned=c.batches,
        sent=c.confirmed + c.awaiting,
        confirmed=c.confirmed,
        failed=c.failed,
        looks=run.looks,
        verified=run.verified,
        awaiting=c.awaiting,
        queued=c.unsent,
        contacts=c.to_send + c.healed,
        contacts_sent=c.sent,
        note=_note(run),
    )


def _note(run: RunRecord) -> str:
    """A skipped run's reason, or that the run's destination was removed, in a few words."""
    if run.state == "skipped":
        return run.error or "skipped"
    if run.final and run.error.startswith(REMOVED):
        return "stopped: " + REMOVED
    return ""


def bar(p: Progress, width: int = 30) -> str:
    """`[###xx-----] read 10,000, SendGrid took 4,000 of 10,000 contacts; 10 batches: 3
    confirmed, 2 failed, 1 awaiting confirmation, 4 to send  (sending)`: `#` a confirmed batch,
    `x` a failed one, `-` one not settled."""
    if p.state == "skipped":
        return f"[{'-' * width}] skipped: {p.note}"
    total = max(p.planned, 1)
    nothing_to_send = p.state in ("succeeded", "succeeded_with_errors")  # and no batch: done
    good = round(width * p.confirmed / total) if p.planned else (width if nothing_to_send else 0)
    bad = round(width * (p.confirmed + p.failed) / total) - good if p.planned else 0
    parts = [f"{p.confirmed:,} confirmed", f"{p.failed:,} failed"]
    if p.awaiting:
        parts.append(f"{p.awaiting:,} awaiting confirmation")
    if p.queued:
        parts.append(f"{p.queued:,} " + ("not sent" if p.final else "to send"))
    return (
        f"[{'#' * good}{'x' * bad}{'-' * (width - good - bad)}] read {p.read:,}, "
        f"SendGrid took {p.contacts_sent:,} of {p.contacts:,} contacts; "
        f"{p.planned:,} batches: {', '.join(parts)}"
        + (", list verified" if p.verified else f", {p.looks} looks at the list" if p.looks else "")
        + (f"; {p.note}" if p.note else "")
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


def _removed(run: RunRecord, c: Counts) -> str:
    parts = []
    if run.leavers:
        parts.append(f"of {run.leavers:,} who left the segment")
    if run.extra_removed:
        parts.append(f"{run.extra_removed:,} not in the segment, to heal the list")
    if c.removal_failed:
        parts.append(f"{c.removal_failed:,} in failed removal batches")
    return "; ".join(parts)


def _list_holds(run: RunRecord) -> tuple[str, int | str, str]:
    if run.list_count is None:
        note = run.list_count_note or ("not counted" if run.final else "counted at the end")
        return "list holds", "unknown", note
    drift = f", drift {run.drift:+,}" if run.drift is not None else ""
    return "list holds", run.list_count, f"{run.members:,} expected{drift}"


def _sent(c: Counts, final: bool) -> str:
    """How the contacts to send ended: taken by SendGrid, in failed batches, not sent."""
    of = f"of {c.to_send:,} to send" + (
        f" and {c.healed:,} sent again to heal the list" if c.healed else ""
    )
    parts = [f"{of}, taken by SendGrid"]
    if c.in_failed:
        parts.append(f"{c.in_failed:,} in failed batches")
    if c.not_sent:
        parts.append(f"{c.not_sent:,} " + ("never sent" if final else "not sent yet"))
    return "; ".join(parts)


def _contact_rows(run: RunRecord, c: Counts) -> list[tuple[str, int | str, str]]:
    """sent = upserted + errored (+ awaiting confirmation, + not counted by SendGrid)."""
    rows: list[tuple[str, int | str, str]] = [
        ("sent", c.sent, _sent(c, run.final)),
        ("upserted", c.upserted, f"created {c.created:,}, updated {c.updated:,}"),
        ("errored", c.errored, "contacts SendGrid did not take" if c.errored else ""),
    ]
    if c.awaiting_contacts:
        rows.append(("awaiting", c.awaiting_contacts, "taken, SendGrid's import not confirmed"))
    if c.uncounted:
        rows.append(("uncounted", c.uncounted, "taken, not counted by SendGrid's import jobs"))
    return rows


def _batch_row(c: Counts, final: bool, heal_batches: int) -> tuple[str, int | str, str]:
    """confirmed + failed + awaiting + not sent = batches."""
    parts = [f"{c.confirmed:,} confirmed", f"{c.failed:,} failed"]
    if c.awaiting:
        parts.append(f"{c.awaiting:,} awaiting confirmation")
    if c.unsent:
        parts.append(f"{c.unsent:,} " + ("never sent" if final else "not sent yet"))
    heal = f" ({heal_batches:,} sent to heal the list)" if heal_batches else ""
    return "batches", c.batches, ", ".join(parts) + heal


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
    """The run summary a person reads at the end (or at any time). Its lines add up: see
    `Counts`. A run that ended before it planned (skipped, its destination removed, no
    consent, …) says so, and that nothing was sent, instead of a table of zeros."""
    lines = [
        f"run {run.run_id}: {run.state}",
        f"  destination {run.destination}, segment {run.segment}, snapshot {run.snapshot}",
        f"  trigger {run.trigger}, started {run.created_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f", finished {run.finished_at:%H:%M:%S}" if run.finished_at else ""),
    ]
    if run.error:
        lines.append(f"  reason: {run.error}")
    c = counts(run, batches)
    if run.final and not run.planned and not batches and not run.rows:
        what = "skipped" if run.state == "skipped" else "ended before it was planned"
        lines.append(f"  {what}: nothing was read or sent")
    else:
        lines += _table(run, batches, c)
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
        where = f"SendGrid's error file: {b.errors_url}" if b.errors_url else ""
        if b.state == "done":  # a failed batch's contacts count as failed, whatever its job said
            where = f"SendGrid errored {b.errored:,} contacts" + (f"; {where}" if where else "")
        if where:
            lines.append(f"  batch {b.index}: {where}")
    lines += notification_lines(run)
    if run.reject_report:
        lines.append(f"  reject report: blob {APP_CONTAINER}/{run.reject_report}")
        if report_url:
            lines.append(f"    {report_url}")
    return "\n".join(lines)


def _table(run: RunRecord, batches: list[BatchRecord], c: Counts) -> list[str]:
    mode = run.sync_mode + (", full refresh: everyone sent" if run.full_refresh else "")
    to_send = f"{c.to_send:,} to send ({mode})"
    heal_batches = sum(1 for b in batches if b.round > 0)
    rows: list[tuple[str, int | str, str]] = [
        ("rows read", run.rows, ""),
        (
            "valid",
            run.valid,
            to_send if run.full_refresh else f"{run.unchanged:,} unchanged, {to_send}",
        ),
        ("rejected", run.rejected, _breakdown(run.reasons)),
        ("duplicates", run.duplicates, ""),
        ("blank", run.blank, ""),
        ("warnings", run.warnings, _breakdown(run.warning_kinds)),
        *_contact_rows(run, c),
        _batch_row(c, run.final, heal_batches),
        ("removed", c.removed, _removed(run, c)),
        _list_holds(run),
        _verified(run),
    ]
    return [_row(label, value, detail) for label, value, detail in rows]


def notification_lines(run: RunRecord) -> list[str]:
    """How each notification of the run went (`exporter.flow.notify`); a failed one says why."""
    lines = []
    for n in run.notifications:
        tries = f"{n.attempts} attempt" + ("s" if n.attempts != 1 else "")
        if n.state == "delivered":
            how = f"delivered ({tries}, HTTP {n.status})"
        elif n.state == "failed":
            how = f"FAILED ({tries}): {n.error}"
        else:
            how = f"queued, retrying ({n.error})" if n.attempts else "queued"
        lines.append(f"  notify     {n.target} ({n.kind}) {n.event}: {how}")
    return lines


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
        "contacts": counts_json(counts(run, batches)),
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
