"""A run's page (`GET /runs/{run_id}`), its live numbers (`GET /runs/{run_id}/progress.json`,
polled by `static/runs.js` every second while the run has not ended) and its reject report
(`GET /runs/{run_id}/rejects.csv`, a download).

The numbers are those of `runs show` and `GET /api/runs/{id}`: `exporter.admin.views.details_json`
over `exporter.admin.runs.run_details` (the live JSON takes the same function over the run and its
batches, without the reject samples). The steps come from `exporter.admin.timeline`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Final

from exporter.admin.errors import NotFoundError, TooLarge
from exporter.admin.runs import download_report, run_details
from exporter.admin.timeline import timeline
from exporter.admin.views import RunDetails, details_json, summary
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.render import badge, number
from exporter.console.router import route
from exporter.core.redact import mask_emails
from exporter.model.runs import BatchRecord, RunRecord

MAX_RUN_ID: Final = 100
MAX_DOWNLOAD: Final = 64 << 20
"""Bytes of a reject report the console hands out (a larger one: from storage, its blob named)."""
MAX_BATCH_ROWS: Final = 200
"""Batches listed on the page (failed ones first); a run of more says how many more."""
NUMBER_GROUPS: Final = (
    (
        "Rows",
        (
            ("read", "read"),
            ("valid", "valid"),
            ("unchanged", "unchanged (not sent)"),
            ("rejected", "rejected"),
            ("duplicates", "duplicates"),
            ("blank", "blank"),
        ),
    ),
    (
        "Contacts",
        (
            ("to_send", "to send"),
            ("healed", "sent again to heal the list"),
            ("sent", "taken by SendGrid"),
            ("upserted", "upserted"),
            ("created", "created"),
            ("updated", "updated"),
            ("errored", "errored by SendGrid"),
            ("awaiting_confirmation", "awaiting confirmation"),
            ("in_failed_batches", "in failed batches"),
            ("not_sent", "not sent"),
            ("uncounted", "not counted by SendGrid's jobs"),
            ("removed", "removed from the list"),
            ("in_failed_removal_batches", "in failed removal batches"),
        ),
    ),
    (
        "Batches",
        (
            ("batches", "planned"),
            ("batches_sent", "sent"),
            ("batches_confirmed", "confirmed"),
            ("batches_failed", "failed"),
            ("batches_awaiting", "awaiting confirmation"),
            ("batches_queued", "not sent yet"),
        ),
    ),
    (
        "The list",
        (
            ("list_count", "holds (SendGrid's count)"),
            ("members", "expected from the segment"),
            ("drift", "drift"),
        ),
    ),
)
"""The numbers the page shows, by group: (key in `live()["numbers"]`, label)."""


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    status: str
    """`done`, `current`, `todo`, `failed` or `skipped` (a run that does not read its list back)."""
    text: str


def _details(ctx: Context, run_id: str) -> RunDetails:
    if not run_id or len(run_id) > MAX_RUN_ID:
        raise NotFoundError(f"no run {run_id[:MAX_RUN_ID]!r}")
    return run_details(ctx.svc, run_id)


def _run(ctx: Context, run_id: str) -> RunRecord:
    """The run's record alone (what the live JSON and the download need)."""
    run = ctx.svc.ledger.get_run(run_id) if run_id and len(run_id) <= MAX_RUN_ID else None
    if run is None:
        raise NotFoundError(f"no run {run_id[:MAX_RUN_ID]!r}")
    return run


def live(run: RunRecord, batches: list[BatchRecord]) -> dict[str, Any]:
    """What the page shows live, from `details_json` (so the same numbers as `runs show`)."""
    data = details_json(RunDetails(run, batches))
    p, contacts = data["progress"], data["contacts"]
    numbers = {
        "read": run.rows,
        "valid": run.valid,
        "unchanged": run.unchanged,
        "rejected": run.rejected,
        "duplicates": run.duplicates,
        "blank": run.blank,
        "batches": p["planned"],
        "batches_sent": p["sent"],
        "batches_confirmed": p["confirmed"],
        "batches_failed": p["failed"],
        "batches_awaiting": p["awaiting"],
        "batches_queued": p["queued"],
        "contacts": p["contacts"],
        "contacts_sent": p["contacts_sent"],
        **contacts,
        "looks": run.looks,
        "list_count": run.list_count,
        "members": run.members,
        "drift": run.drift,
    }
    stages = _stages(run, p)
    return {
        "run_id": run.run_id,
        "state": run.state,
        "badge": badge(run.state),
        "final": p["final"],
        "note": p["note"],
        "error": mask_emails(run.error),
        "percent": _percent(run, p),
        "valuetext": _valuetext(run, p),
        "stages": [{"name": s.name, "status": s.status, "text": s.text} for s in stages],
        "numbers": numbers,
        "shown": {k: number(v) if v is not None else "unknown" for k, v in numbers.items()},
    }


def _percent(run: RunRecord, p: dict[str, Any]) -> int:
    """How far the run is, for the bar: planning to 10, sending and confirming to 90 (each
    batch sent, then each confirmed or failed), reading the list back to 99, ended 100."""
    if p["final"]:
        return 100
    if run.state == "queued":
        return 0
    if run.state == "planning" or not run.planned:
        return 5
    if run.state == "verifying":
        return 95
    planned = int(p["planned"])
    if not planned:
        return 90
    done: float = 0.5 * (p["sent"] + p["failed"]) + 0.5 * (p["confirmed"] + p["failed"])
    return min(90, 10 + round(80 * done / planned))


def _valuetext(run: RunRecord, p: dict[str, Any]) -> str:
    if run.state == "skipped":
        return f"skipped: {p['note']}"
    text = f"{run.state}: read {p['read']:,} rows"
    if p["planned"]:
        text += f"; {p['confirmed']:,} of {p['planned']:,} batches confirmed"
        text += f", {p['failed']:,} failed" if p["failed"] else ""
    if p["contacts"]:
        text += f"; SendGrid took {p['contacts_sent']:,} of {p['contacts']:,} contacts"
    if p["verified"]:
        text += "; list verified"
    return text


def _stages(run: RunRecord, p: dict[str, Any]) -> list[Stage]:
    """Read, planned, sent, confirmed, verified: each done, current, still to do, failed, or
    (verified) skipped when the run does not read its list back."""
    state, final, planned = run.state, p["final"], p["planned"]
    order = ("queued", "planning", "sending", "confirming", "verifying")
    at = order.index(state) if state in order else len(order)

    def status(done: bool, current: bool) -> str:
        if done:
            return "done"
        if current and not final:
            return "current"
        return "failed" if final and state == "failed" else "todo"

    was_planned = run.planned or bool(planned)
    all_sent = was_planned and p["sent"] + p["failed"] >= planned
    all_settled = was_planned and p["confirmed"] + p["failed"] >= planned
    none = "no batch" if was_planned else "not yet"
    batches = f"{planned:,} batch{'' if planned == 1 else 'es'}"
    stages = [
        Stage("read", status(was_planned, at <= 1), f"{p['read']:,} rows"),
        Stage("planned", status(was_planned, at == 1), batches if was_planned else "not yet"),
        Stage(
            "sent",
            status(all_sent and at >= 3, at == 2),
            f"{p['sent'] + p['failed']:,} of {planned:,}" if planned else none,
        ),
        Stage(
            "confirmed",
            "failed"
            if final and all_settled and p["failed"]
            else status(all_settled and at >= 3, at == 3),
            f"{p['confirmed']:,} of {planned:,}" if planned else none,
        ),
    ]
    if run.verified:
        verified = Stage(
            "verified", "done", f"after {run.looks} look{'s' if run.looks != 1 else ''}"
        )
    elif final and not run.verify:
        verified = Stage("verified", "skipped", "not read back this run")
    elif final:
        verified = Stage("verified", "failed", "no: " + (run.verify_note or "not verified"))
    else:
        verified = Stage("verified", "current" if state == "verifying" else "todo", "pending")
    return [*stages, verified]


@route("GET", "/runs/{run_id}")
def run_page(ctx: Context, run_id: str) -> Response:
    details = _details(ctx, run_id)
    run, batches = details.run, details.batches
    data = details_json(details)
    failed_first = sorted(batches, key=lambda b: (b.state != "failed", b.round, b.index))
    return ctx.render(
        "run.html",
        run=run,
        details=data,
        live=live(run, batches),
        number_groups=NUMBER_GROUPS,
        mask=mask_emails,
        samples=details.samples,
        reasons=sorted(run.reasons.items(), key=lambda kv: (-kv[1], kv[0])),
        has_report=bool(details.report_blob),
        batches=failed_first[:MAX_BATCH_ROWS],
        more_batches=max(0, len(batches) - MAX_BATCH_ROWS),
        steps=timeline(run, batches),
        summary_text=summary(run, batches, samples=details.samples, report_url=details.report_url),
    )


@route("GET", "/runs/{run_id}/progress.json")
def run_progress(ctx: Context, run_id: str) -> Response:
    run = _run(ctx, run_id)
    return ctx.json(live(run, ctx.svc.ledger.batches(run_id)))


@route("GET", "/runs/{run_id}/rejects.csv")
def run_rejects(ctx: Context, run_id: str) -> Response:
    run = _run(ctx, run_id)
    out = io.BytesIO()

    def write(chunk: bytes) -> None:
        if out.tell() + len(chunk) > MAX_DOWNLOAD:
            raise TooLarge(
                f"the reject report is over {MAX_DOWNLOAD >> 20} MiB: fetch it from storage, "
                f"blob exporter/{run.reject_report}"
            )
        out.write(chunk)

    download_report(ctx.svc, run, write)
    return Response(
        200,
        out.getvalue(),
        {
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="rejects-{run.run_id}.csv"',
        },
    )
