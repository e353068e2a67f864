"""Reading runs: find them, the active ones, a run's details with reject samples, its reject
report."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, get_args

from exporter.admin.errors import NotFoundError
from exporter.admin.views import RejectSample, RunDetails
from exporter.core.errors import InputError
from exporter.flow.services import Services
from exporter.model.runs import FINAL_STATES, RunRecord, RunState
from exporter.ports.storage import AdminStorage

RUN_STATES: Final = frozenset(get_args(RunState))
SAMPLES_PER_REASON: Final = 3
SAMPLE_BYTES: Final = 256 << 10
"""Reject samples come from the head of the report: a bounded read, however large it is."""


def find_runs(
    svc: Services,
    *,
    destination: str | None = None,
    state: str | None = None,
    limit: int = 50,
    segment: str | None = None,
    since: datetime | None = None,
) -> list[RunRecord]:
    """The newest runs first, optionally of one destination, of one segment, in one state, and
    requested at or after `since` (aware)."""
    if state is not None and state not in RUN_STATES:
        raise InputError(f"state must be one of {', '.join(sorted(RUN_STATES))}")
    if not 1 <= limit <= 1000:
        raise InputError("limit must be from 1 to 1000")
    if since is not None and since.utcoffset() is None:
        raise InputError("since needs a time zone (UTC: end it with Z)")
    filtered = bool(state or segment or since)
    found = svc.ledger.runs(destination or None, limit=1_000_000 if filtered else limit)
    return [
        r
        for r in found
        if (state is None or r.state == state)
        and (not segment or r.segment == segment)
        and (since is None or r.created_at >= since)
    ][:limit]


def active_runs(svc: Services) -> list[RunRecord]:
    """The runs that have not ended (queued, planning, sending, confirming, verifying), the
    oldest first."""
    found = [r for r in svc.ledger.runs(limit=1_000_000) if r.state not in FINAL_STATES]
    return sorted(found, key=lambda r: r.created_at)


def run_details(svc: Services, run_id: str) -> RunDetails:
    run = svc.ledger.get_run(run_id) if run_id else None
    if run is None:
        raise NotFoundError(f"no run {run_id!r}")
    batches = svc.ledger.batches(run_id)
    if not run.reject_report:
        return RunDetails(run, batches)
    return RunDetails(
        run,
        batches,
        samples=_reject_samples(svc.storage, run.reject_report),
        report_blob=run.reject_report,
        report_url=f"{svc.storage.app_url}/{run.reject_report}",
    )


def _reject_samples(storage: AdminStorage, blob: str) -> dict[str, list[RejectSample]]:
    """The first rows rejected for each reason, from the head of the reject report."""
    data, size = storage.read_app_blob(blob, limit=SAMPLE_BYTES)
    lines = data.decode("utf-8", "replace").splitlines()
    if size > SAMPLE_BYTES:
        lines = lines[:-1]  # cut in the middle
    samples: dict[str, list[RejectSample]] = {}
    for row in csv.DictReader(lines):
        found = samples.setdefault(row.get("reason") or "unknown", [])
        if len(found) < SAMPLES_PER_REASON:
            found.append(
                RejectSample(
                    _int(row.get("row")),
                    _int(row.get("line")),
                    row.get("message") or "",
                    row.get("partition") or "",  # reports written before it had the column
                )
            )
    return samples


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def download_report(svc: Services, run: RunRecord, write: Callable[[bytes], Any]) -> int:
    """Stream a run's reject report to `write`; returns the bytes written."""
    if not run.reject_report:
        raise NotFoundError(f"run {run.run_id} rejected no row: it has no reject report")
    written = 0
    for chunk in svc.storage.app_blob_chunks(run.reject_report):
        write(chunk)
        written += len(chunk)
    return written
