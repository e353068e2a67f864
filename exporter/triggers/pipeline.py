"""Queue triggers: plan a run, send a batch, follow an import job, look at a run's list; and
their poison queues.

Every message is decoded defensively (`receive`): one that cannot be decoded (not JSON, a field
missing or out of range, an over-long id) is recorded in the log and dropped, never retried.
SendGrid's failures are retried by the steps themselves (the message again, with a delay); any
other error propagates, so the host retries the message (its dequeue count); after
`maxDequeueCount` failures the host moves it to `<queue>-poison`, where the poison handlers
record on the run which step failed and why. A poison handler never fails (`poisoned`): a
message naming a run or batch that does not exist is logged and dropped.
"""

from __future__ import annotations

import azure.functions as func

from exporter.flow import plan, poison, sending, verification
from exporter.model.messages import (
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    POISON_SUFFIX,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
)
from exporter.triggers import poisoned, receive, services

bp = func.Blueprint()
CONNECTION = "AzureWebJobsStorage"


@bp.queue_trigger(arg_name="msg", queue_name=EXPORT_REQUESTS, connection=CONNECTION)
def plan_run(msg: func.QueueMessage) -> None:
    request = receive(EXPORT_REQUESTS, ExportRequest, msg)
    if request is not None:
        plan.plan_run(services(), request)


@bp.queue_trigger(arg_name="msg", queue_name=CONTACT_BATCHES, connection=CONNECTION)
def send_batch(msg: func.QueueMessage) -> None:
    message = receive(CONTACT_BATCHES, BatchMessage, msg)
    if message is not None:
        sending.send_batch(services(), message)


@bp.queue_trigger(arg_name="msg", queue_name=IMPORT_JOBS, connection=CONNECTION)
def follow_job(msg: func.QueueMessage) -> None:
    check = receive(IMPORT_JOBS, JobCheck, msg)
    if check is not None:
        sending.follow_job(services(), check)


@bp.queue_trigger(arg_name="msg", queue_name=LIST_CHECKS, connection=CONNECTION)
def check_list(msg: func.QueueMessage) -> None:
    look = receive(LIST_CHECKS, ListCheck, msg)
    if look is not None:
        verification.check_list(services(), look)


@bp.queue_trigger(arg_name="msg", queue_name=EXPORT_REQUESTS + POISON_SUFFIX, connection=CONNECTION)
def plan_run_poisoned(msg: func.QueueMessage) -> None:
    poisoned(EXPORT_REQUESTS + POISON_SUFFIX, ExportRequest, msg, poison.request_poisoned)


@bp.queue_trigger(arg_name="msg", queue_name=CONTACT_BATCHES + POISON_SUFFIX, connection=CONNECTION)
def send_batch_poisoned(msg: func.QueueMessage) -> None:
    poisoned(CONTACT_BATCHES + POISON_SUFFIX, BatchMessage, msg, poison.batch_poisoned)


@bp.queue_trigger(arg_name="msg", queue_name=IMPORT_JOBS + POISON_SUFFIX, connection=CONNECTION)
def follow_job_poisoned(msg: func.QueueMessage) -> None:
    poisoned(IMPORT_JOBS + POISON_SUFFIX, JobCheck, msg, poison.job_poisoned)


@bp.queue_trigger(arg_name="msg", queue_name=LIST_CHECKS + POISON_SUFFIX, connection=CONNECTION)
def check_list_poisoned(msg: func.QueueMessage) -> None:
    poisoned(LIST_CHECKS + POISON_SUFFIX, ListCheck, msg, poison.list_check_poisoned)
