"""Queue triggers: plan a run, send a batch, follow an import job, look at a run's list; and
their poison queues.

SendGrid's failures are retried by the steps themselves (the message again, with a delay); any
other error propagates, so the host retries the message (its dequeue count); after
`maxDequeueCount` failures the host moves it to `<queue>-poison`, where the poison handlers
record on the run which step failed and why.
"""

from __future__ import annotations

import azure.functions as func

from exporter import runs, sending, verification
from exporter.functions import services
from exporter.messages import (
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    POISON_SUFFIX,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
    decode,
)

bp = func.Blueprint()
CONNECTION = "AzureWebJobsStorage"


@bp.queue_trigger(arg_name="msg", queue_name=EXPORT_REQUESTS, connection=CONNECTION)
def plan_run(msg: func.QueueMessage) -> None:
    runs.plan_run(services(), decode(ExportRequest, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=CONTACT_BATCHES, connection=CONNECTION)
def send_batch(msg: func.QueueMessage) -> None:
    sending.send_batch(services(), decode(BatchMessage, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=IMPORT_JOBS, connection=CONNECTION)
def follow_job(msg: func.QueueMessage) -> None:
    sending.follow_job(services(), decode(JobCheck, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=LIST_CHECKS, connection=CONNECTION)
def check_list(msg: func.QueueMessage) -> None:
    verification.check_list(services(), decode(ListCheck, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=EXPORT_REQUESTS + POISON_SUFFIX, connection=CONNECTION)
def plan_run_poisoned(msg: func.QueueMessage) -> None:
    runs.request_poisoned(services(), decode(ExportRequest, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=CONTACT_BATCHES + POISON_SUFFIX, connection=CONNECTION)
def send_batch_poisoned(msg: func.QueueMessage) -> None:
    runs.batch_poisoned(services(), decode(BatchMessage, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=IMPORT_JOBS + POISON_SUFFIX, connection=CONNECTION)
def follow_job_poisoned(msg: func.QueueMessage) -> None:
    runs.job_poisoned(services(), decode(JobCheck, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=LIST_CHECKS + POISON_SUFFIX, connection=CONNECTION)
def check_list_poisoned(msg: func.QueueMessage) -> None:
    verification.list_check_poisoned(services(), decode(ListCheck, msg.get_body()))
