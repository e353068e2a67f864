"""Sending a run's batches and following SendGrid's import jobs: one message, one step.

Every step is safe to repeat (delivery is at least once; an answer can be lost after the request
took effect): a batch is sent only from `queued`, a removal resumes from what it recorded, a job
is recorded only until its batch settles. SendGrid's answers decide what happens next:
- 429: the same message again, hidden until SendGrid's reset (a wait is not a failure: it costs
  no delivery attempt, and no worker sleeps through it);
- 5xx, timeouts, dropped connections, lost answers: the same message again, hidden 1, 2, 4 … 60
  seconds, at most `MAX_RETRIES` times in a row; then the batch fails with the last error;
- 401/403, other 4xx: the batch fails with SendGrid's reasons (repeating will not help).
Only what is not SendGrid's (storage errors, bugs) propagates, so the host retries the message
and, after its `maxDequeueCount`, moves it to the poison queue. Except when the run ended (or
lost its destination) while the step ran: then what failed (a batch blob deleted under its
upload, say) is what ending the run does, and the step ends with one event line (`stop_run`
ends a run whose destination is gone or without consent, whoever notices first).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final, TypeVar

from exporter.core.errors import InputError
from exporter.core.redact import mask_emails
from exporter.flow import finish, removals
from exporter.flow.events import brief, event
from exporter.flow.finish import list_gone, settle
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.messages import (
    CONTACT_BATCHES,
    IMPORT_JOBS,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
)
from exporter.model.runs import BatchRecord, RunRecord, set_fields
from exporter.ports.sendgrid import NotFound, RateLimited, Rejected, TransientError, Unauthorized

FIRST_JOB_CHECK: Final = 1.0
"""Seconds before the first look at an import job (SendGrid rarely settles one sooner)."""
MAX_JOB_CHECK_DELAY: Final = 60.0
MAX_JOB_CHECKS: Final = 200
"""About 3 hours of checking (most checks a minute apart) before a job counts as lost."""
MAX_DEFERRALS: Final = 100
"""How often a step may be put back for a rate limit before its run is told."""
MAX_RETRIES: Final = 8
"""SendGrid failures in a row (5xx, timeouts, lost answers) a step survives: with waits of 1, 2,
4 … 60 s between them, about 3 minutes of SendGrid not answering."""
MAX_RETRY_DELAY: Final = 60.0

M = TypeVar("M", ExportRequest, BatchMessage, JobCheck, ListCheck)


def retry_delay(retries: int) -> float:
    """Seconds before the next try after `retries` failures in a row (exponential, jittered)."""
    base = min(MAX_RETRY_DELAY, 2.0**retries)
    return base * random.uniform(0.75, 1.0)


REMOVED: Final = "the destination was removed"
"""How the reason of a run whose destination was removed begins (the summary says so)."""
WITHDRAWN: Final = "the destination's data-privacy consent was withdrawn"


def destination_for(svc: Services, run: RunRecord) -> Destination | str:
    """The run's destination, or why its batches must not be sent any more."""
    destination = svc.destinations.get(run.destination)
    if destination is None:
        return REMOVED
    if destination.consent is None:
        return WITHDRAWN
    return destination


def stop_run(svc: Services, run_id: str, why: str) -> RunRecord | None:
    """End a run that must not go on (its destination removed, its consent withdrawn) now,
    rather than when its messages next come round: every batch not settled fails (a queued one
    was not sent; an accepted one's import is not confirmed), then the run, saying `why` and
    how far it got. A run with nothing open ends as its batches say (`finish.finish`). Safe to
    repeat, and to race with the workers: the removal and a worker that finds the destination
    gone stop the run alike."""
    run = svc.ledger.get_run(run_id)
    if run is None or run.final:
        return run

    def stopped(batch: BatchRecord) -> bool:
        if batch.settled:
            return False
        not_done = "not sent" if batch.state == "queued" else "sent, its import not confirmed"
        batch.state, batch.error = "failed", f"{why}: the batch was {not_done}"
        return True

    open_batches = [b for b in svc.ledger.batches(run_id) if not b.settled]
    for batch in open_batches:
        svc.ledger.update_batch(run_id, batch.index, stopped)
    if run.planned and not open_batches:
        if run.verify and not run.verified:
            note = f"not read back: {why}"
            svc.ledger.update_run(run_id, lambda r: set_fields(r, verify_note=note))
        return finish.finish(svc, run_id)
    if not run.planned:
        return finish.fail_run(svc, run_id, f"{why} before the run was planned: nothing was sent")
    batches = svc.ledger.batches(run_id)
    done = sum(1 for b in batches if b.state == "done")
    return finish.fail_run(
        svc,
        run_id,
        f"{why} while the run was sending: the export was stopped with {done:,} of "
        f"{len(batches):,} batches confirmed",
    )


def queue_batches(svc: Services, run_id: str) -> None:
    """One message per batch not yet sent; then note that all are queued (a repeat that finds
    the note missing queues them again: a second message for a batch is harmless)."""
    for batch in svc.ledger.batches(run_id):
        if batch.state == "queued":
            svc.queues.send(CONTACT_BATCHES, BatchMessage(run_id=run_id, batch=batch.index))
    svc.ledger.update_run(run_id, lambda r: set_fields(r, batches_queued=True))


def fail_batch(svc: Services, run_id: str, index: int, reason: str) -> None:
    def change(batch: BatchRecord) -> bool:
        if batch.settled:
            return False
        batch.state = "failed"
        batch.error = mask_emails(reason)
        return True

    svc.ledger.update_batch(run_id, index, change)
    event("batch failed", run_id=run_id, batch=index, reason=reason)
    settle(svc, run_id)


def again(
    svc: Services,
    queue: str,
    message: M,
    exc: TransientError,
    *,
    fail: Callable[[str], None],
    note: Callable[[str], None] = lambda reason: None,
) -> None:
    """Put a step back after SendGrid failed it: until its rate limit's reset (429: no delivery
    attempt spent, at most `MAX_DEFERRALS` times), or after a growing delay (5xx, timeout,
    dropped or lost answer; `note` records why); `fail` once it failed `MAX_RETRIES` times in a
    row. Every step is safe to repeat, so a request that took effect before its answer was lost
    costs a repeat, never a wrong list."""
    reason = brief(exc)
    if isinstance(exc, RateLimited):
        if message.deferrals >= MAX_DEFERRALS:
            fail(f"still rate limited after {MAX_DEFERRALS} waits")
            return
        later = message.model_copy(update={"deferrals": message.deferrals + 1})
        svc.queues.send(queue, later, delay=exc.retry_after)
        event("step deferred", run_id=message.run_id, queue=queue, seconds=exc.retry_after)
        return
    if message.retries + 1 >= MAX_RETRIES:
        fail(f"SendGrid failed {MAX_RETRIES} times in a row; the last: {reason}")
        return
    note(reason)
    later = message.model_copy(update={"retries": message.retries + 1})
    svc.queues.send(queue, later, delay=retry_delay(message.retries))
    event("step retried", run_id=message.run_id, queue=queue, reason=reason)


def send_batch(svc: Services, message: BatchMessage) -> None:
    """Upsert one batch into the run's list (then queue the first look at its import job), or
    take one removal batch's contacts off it."""
    run_id, index = message.run_id, message.batch
    batch = svc.ledger.get_batch(run_id, index)
    run = svc.ledger.get_run(run_id)
    if batch is None or run is None:
        return  # its run is gone
    if run.final:
        return  # ended (stopped, say): its batches are not sent any more, their blobs are gone
    if batch.state == "accepted":
        # Sent already. The first delivery may have died before queueing the job check: queue
        # one (a second check of the same job is harmless; a missing one would hang the run).
        svc.queues.send(IMPORT_JOBS, JobCheck(run_id=run_id, batch=index, job_id=batch.job_id))
        return
    if batch.state != "queued":
        settle(svc, run_id)  # settled: the first delivery may have died before settling the run
        return
    destination = destination_for(svc, run)
    if isinstance(destination, str):
        stop_run(svc, run_id, destination)
        event("batch not sent", run_id=run_id, batch=index, reason=destination)
        return

    def note(reason: str) -> None:
        svc.ledger.update_batch(
            run_id, index, lambda b: set_fields(b, attempts=b.attempts + 1, error=reason)
        )

    def fail(reason: str) -> None:
        fail_batch(svc, run_id, index, reason)

    try:
        client = svc.sendgrid(destination)
        if batch.kind == "remove":
            removed = removals.remove(svc, client, run, batch)
        else:
            job_id = client.upsert([run.list_id], svc.batch_blobs.open_batch(run_id, index))
    except TransientError as exc:
        if batch.kind == "remove" and not batch.searched and not isinstance(exc, RateLimited):
            now = svc.ledger.get_batch(run_id, index)
            if now is not None and now.searched:  # the search got through: count afresh
                message = message.model_copy(update={"retries": 0})
        again(svc, CONTACT_BATCHES, message, exc, fail=fail, note=note)
        if isinstance(exc, RateLimited):
            svc.ledger.update_batch(
                run_id, index, lambda b: set_fields(b, deferrals=message.deferrals + 1)
            )
        return
    except NotFound as exc:
        if batch.kind == "remove" and _list_exists(svc, destination, run):
            # A contact the search found has left the account since: search again.
            svc.ledger.update_batch(run_id, index, lambda b: set_fields(b, searched=False))
            again(svc, CONTACT_BATCHES, message, TransientError(str(exc)), fail=fail, note=note)
            return
        fail_batch(svc, run_id, index, f"{list_gone(run.destination, run.list_id)} ({exc})")
        return
    except (Unauthorized, Rejected, InputError) as exc:
        fail_batch(svc, run_id, index, str(exc))
        return
    except Exception as exc:
        if _stopped_meanwhile(svc, run, index, exc):
            return  # expected: its blobs went with the run (an upload cut short), nothing to retry
        note(brief(exc))  # for the poison handler, if every delivery ends like this
        raise

    if batch.kind == "remove":
        svc.ledger.update_batch(
            run_id,
            index,
            lambda b: (
                set_fields(b, state="done", removed=removed, attempts=b.attempts + 1)
                if b.state == "queued"
                else False
            ),
        )
        event("removal done", run_id=run_id, batch=index, removed=removed)
        settle(svc, run_id)
        return

    def accepted(b: BatchRecord) -> bool:
        if b.state != "queued":
            return False
        b.state, b.job_id, b.error = "accepted", job_id, ""
        b.attempts += 1
        return True

    if svc.ledger.update_batch(run_id, index, accepted).job_id != job_id:
        settle(svc, run_id)  # settled meanwhile (its run stopped, say): no job to follow
        return
    svc.queues.send(
        IMPORT_JOBS, JobCheck(run_id=run_id, batch=index, job_id=job_id), delay=FIRST_JOB_CHECK
    )
    if run.state == "sending" and not _has_queued(svc, run_id):
        svc.ledger.update_run(
            run_id, lambda r: set_fields(r, state="confirming") if r.state == "sending" else False
        )
    event("batch accepted", run_id=run_id, batch=index, contacts=batch.contacts)


def _stopped_meanwhile(svc: Services, run: RunRecord, index: int, exc: Exception) -> bool:
    """Whether the run ended (or lost its destination) while this batch was being sent: then
    what failed (a batch blob deleted under the upload, which Azure answers with 412 or 404) is
    what ending it does, not a fault. The run is stopped if it is not yet; one event line, no
    traceback, and the message is done with."""
    try:
        now = svc.ledger.get_run(run.run_id)
        why = "the run ended" if now is None or now.final else destination_for(svc, run)
    except Exception:
        return False  # storage is failing too: the original error stands
    if not isinstance(why, str):
        return False
    if why != "the run ended":
        stop_run(svc, run.run_id, why)
    event(
        "batch stopped",
        run_id=run.run_id,
        batch=index,
        reason=why,
        error=type(exc).__name__,
    )
    return True


def _has_queued(svc: Services, run_id: str) -> bool:
    return any(b.state == "queued" for b in svc.ledger.batches(run_id))


def _list_exists(svc: Services, destination: Destination, run: RunRecord) -> bool:
    try:
        svc.sendgrid(destination).get_list(run.list_id)
    except NotFound:
        return False
    except (TransientError, Rejected, Unauthorized):
        return True  # unknown: the retry will tell
    return True


def follow_job(svc: Services, message: JobCheck) -> None:
    """Record a settled import job's counts, or look again later."""
    run_id, index = message.run_id, message.batch
    batch = svc.ledger.get_batch(run_id, index)
    run = svc.ledger.get_run(run_id)
    if batch is None or run is None:
        return
    if batch.settled or run.final:
        settle(svc, run_id)  # the first delivery may have died before settling the run
        return
    destination = destination_for(svc, run)
    if isinstance(destination, str):
        stop_run(svc, run_id, destination)
        event("job not followed", run_id=run_id, batch=index, reason=destination)
        return
    try:
        job = svc.sendgrid(destination).import_status(message.job_id)
    except TransientError as exc:

        def note(reason: str) -> None:
            svc.ledger.update_batch(run_id, index, lambda b: set_fields(b, error=reason))

        again(
            svc,
            IMPORT_JOBS,
            message,
            exc,
            fail=lambda why: fail_batch(
                svc, run_id, index, f"could not confirm the import job: {why}"
            ),
            note=note,
        )
        return
    except (Unauthorized, NotFound, Rejected, InputError) as exc:
        fail_batch(svc, run_id, index, f"could not confirm the import job: {exc}")
        return
    except Exception as exc:
        reason = brief(exc)  # for the poison handler, if every delivery ends like this
        svc.ledger.update_batch(run_id, index, lambda b: set_fields(b, error=reason))
        raise
    if not job.settled:
        if message.checks >= MAX_JOB_CHECKS:
            fail_batch(svc, run_id, index, "SendGrid's import job did not settle in 3 hours")
            return
        delay = min(MAX_JOB_CHECK_DELAY, FIRST_JOB_CHECK * 2 ** (message.checks + 1))
        later = message.model_copy(update={"checks": message.checks + 1, "retries": 0})
        svc.queues.send(IMPORT_JOBS, later, delay=delay)
        return

    def settled(b: BatchRecord) -> bool:
        if b.settled:
            return False
        b.requested, b.created, b.updated, b.errored = (
            job.requested,
            job.created,
            job.updated,
            job.errored,
        )
        b.errors_url = job.errors_url or ""
        if job.status == "failed":
            b.state, b.error = "failed", "SendGrid's import job failed: no contact was imported"
        else:
            b.state, b.error = "done", ""
        return True

    svc.ledger.update_batch(run_id, index, settled)
    event("job settled", run_id=run_id, batch=index, status=job.status, errored=job.errored)
    settle(svc, run_id)
