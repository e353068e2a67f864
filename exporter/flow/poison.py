"""The poison queues' handlers: a step failed on every delivery (the host moved its message to
`<queue>-poison`), so what it was doing ends, with the reason recorded where people look.

None of them raises: a message naming a run or batch that does not exist is logged and dropped,
and a failure of the handler itself is logged (nothing ends in a `<queue>-poison-poison` queue).
"""

from __future__ import annotations

from exporter.flow import cdm_folders, finish, sending, verification
from exporter.flow.services import Services
from exporter.model.messages import (
    CDM_MANIFESTS,
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    POISON_SUFFIX,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
    ManifestCheck,
    log_dropped,
    log_handler_failed,
)
from exporter.model.versions import SnapshotVersion


def request_poisoned(svc: Services, request: ExportRequest) -> None:
    """Every attempt to plan the run failed: it ends `failed` with the last error. Never raises:
    a request naming a run that does not exist is logged and dropped."""
    queue = EXPORT_REQUESTS + POISON_SUFFIX
    try:
        run = svc.ledger.get_run(request.run_id)
        if run is None:
            log_dropped(queue, f"run {request.run_id} does not exist", request.encode())
            return
        last = run.error or "no error was recorded"
        finish.fail_run(svc, request.run_id, f"planning failed on every attempt; the last: {last}")
    except Exception as exc:
        log_handler_failed(queue, exc, request.encode())


def batch_poisoned(svc: Services, message: BatchMessage) -> None:
    """Every attempt to send a batch failed: the batch fails with the last error (and the run
    settles). Never raises: a message naming a batch that does not exist is logged and dropped."""
    _fail_poisoned_batch(
        svc, CONTACT_BATCHES + POISON_SUFFIX, message, "sending failed on every attempt"
    )


def job_poisoned(svc: Services, message: JobCheck) -> None:
    """Every attempt to check a batch's import job failed: the batch fails with the last error.
    Never raises: a message naming a batch that does not exist is logged and dropped."""
    _fail_poisoned_batch(
        svc,
        IMPORT_JOBS + POISON_SUFFIX,
        message,
        "the import job could not be checked on any attempt",
    )


def _fail_poisoned_batch(
    svc: Services, queue: str, message: BatchMessage | JobCheck, what: str
) -> None:
    try:
        batch = svc.ledger.get_batch(message.run_id, message.batch)
        if batch is None:
            run = svc.ledger.get_run(message.run_id)
            why = (
                f"run {message.run_id} does not exist"
                if run is None
                else f"run {message.run_id} has no batch {message.batch}"
            )
            log_dropped(queue, why, message.encode())
            return
        last = batch.error or "no error was recorded"
        sending.fail_batch(svc, message.run_id, message.batch, f"{what}; the last: {last}")
    except Exception as exc:
        log_handler_failed(queue, exc, message.encode())


def list_check_poisoned(svc: Services, message: ListCheck) -> None:
    """Every attempt at a look failed (not SendGrid: the host's logs say why): the run ends
    unverified rather than waiting forever. Never raises: a message naming a run that does
    not exist is logged and dropped, a stale one (the run ended, or took another look since)
    changes nothing, and a failure of this handler is logged."""
    queue = LIST_CHECKS + POISON_SUFFIX
    try:
        run = svc.ledger.get_run(message.run_id)
        if run is None:
            log_dropped(queue, f"run {message.run_id} does not exist", message.encode())
            return
        if run.final or message.look != run.looks:
            return
        verification.give_up(
            svc, run, message, "the look at the list failed on every attempt (see the logs)"
        )
    except Exception as exc:
        log_handler_failed(queue, exc, message.encode())


def manifest_poisoned(svc: Services, message: ManifestCheck) -> None:
    """Every attempt to look at a CDM folder failed: export what is complete, and end the
    entities still waiting with a run that says so (never a silent drop). Never raises: a
    model.json that is gone or replaced is logged and dropped; a failure is logged."""
    queue = CDM_MANIFESTS + POISON_SUFFIX
    try:
        version = SnapshotVersion(message.manifest, message.etag, message.written_at, message.size)
        reason = (
            f"{message.manifest} could not be checked on any attempt (the host's logs say "
            "why), so this entity was not exported; upload the folder's model.json again "
            "to retry"
        )
        cdm_folders.on_manifest(svc, version, checks=message.checks, give_up=reason)
    except Exception as exc:
        log_handler_failed(queue, exc, message.encode())
