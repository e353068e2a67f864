"""A toy function app for the local host's tests: each function records what it saw.

Records are JSON blobs in the container named by setting TOY_RESULTS, under `<function>/`, so a
test can read them back from Azurite. Queue, container and schedule names come from settings
(`%TOY_...%`), so every test gets its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from typing import Any

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk
from azure.storage.blob import BlobServiceClient

STORAGE = "AzureWebJobsStorage"
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def record(function: str, **seen: Any) -> None:
    service = BlobServiceClient.from_connection_string(os.environ[STORAGE])
    container = service.get_container_client(os.environ["TOY_RESULTS"])
    container.upload_blob(f"{function}/{uuid.uuid4().hex}.json", json.dumps(seen))


@app.queue_trigger(arg_name="msg", queue_name="%TOY_DECODE_QUEUE%", connection=STORAGE)
def decode(msg: func.QueueMessage, context: func.Context) -> None:
    record(
        "decode",
        body=msg.get_body().decode(),
        id=msg.id,
        dequeue_count=msg.dequeue_count,
        has_pop_receipt=bool(msg.pop_receipt),
        has_times=msg.insertion_time is not None and msg.expiration_time is not None,
        function_name=context.function_name,
        invocation_id=context.invocation_id,
    )


@app.queue_trigger(arg_name="msg", queue_name="%TOY_FLAKY_QUEUE%", connection=STORAGE)
def flaky(msg: func.QueueMessage) -> None:
    record("flaky", dequeue_count=msg.dequeue_count)
    if (msg.dequeue_count or 0) < 3:
        raise RuntimeError("failing on purpose until the third delivery")


@app.queue_trigger(arg_name="msg", queue_name="%TOY_FAIL_QUEUE%", connection=STORAGE)
def always_fails(msg: func.QueueMessage) -> None:
    record("always_fails", dequeue_count=msg.dequeue_count)
    raise RuntimeError("failing on purpose, always")


@app.queue_trigger(arg_name="msg", queue_name="%TOY_SLOW_QUEUE%", connection=STORAGE)
def slow(msg: str) -> None:
    """Sleeps 0.4 s, or as many seconds as the message says when it is a number."""
    started = time.time()
    record("slow_started", body=msg)
    time.sleep(float(msg) if msg.replace(".", "", 1).isdigit() else 0.4)
    record("slow", body=msg, started=started, finished=time.time())


@app.blob_trigger(
    arg_name="stream",
    path="%TOY_VERSIONS_CONTAINER%/in/{name}",
    connection=STORAGE,
    source=func.BlobSource.EVENT_GRID,
)
def versions(stream: func.InputStream) -> None:
    content = stream.read()
    record(
        "versions",
        name=stream.name,
        length=stream.length,
        uri=stream.uri,
        content=content.decode(),
    )


@app.blob_trigger(arg_name="stream", path="%TOY_POISON_CONTAINER%/{name}", connection=STORAGE)
def blob_fails(stream: func.InputStream) -> None:
    record("blob_fails", name=stream.name)
    raise RuntimeError("failing on purpose, always")


@app.blob_trigger(
    arg_name="client", path="%TOY_SDK_CONTAINER%/{segment}/{name}", connection=STORAGE
)
def sdk_client(client: blob_sdk.BlobClient) -> None:
    digest = hashlib.sha256()
    size = 0
    for chunk in client.download_blob().chunks():
        digest.update(chunk)
        size += len(chunk)
    record(
        "sdk_client",
        type=f"{type(client).__module__}.{type(client).__qualname__}",
        blob_name=client.blob_name,
        sha256=digest.hexdigest(),
        size=size,
    )


@app.timer_trigger(arg_name="timer", schedule="%TOY_TIMER_SCHEDULE%", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due, next=timer.schedule_status.get("Next"))


@app.route(route="echo/{name}/{count:int?}", methods=["GET", "POST"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    payload = {
        "method": req.method,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(json.dumps(payload), mimetype="application/json")


@app.route(route="enqueue", auth_level=func.AuthLevel.ANONYMOUS, methods=["POST"])
@app.queue_output(arg_name="out", queue_name="%TOY_OUTPUT_QUEUE%", connection=STORAGE)
async def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    return func.HttpResponse("queued", status_code=202)


@app.route(route="broken", auth_level=func.AuthLevel.ANONYMOUS)
def broken(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("failing on purpose")
