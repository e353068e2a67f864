"""Queue triggers: plan a run, send a batch, follow an import job; and their poison queues.

A transient error propagates, so the host retries the message (its dequeue count); after
`maxDequeueCount` failures the host moves it to `<queue>-poison`, where the poison handlers
record on the run which step failed and why.
"""

from __future__ import annotations

import azure.functions as func

from exporter import runs
from exporter.functions import services
from exporter.messages import (
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    POISON_SUFFIX,
    BatchMessage,
    ExportRequest,
    JobCheck,
    decode,
)

bp = func.Blueprint()
CONNECTION = "AzureWebJobsStorage"


@bp.queue_trigger(arg_name="msg", queue_name=EXPORT_REQUESTS, connection=CONNECTION)
def plan_run(msg: func.QueueMessage) -> None:
    runs.plan_run(services(), decode(ExportRequest, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=CONTACT_BATCHES, connection=CONNECTION)
def send_batch(msg: func.QueueMessage) -> None:
    runs.send_batch(services(), decode(BatchMessage, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=IMPORT_JOBS, connection=CONNECTION)
def follow_job(msg: func.QueueMessage) -> None:
    runs.follow_job(services(), decode(JobCheck, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=EXPORT_REQUESTS + POISON_SUFFIX, connection=CONNECTION)
def plan_run_poisoned(msg: func.QueueMessage) -> None:
    runs.request_poisoned(services(), decode(ExportRequest, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=CONTACT_BATCHES + POISON_SUFFIX, connection=CONNECTION)
def send_batch_poisoned(msg: func.QueueMessage) -> None:
    runs.batch_poisoned(services(), decode(BatchMessage, msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=IMPORT_JOBS + POISON_SUFFIX, connection=CONNECTION)
def follow_job_poisoned(msg: func.QueueMessage) -> None:
    runs.job_poisoned(services(), decode(JobCheck, msg.get_body()))
