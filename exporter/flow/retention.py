"""How long the app keeps what it wrote: personal data no longer than a run needs it.

A run's contact data (batch blobs, removal lists, its pending state, what its looks found) is
deleted when the run ends (`finish.wrap_up`). What stays is the synced state (what the next run
compares against: it must) and the reject report (row numbers, reasons and partition names, no
profile values), for `REJECT_REPORT_RETENTION_DAYS` (30 by default): the timer's tick deletes
older ones, and in Azure a lifecycle rule on the storage account (infra/app/storage.bicep) does
the same. The run's record in the ledger stays, its `reject_report` emptied.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from exporter.flow.events import event
from exporter.flow.services import Services
from exporter.model.runs import RunRecord, utcnow


def sweep(svc: Services, *, at: datetime | None = None) -> int:
    """Delete reject reports older than the retention; returns how many."""
    days = svc.report_retention_days
    if not days:
        return 0
    cutoff = (at or utcnow()) - timedelta(days=days)
    deleted = 0
    for run_id in list(svc.report_blobs.reports_older_than(cutoff)):
        svc.report_blobs.delete_report(run_id)
        if svc.ledger.get_run(run_id) is not None:
            svc.ledger.update_run(run_id, _forget_report)
        deleted += 1
    if deleted:
        event("reject reports deleted", count=deleted, older_than_days=days)
    return deleted


def _forget_report(run: RunRecord) -> bool:
    if not run.reject_report:
        return False
    run.reject_report = ""
    return True
