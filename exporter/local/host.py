"""A local Azure Functions host: runs the app's functions against Azurite with Azure's semantics.

Core Tools (`func start`) cannot be installed on our machines (its installer downloads from the
internet), so the local stack and the tests run the app here. The host imports `function_app.py`
from the app folder, reads its functions once through `app.get_functions()` (as the Python worker
indexes a v2 app), and drives them in-process. Users with Core Tools can run `func start` on the
same app instead.

What it reproduces of the real host:
- Settings: `local.settings.json` `Values`, overlaid by the process environment (the environment
  wins), exported to `os.environ` before the app is imported; `%NAME%` in queue names, blob paths
  and schedules is replaced from them (an unknown name stops startup).
- Connections: a binding's `connection` names a setting (default `AzureWebJobsStorage`) holding a
  storage connection string; `UseDevelopmentStorage=true` means Azurite on its default ports.
- host.json: `extensions.queues` `batchSize` (16), `newBatchThreshold` (batchSize/2),
  `maxPollingInterval`, `visibilityTimeout` (0), `maxDequeueCount` (5), `messageEncoding`
  (`base64` or `none`); `extensions.blobs.maxDegreeOfParallelism` (8 per CPU, for all blob
  triggers together); `functionTimeout`; `extensions.http.routePrefix` (`api`).
- Queue triggers: receive up to batchSize messages under a 10-minute lease, renewed at half time
  while the function runs (the local-only setting LOCAL_HOST_QUEUE_LEASE_SECONDS shortens it, so
  a killed host's messages reappear sooner), and fetch the next batch when no more than
  newBatchThreshold are in flight: up to batchSize + newBatchThreshold run at once per function,
  as in Azure. Bodies are base64-decoded (messageEncoding base64) into an
  `azure.functions.QueueMessage` with id, body, dequeue_count, insertion/expiration/next-visible
  times and pop_receipt (`str` and `bytes` annotations get the body). Success deletes the message;
  a failure (a body that is not base64 counts as one) makes it visible again after
  visibilityTimeout, and a failure at dequeue_count >= maxDequeueCount copies it, as received, to
  `<queue>-poison` and deletes it (so does receiving it with a higher dequeue count, left by a
  crash). Polling backs off from 100 ms, doubling up to maxPollingInterval while the queue is
  empty, and polls again at once after finding messages. A missing queue is created.
- Blob triggers: `container/pattern` with `{placeholders}` (only the last may span `/`); every
  blob version (ETag) is processed once: a receipt in `azure-webjobs-hosts` at
  `blobreceipts/{hostId}/Host.Functions.{name}/{etag}/{container}/{blob}` in the
  AzureWebJobsStorage account (Azure's layout; hostId from `AzureFunctionsJobHost__id`, else
  `local-host`) marks it done, so a restart does not reprocess, and an overwrite is a new version.
  Failures are retried up to maxDequeueCount times, visibilityTimeout apart; then a
  `{"Type":"BlobTrigger","FunctionId",...}` message goes to `webjobs-blobtrigger-poison` (base64,
  in the trigger's account) and the receipt is written. The value follows the annotation: an SDK
  type of `azurefunctions.extensions.bindings.blob` (`BlobClient`, `ContainerClient`,
  `StorageStreamDownloader`) gets the `azure.storage.blob` client and the host never reads the
  content; `func.InputStream`, `bytes` or `str` get the content read into memory (as the real host
  does for those types), InputStream with name `container/blob`, length and uri.
- Timer triggers: NCRONTAB (6 or 5 fields, `exporter.local.ncrontab`) in UTC, `runOnStartup`, an
  `azure.functions.TimerRequest` whose `past_due` is True when the invocation starts more than 5 s
  after its occurrence; one invocation at a time, and occurrences missed meanwhile collapse into
  one late run.
- HTTP triggers: `/{routePrefix}/{route}` with `{name}`, `{name?}`, `{*rest}` and the constraints
  int, long, bool, alpha, guid, double, float, decimal; `methods`; auth levels (ANONYMOUS: none;
  FUNCTION and ADMIN: the key from setting `LOCAL_FUNCTION_KEY`, generated and logged when unset,
  in header `x-functions-key` or query `code`, else 401); `azure.functions.HttpRequest` in,
  `HttpResponse` or `str` out; 404 for unknown routes and methods, 500 when the function fails.
- Invocations: sync functions on a pool of `PYTHON_THREADPOOL_THREAD_COUNT` threads (default
  min(32, CPUs + 4), as the Python worker), async ones on one event loop; a `context` parameter
  gets an `azure.functions.Context`; queue output bindings (`func.Out` parameters or `$return`)
  are sent after the function succeeds; `functionTimeout` (default 30 min, Flex Consumption's;
  `-1` for none) fails an invocation that runs longer. Logs carry the function, outcome, duration
  and invocation id, never a message body, blob content or configured key (a key generated because
  LOCAL_FUNCTION_KEY is unset is logged once, so that it can be used).
- Startup fails, naming the function and binding, on what would not work: an unsupported trigger
  or binding, an unknown `%SETTING%`, a missing connection, an invalid queue or container name,
  schedule or route, a parameter without a binding.
- Stopping (SIGTERM or SIGINT for the CLI) stops polling and listening, waits for invocations in
  flight and settles their messages; one still running at the timeout keeps its lease until the
  lease ends, as in Azure.

What it does not reproduce:
- Blob triggers always poll the container (every second); a binding's `source` (`EventGrid`, as
  Flex Consumption needs) is accepted and ignored. Azure retries blob invocations through an
  internal queue, so its attempt count survives a restart; here it lives in memory (a receipt
  still stops reprocessing of versions that succeeded or were poisoned). Receipts are not leased:
  this host assumes it is the only instance on the storage account. A version overwritten before
  its invocation starts is skipped; the new version triggers on its own.
- Timers keep no schedule status (`useMonitor`), so occurrences missed while the host was down are
  not run at startup; no `WEBSITE_TIME_ZONE`.
- At functionTimeout Azure restarts the host; here the invocation counts as failed (its message is
  retried), an async function is cancelled, but a sync function's thread cannot be stopped and
  runs on.
- `maxPollingInterval` defaults to 2 s here (1 min in Azure), so the local stack reacts quickly.
- Identity-based connections (`<connection>__accountName`, `__serviceUri`, ...) and Key Vault
  references: use connection strings and plain values locally. Other triggers and bindings (input
  bindings, blob or table outputs, Service Bus, Event Grid, Durable), retry policies (which do not
  apply to queue and blob triggers anyway), scale-out and per-instance concurrency, Application
  Insights, admin and health endpoints, per-function keys, CORS and HTTP streaming.
- Core Tools does not check keys locally; this host does, so a missing key fails in tests too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import hmac
import importlib.util
import inspect
import json
import logging
import math
import os
import queue
import re
import secrets
import sys
import threading
import time
import typing
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Final, Self

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.functions.blob import InputStream
from azure.functions.queue import QueueMessage as FunctionsQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient
from azure.storage.queue import LinearRetry, QueueClient
from azure.storage.queue import QueueMessage as StorageQueueMessage
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from exporter.local.ncrontab import Schedule
from exporter.local.process import configure_logging, serve_until_signal

if typing.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger("exporter.local.host")

DEFAULT_HTTP_PORT: Final = 7071
DEFAULT_HOST_ID: Final = "local-host"
DEFAULT_CONNECTION: Final = "AzureWebJobsStorage"
FUNCTION_KEY_SETTING: Final = "LOCAL_FUNCTION_KEY"
LEASE_SETTING: Final = "LOCAL_HOST_QUEUE_LEASE_SECONDS"
RECEIPTS_CONTAINER: Final = "azure-webjobs-hosts"
BLOB_POISON_QUEUE: Final = "webjobs-blobtrigger-poison"
QUEUE_LEASE_SECONDS: Final = 600.0
MIN_POLLING_INTERVAL: Final = 0.1
BLOB_POLL_INTERVAL: Final = 1.0
PAST_DUE_TOLERANCE: Final = timedelta(seconds=5)
DEFAULT_FUNCTION_TIMEOUT: Final = 1800.0
THREAD_PREFIX: Final = "local-host"
_BLOB_SDK_MODULE: Final = "azurefunctions.extensions.bindings.blob"
_BLOB_SDK_TYPES: Final = ("BlobClient", "ContainerClient", "StorageStreamDownloader")
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")
_STORAGE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?")
_ROUTE_PARAMETER = re.compile(r"\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?(\?)?\}")
_ROUTE_CONSTRAINTS: Final = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}


class HostError(Exception):
    """The app or its configuration cannot run here; the message names the function and binding."""


class FunctionTimeoutError(Exception):
    """An invocation ran longer than host.json's functionTimeout."""


class _Skip(Exception):
    """The trigger no longer applies (the blob was deleted or overwritten): nothing to retry."""


# --------------------------------------------------------------------------------------------
# Settings, host.json, connections


def load_settings(settings_file: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """Return (values from the file, all settings): the file's `Values` under the environment."""
    values: dict[str, str] = {}
    if settings_file is not None:
        try:
            document = json.loads(settings_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise HostError(f"cannot read settings file {settings_file}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise HostError(f"settings file {settings_file} is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise HostError(f"settings file {settings_file} must hold a JSON object")
        if document.get("IsEncrypted") is True:
            raise HostError(f"settings file {settings_file} is encrypted: decrypt it first")
        raw = document.get("Values", {})
        if not isinstance(raw, dict):
            raise HostError(f"settings file {settings_file}: Values must be an object")
        for name, value in raw.items():
            if not isinstance(value, str):
                raise HostError(f"settings file {settings_file}: Values.{name} must be a string")
            values[name] = value
    return values, {**values, **os.environ}


def substitute(text: str, settings: Mapping[str, str], where: str) -> str:
    """Replace `%NAME%` with the setting NAME, as the host does in binding expressions."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise HostError(
                f"{where}: setting {name!r} (referenced as %{name}%) is not defined in "
                f"local.settings.json Values or the environment"
            )
        return settings[name]

    return _SETTING_REFERENCE.sub(replace, text)


def parse_timespan(value: object, where: str) -> float:
    """A .NET TimeSpan as host.json writes it (`[d.]hh:mm:ss[.fffffff]`), in seconds."""
    if not isinstance(value, str) or (match := _TIMESPAN.fullmatch(value.strip())) is None:
        raise HostError(f"host.json {where}: {value!r} is not a time span like '00:00:30'")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The host.json settings this host honours, with the defaults it applies."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 2.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT
    route_prefix: str = "api"
    blob_parallelism: int = field(default_factory=lambda: 8 * (os.cpu_count() or 1))

    @classmethod
    def load(cls, path: Path | None) -> HostConfig:
        if path is None:
            return cls()
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise HostError(f"cannot read host.json {path}: {exc}") from exc
        if not isinstance(document, dict):
            raise HostError(f"host.json {path} must hold a JSON object")
        extensions = _object(document.get("extensions"), "extensions")
        queues = _object(extensions.get("queues"), "extensions.queues")
        http = _object(extensions.get("http"), "extensions.http")
        blobs = _object(extensions.get("blobs"), "extensions.blobs")

        batch_size = _integer(queues, "queues", "batchSize", default=16, low=1, high=32)
        threshold = _integer(
            queues, "queues", "newBatchThreshold", default=batch_size // 2, low=0, high=10_000
        )
        polling = queues.get("maxPollingInterval")
        max_polling = (
            2.0
            if polling is None
            else parse_timespan(polling, "extensions.queues.maxPollingInterval")
        )
        if max_polling < MIN_POLLING_INTERVAL:
            raise HostError("host.json extensions.queues.maxPollingInterval must be >= 100 ms")
        visibility = queues.get("visibilityTimeout")
        visibility_timeout = (
            0.0
            if visibility is None
            else parse_timespan(visibility, "extensions.queues.visibilityTimeout")
        )
        encoding = queues.get("messageEncoding", "base64")
        if not isinstance(encoding, str) or encoding.lower() not in ("base64", "none"):
            raise HostError(
                f"host.json extensions.queues.messageEncoding: {encoding!r} is not base64 or none"
            )
        timeout_value = document.get("functionTimeout")
        timeout: float | None = DEFAULT_FUNCTION_TIMEOUT
        if timeout_value is not None:
            timeout = (
                None
                if str(timeout_value).strip() == "-1"
                else parse_timespan(timeout_value, "functionTimeout")
            )
        prefix = http.get("routePrefix", "api")
        if not isinstance(prefix, str):
            raise HostError("host.json extensions.http.routePrefix must be a string")
        return cls(
            batch_size=batch_size,
            new_batch_threshold=threshold,
            max_polling_interval=max_polling,
            visibility_timeout=visibility_timeout,
            max_dequeue_count=_integer(
                queues, "queues", "maxDequeueCount", default=5, low=1, high=10_000
            ),
            message_encoding=encoding.lower(),
            function_timeout=timeout,
            route_prefix=prefix.strip("/"),
            blob_parallelism=_integer(
                blobs,
                "blobs",
                "maxDegreeOfParallelism",
                default=cls().blob_parallelism,
                low=1,
                high=10_000,
            ),
        )


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HostError(f"host.json {where} must be an object")
    return value


def _integer(
    section: Mapping[str, Any], where: str, name: str, *, default: int, low: int, high: int
) -> int:
    value = section.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise HostError(f"host.json extensions.{where}.{name}: {value!r} is not in {low}-{high}")
    return value


class _Slots:
    """An app-wide cap on concurrent blob-triggered invocations (maxDegreeOfParallelism)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()

    def free(self) -> int:
        with self._lock:
            return self._free

    def take(self) -> bool:
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        with self._lock:
            self._free += 1


def storage_connection(name: str, settings: Mapping[str, str], where: str) -> str:
    """The connection string behind a binding's `connection` setting name."""
    value = settings.get(name)
    if value:
        return value
    identity = sorted(key for key in settings if key.startswith(f"{name}__"))
    if identity:
        raise HostError(
            f"{where}: connection {name!r} is identity-based ({', '.join(identity)}), which the "
            f"local host does not support: set {name} to a connection string "
            f"(UseDevelopmentStorage=true for Azurite on its default ports)"
        )
    raise HostError(
        f"{where}: setting {name!r} (the storage connection) is not set: set it to a connection "
        f"string (UseDevelopmentStorage=true for Azurite on its default ports)"
    )


# --------------------------------------------------------------------------------------------
# The app's functions, as the host understands them


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """A function the host runs: its name and trigger type (`queueTrigger`, `httpTrigger`...)."""

    name: str
    trigger: str


class _QueueTarget:
    """Where a queue output binding sends its messages, encoded as host.json says."""

    def __init__(self, client: QueueClient, encoding: str) -> None:
        self.client = client
        self.encoding = encoding

    def send(self, value: object) -> None:
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            self._send_one(_as_bytes(item))

    def _send_one(self, body: bytes) -> None:
        text = (
            base64.b64encode(body).decode("ascii")
            if self.encoding == "base64"
            else body.decode("utf-8")
        )
        try:
            self.client.send_message(text)
        except ResourceNotFoundError:
            _create_queue(self.client)
            self.client.send_message(text)


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, func.QueueMessage):
        return item.get_body()
    raise TypeError(
        f"a queue output takes str, bytes or QueueMessage (or a list of them), "
        f"not {type(item).__name__}"
    )


def _create_queue(client: QueueClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()


@dataclass(slots=True)
class _Spec:
    """One function: what triggers it, and how its parameters are filled."""

    name: str
    user_function: Callable[..., Any]
    is_async: bool
    trigger: dict[str, Any]
    trigger_parameter: str
    value_kind: str
    context_parameter: str | None
    outputs: dict[str, _QueueTarget] = field(default_factory=dict)
    return_output: _QueueTarget | None = None

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def function_id(self) -> str:
        """The id Azure's host uses in receipts and poison messages."""
        return f"Host.Functions.{self.name}"


class _OutValue(func.Out[Any]):
    """The value a function sets on an output binding parameter."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


class _TraceContext(func._abc.TraceContext):
    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func._abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:  # the abstract type has no public concrete class
        return None


class _Context(func.Context):
    """The `context` argument: invocation id and function name, for the app's logs."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:  # declared as a type, the worker passes an instance
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func._abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> func._abc.RetryContext:
        return _RetryContext()


def _annotations(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: use the raw annotations
        return dict(getattr(function, "__annotations__", {}))


def _value_kind(trigger_type: str, annotation: Any, where: str) -> str:
    """How to build the trigger argument, from its annotation (as the worker's converters do)."""
    if annotation in (inspect.Parameter.empty, Any, None) or isinstance(annotation, str):
        return "default"
    if trigger_type in ("timerTrigger", "httpTrigger"):
        return "default"
    if annotation is bytes:
        return "bytes"
    if annotation is str:
        return "str"
    if trigger_type == "queueTrigger":
        if isinstance(annotation, type) and issubclass(annotation, func.QueueMessage):
            return "default"
        raise HostError(f"{where}: a queue trigger takes func.QueueMessage, str or bytes")
    module = getattr(annotation, "__module__", "")
    name = getattr(annotation, "__name__", "")
    if module.startswith(_BLOB_SDK_MODULE) and name in _BLOB_SDK_TYPES:
        return f"sdk:{name}"
    if isinstance(annotation, type) and issubclass(annotation, func.InputStream):
        return "default"
    raise HostError(
        f"{where}: a blob trigger takes func.InputStream, bytes, str or an SDK type from "
        f"{_BLOB_SDK_MODULE} ({', '.join(_BLOB_SDK_TYPES)}), not {annotation!r}"
    )


# --------------------------------------------------------------------------------------------
# Invocations


def _exception_of(future: concurrent.futures.Future[Any]) -> BaseException | None:
    try:
        return future.exception()
    except concurrent.futures.CancelledError as exc:
        return exc


class _Invoker:
    """Runs invocations the way the Python worker does: sync functions on a thread pool, async
    ones on one event loop; applies functionTimeout and sends output bindings on success."""

    def __init__(self, max_workers: int, timeout: float | None, function_directory: str) -> None:
        self._timeout = timeout
        self._directory = function_directory
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=f"{THREAD_PREFIX}-worker"
        )
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(self._pool)
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name=f"{THREAD_PREFIX}-asyncio", daemon=True
        )
        self._idle = threading.Condition()
        self._running = 0

    def start(self) -> None:
        self._loop_thread.start()

    def invoke(self, spec: _Spec, make_value: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Start one invocation; the future settles with its result, its error, or a timeout.

        `make_value` builds the trigger argument on the worker thread (it may read storage).
        """
        invocation_id = str(uuid.uuid4())
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        outer.set_running_or_notify_cancel()
        started = time.monotonic()
        outer.add_done_callback(lambda done: _log_outcome(spec, invocation_id, started, done))
        with self._idle:
            self._running += 1
        inner: concurrent.futures.Future[Any]
        try:
            if spec.is_async:
                coroutine = self._run_async(spec, make_value, invocation_id)
                try:
                    inner = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
                except RuntimeError:
                    coroutine.close()
                    raise
            else:
                inner = self._pool.submit(self._run_sync, spec, make_value, invocation_id)
                if self._timeout is not None:
                    message = _timeout_message(spec, self._timeout)
                    self._loop.call_soon_threadsafe(
                        self._arm_timeout, outer, self._timeout, message
                    )
        except RuntimeError as exc:  # the host is shutting down
            with self._idle:
                self._running -= 1
                self._idle.notify_all()
            outer.set_exception(exc)
            return outer
        inner.add_done_callback(lambda done: self._settle(outer, done))
        return outer

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout=max(0.0, timeout))

    def shutdown(self, timeout: float) -> None:
        """Wait for running invocations (up to `timeout`), then stop the pool and the loop."""
        idle = self.wait_idle(timeout)
        if not idle:
            logger.warning("stopping with invocations still running: they are abandoned")
        self._pool.shutdown(wait=idle, cancel_futures=True)
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel_tasks_and_stop)
            self._loop_thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def _cancel_tasks_and_stop(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.stop()

    def _arguments(
        self, spec: _Spec, value: Any, invocation_id: str
    ) -> tuple[dict[str, Any], dict[str, _OutValue]]:
        arguments: dict[str, Any] = {spec.trigger_parameter: value}
        if spec.context_parameter is not None:
            arguments[spec.context_parameter] = _Context(invocation_id, spec.name, self._directory)
        outs = {name: _OutValue() for name in spec.outputs}
        arguments.update(outs)
        return arguments, outs

    @staticmethod
    def _flush(spec: _Spec, outs: Mapping[str, _OutValue], result: Any) -> None:
        for name, out in outs.items():
            if out.value is not None:
                spec.outputs[name].send(out.value)
        if spec.return_output is not None and result is not None:
            spec.return_output.send(result)

    def _run_sync(self, spec: _Spec, make_value: Callable[[], Any], invocation_id: str) -> Any:
        arguments, outs = self._arguments(spec, make_value(), invocation_id)
        result = spec.user_function(**arguments)
        self._flush(spec, outs, result)
        return result

    async def _run_async(
        self, spec: _Spec, make_value: Callable[[], Any], invocation_id: str
    ) -> Any:
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(None, make_value)
        arguments, outs = self._arguments(spec, value, invocation_id)
        try:
            async with asyncio.timeout(self._timeout) as scope:
                result = await spec.user_function(**arguments)
        except TimeoutError as exc:
            if scope.expired():
                raise FunctionTimeoutError(_timeout_message(spec, self._timeout)) from exc
            raise
        await loop.run_in_executor(None, self._flush, spec, outs, result)
        return result

    def _arm_timeout(
        self, outer: concurrent.futures.Future[Any], timeout: float, message: str
    ) -> None:
        if outer.done():
            return
        handle = self._loop.call_later(timeout, self._expire, outer, message)
        outer.add_done_callback(lambda _: self._call_in_loop(handle.cancel))

    def _call_in_loop(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
            self._loop.call_soon_threadsafe(callback)

    @staticmethod
    def _expire(outer: concurrent.futures.Future[Any], message: str) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            outer.set_exception(
                FunctionTimeoutError(f"{message}; its thread cannot be stopped and runs on")
            )

    def _settle(
        self, outer: concurrent.futures.Future[Any], inner: concurrent.futures.Future[Any]
    ) -> None:
        error = _exception_of(inner)
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # it timed out first
            if error is None:
                outer.set_result(inner.result())
            else:
                outer.set_exception(error)
        with self._idle:
            self._running -= 1
            self._idle.notify_all()


def _timeout_message(spec: _Spec, timeout: float | None) -> str:
    return f"{spec.name} ran longer than functionTimeout ({timeout or 0:g} s)"


def _log_outcome(
    spec: _Spec, invocation_id: str, started: float, done: concurrent.futures.Future[Any]
) -> None:
    """One line per invocation: function, outcome, duration, id; never the payload."""
    duration = (time.monotonic() - started) * 1000
    error = _exception_of(done)
    tail = f"Id={invocation_id}, Duration={duration:.0f}ms"
    if error is None:
        logger.info("Executed 'Functions.%s' (Succeeded, %s)", spec.name, tail)
    elif isinstance(error, _Skip):
        logger.info("Skipped 'Functions.%s' (%s, %s)", spec.name, error, tail)
    elif isinstance(error, FunctionTimeoutError):
        logger.error("Executed 'Functions.%s' (Timeout, %s): %s", spec.name, tail, error)
    else:
        logger.error(
            "Executed 'Functions.%s' (Failed, %s): %s",
            spec.name,
            tail,
            type(error).__name__,
            exc_info=error,
        )


# --------------------------------------------------------------------------------------------
# Listeners: one thread per queue, blob and timer function


class _Listener:
    """A polling thread that can be asked to stop (finish in-flight work) or to abandon it."""

    def __init__(self, name: str) -> None:
        self._thread = threading.Thread(target=self._guarded_run, name=name, daemon=True)
        self._stopping = threading.Event()
        self._abandoned = threading.Event()
        self._events: queue.Queue[Any] = queue.Queue()

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stopping.set()
        self._events.put(None)

    def abandon(self) -> None:
        self._abandoned.set()
        self._events.put(None)

    def join(self, timeout: float) -> bool:
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=max(0.0, timeout))
        return not self._thread.is_alive()

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception:
            logger.exception("%s stopped on an unexpected error", self._thread.name)

    def _run(self) -> None:
        raise NotImplementedError

    def _next_event(self, timeout: float) -> Iterator[Any]:
        """Events (completions) that arrive within `timeout`, then any already queued."""
        try:
            first = self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return
        yield first
        while True:
            try:
                yield self._events.get_nowait()
            except queue.Empty:
                return


@dataclass(slots=True)
class _Leased:
    message: StorageQueueMessage
    pop_receipt: str
    renewed_at: float


class _QueueListener(_Listener):
    """Queue trigger semantics: batches, leases, dequeue count, poison queue, polling back-off."""

    def __init__(
        self,
        spec: _Spec,
        invoker: _Invoker,
        config: HostConfig,
        *,
        client: QueueClient,
        poison: QueueClient,
        lease: float,
    ) -> None:
        super().__init__(f"{THREAD_PREFIX}-queue-{spec.name}")
        self._spec = spec
        self._invoker = invoker
        self._config = config
        self._client = client
        self._poison = poison
        self._lease = lease
        self._in_flight: dict[str, _Leased] = {}

    def _run(self) -> None:
        delay = MIN_POLLING_INTERVAL
        next_poll = time.monotonic()
        created = False
        while not self._abandoned.is_set():
            if self._stopping.is_set() and not self._in_flight:
                return
            now = time.monotonic()
            self._renew_leases(now)
            can_fetch = len(self._in_flight) <= self._config.new_batch_threshold
            if not self._stopping.is_set() and can_fetch and now >= next_poll:
                found = 0
                try:
                    if not created:
                        _create_queue(self._client)
                        created = True
                    found = self._receive()
                except AzureError as exc:
                    logger.warning("queue %s: polling failed: %s", self._client.queue_name, exc)
                if found:
                    delay = MIN_POLLING_INTERVAL
                    next_poll = now
                else:
                    next_poll = now + delay
                    delay = min(delay * 2, self._config.max_polling_interval)
            wait = self._wait_time(next_poll)
            for event in self._next_event(wait):
                if event is not None:
                    self._complete(*event)

    def _wait_time(self, next_poll: float) -> float:
        now = time.monotonic()
        waits = [0.5 if self._stopping.is_set() else 5.0]
        if self._in_flight:
            renew_at = min(m.renewed_at for m in self._in_flight.values()) + self._lease / 2
            waits.append(renew_at - now)
        if not self._stopping.is_set() and len(self._in_flight) <= self._config.new_batch_threshold:
            waits.append(next_poll - now)
        return max(0.0, min(waits))

    def _receive(self) -> int:
        batch = self._config.batch_size
        messages = list(
            self._client.receive_messages(
                max_messages=batch,
                messages_per_page=batch,
                visibility_timeout=math.ceil(self._lease),
            )
        )
        for message in messages:
            leased = _Leased(message, message.pop_receipt or "", time.monotonic())
            self._in_flight[message.id] = leased
            if message.dequeue_count is not None and (
                message.dequeue_count > self._config.max_dequeue_count
            ):
                # Left over by a host that stopped mid-invocation: poison without running.
                self._complete(message.id, RuntimeError("dequeue count above maxDequeueCount"))
                continue
            future = self._invoker.invoke(self._spec, functools.partial(self._value, message))
            future.add_done_callback(functools.partial(self._completed, message.id))
        return len(messages)

    def _completed(self, message_id: str, done: concurrent.futures.Future[Any]) -> None:
        """Hand an outcome to the listener thread, which owns the message's pop receipt."""
        self._events.put((message_id, _exception_of(done)))

    def _value(self, message: StorageQueueMessage) -> Any:
        """The trigger argument (built on the worker thread, as a failed binding is a failure)."""
        raw = message.content if isinstance(message.content, str) else ""
        if self._config.message_encoding == "base64":
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(
                    f"message {message.id} is not valid base64, but host.json messageEncoding "
                    f"is base64 (send it with TextBase64EncodePolicy)"
                ) from exc
        else:
            body = raw.encode("utf-8")
        if self._spec.value_kind == "bytes":
            return body
        if self._spec.value_kind == "str":
            return body.decode("utf-8")
        return FunctionsQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )

    def _renew_leases(self, now: float) -> None:
        for message_id, leased in self._in_flight.items():
            if now - leased.renewed_at < self._lease / 2:
                continue
            try:
                renewed = self._client.update_message(
                    message_id, leased.pop_receipt, visibility_timeout=math.ceil(self._lease)
                )
            except AzureError as exc:
                logger.warning("queue %s: lease renewal failed: %s", self._client.queue_name, exc)
                continue
            leased.pop_receipt = renewed.pop_receipt or leased.pop_receipt
            leased.renewed_at = now

    def _complete(self, message_id: str, error: BaseException | None) -> None:
        leased = self._in_flight.pop(message_id, None)
        if leased is None:
            return
        name = self._client.queue_name
        count = leased.message.dequeue_count or 0
        try:
            if error is None:
                self._client.delete_message(message_id, leased.pop_receipt)
            elif count >= self._config.max_dequeue_count:
                _create_queue(self._poison)
                self._poison.send_message(leased.message.content)
                self._client.delete_message(message_id, leased.pop_receipt)
                logger.warning(
                    "queue %s: message %s failed %d times: moved to %s",
                    name,
                    message_id,
                    count,
                    self._poison.queue_name,
                )
            else:
                self._client.update_message(
                    message_id,
                    leased.pop_receipt,
                    visibility_timeout=math.ceil(self._config.visibility_timeout),
                )
        except AzureError as exc:
            logger.warning("queue %s: could not settle message %s: %s", name, message_id, exc)


@dataclass(frozen=True, slots=True)
class BlobPattern:
    """A blob trigger path: a container and a name pattern with `{placeholders}`."""

    container: str
    pattern: str
    regex: re.Pattern[str]
    prefix: str

    @classmethod
    def parse(cls, path: str, where: str) -> BlobPattern:
        container, _, pattern = path.strip("/").partition("/")
        if not _STORAGE_NAME.fullmatch(container):
            raise HostError(
                f"{where}: {container!r} is not a valid container name (3-63 lowercase letters, "
                f"digits and single hyphens; no placeholders)"
            )
        if not pattern:
            return cls(container, "", re.compile(r".+", re.DOTALL), "")
        pieces = re.split(r"(\{[^{}]*\})", pattern)
        placeholders = [i for i, piece in enumerate(pieces) if piece.startswith("{")]
        regex = []
        names: set[str] = set()
        for index, piece in enumerate(pieces):
            if not piece.startswith("{"):
                if "{" in piece or "}" in piece:
                    raise HostError(f"{where}: unbalanced braces in blob path {path!r}")
                regex.append(re.escape(piece))
                continue
            name = piece[1:-1]
            if not name.isidentifier() or name in names:
                raise HostError(f"{where}: bad or repeated placeholder {piece} in {path!r}")
            names.add(name)
            spans_slash = index == placeholders[-1]
            regex.append(f"(?P<{name}>{'.+' if spans_slash else '[^/]+'})")
        prefix = pieces[0] if placeholders else pattern
        return cls(container, pattern, re.compile("".join(regex), re.DOTALL), prefix)

    def match(self, blob_name: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(blob_name)
        return None if found is None else found.groupdict()


@dataclass(frozen=True, slots=True)
class _BlobVersion:
    name: str
    etag: str
    blob_type: str
    attempts: int


def _quoted(etag: str) -> str:
    """ETags in their HTTP form (`"0x8D..."`), as Azure's receipts and poison messages carry
    them; blob listings return them without the quotes."""
    return etag if etag.startswith('"') else f'"{etag}"'


class _BlobListener(_Listener):
    """Blob trigger semantics: each blob version once, receipts, retries, the poison queue."""

    def __init__(
        self,
        spec: _Spec,
        invoker: _Invoker,
        config: HostConfig,
        *,
        pattern: BlobPattern,
        service: BlobServiceClient,
        container: ContainerClient,
        receipts: ContainerClient,
        poison: QueueClient,
        host_id: str,
        poll_interval: float,
        slots: _Slots,
    ) -> None:
        super().__init__(f"{THREAD_PREFIX}-blob-{spec.name}")
        self._slots = slots
        self._spec = spec
        self._invoker = invoker
        self._config = config
        self._pattern = pattern
        self._service = service  # SDK defaults: it hands clients to the function
        self._container = container
        self._receipts = receipts
        self._poison = poison
        self._host_id = host_id
        self._poll_interval = poll_interval
        self._seen: set[tuple[str, str]] = set()
        self._in_flight: dict[tuple[str, str], _BlobVersion] = {}
        self._retries: dict[tuple[str, str], tuple[int, float]] = {}

    def _run(self) -> None:
        next_scan = time.monotonic()
        while not self._abandoned.is_set():
            if self._stopping.is_set() and not self._in_flight:
                return
            now = time.monotonic()
            if not self._stopping.is_set() and now >= next_scan:
                try:
                    self._scan(now)
                except AzureError as exc:
                    logger.warning(
                        "blob container %s: scan failed: %s", self._pattern.container, exc
                    )
                next_scan = now + self._poll_interval
            wait = 0.5 if self._stopping.is_set() else next_scan - time.monotonic()
            for event in self._next_event(wait):
                if event is not None:
                    self._complete(*event)

    def _scan(self, now: float) -> None:
        current: set[tuple[str, str]] = set()
        try:
            blobs = list(self._container.list_blobs(name_starts_with=self._pattern.prefix or None))
        except ResourceNotFoundError:
            blobs = []  # no container yet: nothing to trigger on
        for blob in blobs:
            if self._pattern.match(blob.name) is None or not blob.etag:
                continue
            key = (blob.name, _quoted(blob.etag))
            current.add(key)
            if key in self._seen or key in self._in_flight:
                continue
            attempts, not_before = self._retries.get(key, (0, 0.0))
            if not_before > now or self._slots.free() <= 0:
                continue
            if self._receipt(key).exists():
                self._seen.add(key)
                continue
            if self._slots.take():
                self._dispatch(blob, attempts)
        # Forget versions that are gone, so the sets stay as small as the container.
        self._seen &= current
        self._retries = {k: v for k, v in self._retries.items() if k in current}

    def _dispatch(self, blob: BlobProperties, attempts: int) -> None:
        blob_type = str(getattr(blob.blob_type, "value", blob.blob_type) or "BlockBlob")
        version = _BlobVersion(blob.name, _quoted(blob.etag), blob_type, attempts)
        key = (version.name, version.etag)
        self._in_flight[key] = version
        future = self._invoker.invoke(self._spec, lambda: self._value(version))
        future.add_done_callback(lambda done: self._events.put((key, _exception_of(done))))

    def _value(self, version: _BlobVersion) -> Any:
        """The trigger argument for this version (runs on the worker thread)."""
        container = self._pattern.container
        client = self._service.get_blob_client(container, version.name)
        kind = self._spec.value_kind
        try:
            if kind.startswith("sdk:"):
                properties = client.get_blob_properties()
                if _quoted(properties.etag) != version.etag:
                    raise _Skip("blob overwritten before the invocation; the new version triggers")
                if kind == "sdk:BlobClient":
                    return client
                if kind == "sdk:ContainerClient":
                    return self._service.get_container_client(container)
                return client.download_blob(
                    etag=version.etag, match_condition=MatchConditions.IfNotModified
                )
            download = client.download_blob(
                etag=version.etag, match_condition=MatchConditions.IfNotModified
            )
            content = download.readall()
        except ResourceNotFoundError as exc:
            raise _Skip("blob deleted before the invocation") from exc
        except ResourceModifiedError as exc:
            raise _Skip("blob overwritten before the invocation; the new version triggers") from exc
        if kind == "bytes":
            return content
        if kind == "str":
            return content.decode("utf-8")
        properties = download.properties
        return InputStream(
            data=content,
            name=f"{container}/{version.name}",
            uri=client.url,
            length=len(content),
            blob_properties={
                "Length": len(content),
                "ETag": version.etag,
                "ContentType": properties.content_settings.content_type,
                "LastModified": properties.last_modified.isoformat()
                if properties.last_modified
                else None,
                "BlobType": version.blob_type,
            },
            metadata=dict(properties.metadata or {}),
        )

    def _receipt_name(self, key: tuple[str, str]) -> str:
        name, etag = key
        return (
            f"blobreceipts/{self._host_id}/{self._spec.function_id}/{etag}/"
            f"{self._pattern.container}/{name}"
        )

    def _receipt(self, key: tuple[str, str]) -> Any:
        return self._receipts.get_blob_client(self._receipt_name(key))

    def _complete(self, key: tuple[str, str], error: BaseException | None) -> None:
        version = self._in_flight.pop(key, None)
        if version is None:
            return
        self._slots.give()
        try:
            if error is None:
                self._write_receipt(key)
            elif isinstance(error, _Skip):
                self._seen.add(key)
            elif version.attempts + 1 >= self._config.max_dequeue_count:
                self._send_to_poison(version)
                self._write_receipt(key)
            else:
                retry_at = time.monotonic() + self._config.visibility_timeout
                self._retries[key] = (version.attempts + 1, retry_at)
        except AzureError as exc:
            logger.warning(
                "blob %s/%s: could not record the outcome: %s",
                self._pattern.container,
                version.name,
                exc,
            )

    def _write_receipt(self, key: tuple[str, str]) -> None:
        try:
            self._receipt(key).upload_blob(b"", overwrite=True)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self._receipts.create_container()
            self._receipt(key).upload_blob(b"", overwrite=True)
        self._seen.add(key)
        self._retries.pop(key, None)

    def _send_to_poison(self, version: _BlobVersion) -> None:
        message = {
            "Type": "BlobTrigger",
            "FunctionId": self._spec.function_id,
            "BlobType": version.blob_type,
            "ContainerName": self._pattern.container,
            "BlobName": version.name,
            "ETag": version.etag,
        }
        _create_queue(self._poison)
        self._poison.send_message(base64.b64encode(json.dumps(message).encode()).decode("ascii"))
        logger.warning(
            "blob %s/%s failed %d times: sent to %s",
            self._pattern.container,
            version.name,
            version.attempts + 1,
            BLOB_POISON_QUEUE,
        )


class _TimerListener(_Listener):
    """Timer trigger semantics: NCRONTAB in UTC, run on startup, past due, one at a time."""

    def __init__(
        self, spec: _Spec, invoker: _Invoker, schedule: Schedule, run_on_startup: bool
    ) -> None:
        super().__init__(f"{THREAD_PREFIX}-timer-{spec.name}")
        self._spec = spec
        self._invoker = invoker
        self._schedule = schedule
        self._run_on_startup = run_on_startup
        self._last: datetime | None = None

    def _run(self) -> None:
        now = datetime.now(UTC)
        due = self._schedule.next_after(now)
        if self._run_on_startup:
            self._fire(now, past_due=False, following=due)
        while True:
            remaining = (due - datetime.now(UTC)).total_seconds()
            if self._stopping.wait(timeout=max(0.0, remaining)):
                return
            if datetime.now(UTC) < due:
                continue  # woke a little early
            started = datetime.now(UTC)
            following = self._schedule.next_after(due)
            self._fire(due, past_due=started - due > PAST_DUE_TOLERANCE, following=following)
            # Occurrences missed while it ran collapse into one late run, as in Azure.
            finished = datetime.now(UTC)
            while (after := self._schedule.next_after(following)) <= finished:
                following = after
            due = following

    def _fire(self, due: datetime, *, past_due: bool, following: datetime) -> None:
        now = datetime.now(UTC)
        request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": (self._last or datetime.min.replace(tzinfo=UTC)).isoformat(),
                "Next": following.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        self._last = due
        future = self._invoker.invoke(self._spec, lambda: request)
        with contextlib.suppress(Exception):  # the invoker logged the outcome
            future.result()


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTP trigger's route template compiled for matching (ASP.NET-style templates)."""

    template: str
    regex: re.Pattern[str]
    names: dict[str, str]
    precedence: tuple[int, ...]

    @classmethod
    def parse(cls, template: str, where: str) -> Route:
        segments = [s for s in template.strip("/").split("/") if s] if template else []
        parts: list[str] = []
        names: dict[str, str] = {}
        ranks: list[int] = []
        optional_seen = False
        for index, segment in enumerate(segments):
            whole = _ROUTE_PARAMETER.fullmatch(segment)
            if whole is not None and (whole.group(4) or whole.group(1)):
                catch_all, name, constraint, _ = whole.groups()
                if catch_all and index != len(segments) - 1:
                    raise HostError(f"{where}: catch-all {segment} must be the last segment")
                group = f"p{len(names)}"
                names[group] = name
                body = ".*" if catch_all else _constraint(constraint, segment, where)
                parts.append(f"(?:/(?P<{group}>{body}))?")
                ranks.append(4 if catch_all else 3)
                optional_seen = True
                continue
            if optional_seen:
                raise HostError(f"{where}: only the last segments of a route may be optional")
            pieces = re.split(r"(\{[^{}]*\})", segment)
            regex = "/"
            rank = 0
            for piece in pieces:
                if not piece.startswith("{"):
                    if "{" in piece or "}" in piece:
                        raise HostError(f"{where}: unbalanced braces in route {template!r}")
                    regex += re.escape(piece)
                    continue
                found = _ROUTE_PARAMETER.fullmatch(piece)
                if found is None or found.group(1) or found.group(4):
                    raise HostError(
                        f"{where}: route parameter {piece} is not supported locally (use "
                        f"{{name}}, {{name:constraint}}, or as a whole trailing segment "
                        f"{{name?}} or {{*name}}; constraints: {', '.join(_ROUTE_CONSTRAINTS)})"
                    )
                _, name, constraint, _ = found.groups()
                group = f"p{len(names)}"
                names[group] = name
                regex += f"(?P<{group}>{_constraint(constraint, piece, where)})"
                rank = max(rank, 1 if constraint else 2)
            parts.append(regex)
            ranks.append(rank)
        lowered = [n.lower() for n in names.values()]
        if len(set(lowered)) != len(lowered):
            raise HostError(f"{where}: a route parameter name repeats in {template!r}")
        compiled = re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
        return cls(template, compiled, names, tuple(ranks))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {self.names[g]: v for g, v in found.groupdict().items() if v is not None}


def _constraint(constraint: str | None, piece: str, where: str) -> str:
    if constraint is None:
        return "[^/]+"
    pattern = _ROUTE_CONSTRAINTS.get(constraint.lower())
    if pattern is None:
        raise HostError(
            f"{where}: route parameter {piece} is not supported locally "
            f"(supported: {', '.join(_ROUTE_CONSTRAINTS)})"
        )
    return pattern


@dataclass(frozen=True, slots=True)
class _HttpFunction:
    spec: _Spec
    route: Route
    methods: frozenset[str] | None
    auth_level: str


class _QuietHandler(WSGIRequestHandler):
    """No werkzeug access log: its request line would carry a `code=` key."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("HTTP %s %s -> %s", self.command, self.path.split("?", 1)[0], code)


class _HttpServer:
    """The HTTP trigger front door: routing, function keys, HttpRequest in, HttpResponse out."""

    def __init__(
        self,
        functions: Sequence[_HttpFunction],
        invoker: _Invoker,
        *,
        route_prefix: str,
        function_key: str,
        host: str,
        port: int,
    ) -> None:
        # Most specific first: literal segments before parameters before optional ones.
        self._functions = sorted(functions, key=lambda f: (*f.route.precedence, 9))
        self._invoker = invoker
        self._prefix = f"/{route_prefix}" if route_prefix else ""
        self._key = function_key
        try:
            self._server: BaseWSGIServer = make_server(
                host, port, self._wsgi, threaded=True, request_handler=_QuietHandler
            )
        except OSError as exc:
            raise HostError(
                f"cannot listen on {host}:{port} for HTTP triggers: {exc} "
                f"(is another host running? pass another --http-port)"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{THREAD_PREFIX}-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.stop_accepting()
        self._server.server_close()

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        request = Request(environ)
        response = self._handle(request)
        return iter(response(environ, start_response))

    def _handle(self, request: Request) -> Response:
        path = request.path
        if self._prefix:
            if path.lower() != self._prefix.lower() and not path.lower().startswith(
                self._prefix.lower() + "/"
            ):
                return Response(status=404)
            path = path[len(self._prefix) :]
        if len(path) > 1:
            path = path.rstrip("/")
        method = request.method.upper()
        for candidate in self._functions:
            route_params = candidate.route.match(path if path != "/" else "")
            if route_params is None:
                continue
            if candidate.methods is not None and method not in candidate.methods:
                continue
            if candidate.auth_level != "ANONYMOUS" and not self._authorized(request):
                return Response(status=401)
            return self._invoke(candidate, request, route_params)
        return Response(status=404)

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get("x-functions-key") or request.args.get("code") or ""
        return hmac.compare_digest(given.encode(), self._key.encode())

    def _invoke(
        self, function: _HttpFunction, request: Request, route_params: dict[str, str]
    ) -> Response:
        http_request = func.HttpRequest(
            method=request.method.upper(),
            url=request.url,
            headers=dict(request.headers.items()),
            params=request.args.to_dict(flat=True),
            route_params=route_params,
            body=request.get_data(),
        )
        future = self._invoker.invoke(function.spec, lambda: http_request)
        try:
            result = future.result()
        except Exception:  # the invoker logged it; Azure answers 500 without details
            return Response(status=500)
        return _to_response(function.spec.name, result)


def _to_response(name: str, result: Any) -> Response:
    if isinstance(result, str):
        return Response(result, status=200, content_type="text/plain; charset=utf-8")
    if isinstance(result, func.HttpResponse):
        headers = list(result.headers.items())
        if not any(key.lower() == "content-type" for key, _ in headers):
            mimetype = result.mimetype or "text/plain"
            content_type = (
                f"{mimetype}; charset={result.charset}"
                if mimetype.startswith("text/")
                else mimetype
            )
            headers.append(("Content-Type", content_type))
        return Response(result.get_body() or b"", status=result.status_code, headers=headers)
    logger.error(
        "function %s returned %s: an HTTP function must return func.HttpResponse or str",
        name,
        type(result).__name__,
    )
    return Response(status=500)


# --------------------------------------------------------------------------------------------
# The host


class LocalHost:
    """Loads the function app and runs its triggers on background threads until `stop()`."""

    def __init__(
        self,
        app_dir: Path | str = ".",
        settings_file: Path | str | None = None,
        host_json: Path | str | None = None,
        http_port: int = DEFAULT_HTTP_PORT,
        *,
        module: str = "function_app",
        http_host: str = "127.0.0.1",
        blob_poll_interval: float = BLOB_POLL_INTERVAL,
        queue_lease: float | None = None,
    ) -> None:
        """`settings_file` and `host_json` default to those files in `app_dir` when present;
        `http_port` 0 picks a free port; `blob_poll_interval` and `queue_lease` (seconds) are
        there for tests (`queue_lease` defaults to the setting LOCAL_HOST_QUEUE_LEASE_SECONDS,
        else Azure's 10 minutes)."""
        self.app_dir = Path(app_dir).resolve()
        self._settings_file = _optional_file(settings_file, self.app_dir / "local.settings.json")
        self._host_json = _optional_file(host_json, self.app_dir / "host.json")
        self._http_port = http_port
        self._http_host = http_host
        self._module_name = module
        self._blob_poll_interval = blob_poll_interval
        self._queue_lease = queue_lease
        self._settings: dict[str, str] = {}
        self._exported: dict[str, str] = {}
        self._saved_module: ModuleType | None = None
        self._added_path = False
        self._functions: tuple[FunctionInfo, ...] = ()
        self._listeners: list[_Listener] = []
        self._invoker: _Invoker | None = None
        self._http: _HttpServer | None = None
        self._function_key = ""
        self._started = False
        self._stopped = False
        self._live = False
        self._slots: _Slots | None = None

    @property
    def functions(self) -> tuple[FunctionInfo, ...]:
        return self._functions

    @property
    def http_port(self) -> int | None:
        """The port HTTP triggers listen on (None when the app has no HTTP functions)."""
        return None if self._http is None else self._http.port

    @property
    def http_url(self) -> str | None:
        port = self.http_port
        return None if port is None else f"http://{self._http_host}:{port}"

    @property
    def function_key(self) -> str:
        """The key FUNCTION and ADMIN level HTTP functions accept."""
        return self._function_key

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Load settings, host.json and the app, validate every binding, start the triggers.

        Raises HostError (and starts nothing) when a function cannot run here.
        """
        if self._started:
            raise RuntimeError("this LocalHost was already started")
        self._started = True
        try:
            self._start()
        except BaseException:
            self._teardown(timeout=5)
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and listening, wait up to `timeout` s for invocations in flight."""
        if not self._started or self._stopped:
            return
        self._teardown(timeout)

    def _start(self) -> None:
        values, self._settings = load_settings(self._settings_file)
        for name, value in values.items():
            if name not in os.environ:
                os.environ[name] = value
                self._exported[name] = value
        config = HostConfig.load(self._host_json)
        app = self._import_app()
        functions = app.get_functions()  # once: it builds (and validates) the functions
        key = self._settings.get(FUNCTION_KEY_SETTING) or ""
        self._function_key = key or secrets.token_urlsafe(24)

        specs = [self._spec(function, config) for function in functions]
        self._functions = tuple(FunctionInfo(s.name, s.trigger_type) for s in specs)
        threads = _thread_count(self._settings.get("PYTHON_THREADPOOL_THREAD_COUNT"))
        invoker = _Invoker(threads, config.function_timeout, str(self.app_dir))
        self._invoker = invoker
        http_functions: list[_HttpFunction] = []
        for spec in specs:
            if spec.trigger_type == "httpTrigger":
                http_functions.append(self._http_function(spec))
            else:
                self._listeners.append(self._listener(spec, invoker, config))
        if http_functions:
            self._http = _HttpServer(
                http_functions,
                invoker,
                route_prefix=config.route_prefix,
                function_key=self._function_key,
                host=self._http_host,
                port=self._http_port,
            )
            if not key and any(f.auth_level != "ANONYMOUS" for f in http_functions):
                logger.warning(
                    "%s is not set: FUNCTION and ADMIN level HTTP functions accept the key %s "
                    "for this run",
                    FUNCTION_KEY_SETTING,
                    self._function_key,
                )

        invoker.start()
        for listener in self._listeners:
            listener.start()
        if self._http is not None:
            self._http.start()
        self._live = True
        logger.info(
            "host started: %d functions%s",
            len(specs),
            f", HTTP on {self.http_url}" if self._http else "",
        )

    def _import_app(self) -> func.FunctionRegister:
        path = self.app_dir / f"{self._module_name}.py"
        if not path.is_file():
            raise HostError(f"{path} not found: is --app-dir the folder with the function app?")
        if str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))
            self._added_path = True
        spec = importlib.util.spec_from_file_location(self._module_name, path)
        if spec is None or spec.loader is None:
            raise HostError(f"cannot load {path} as a module")
        module = importlib.util.module_from_spec(spec)
        self._saved_module = sys.modules.get(self._module_name)
        sys.modules[self._module_name] = module
        spec.loader.exec_module(module)
        app = getattr(module, "app", None)
        if not isinstance(app, func.FunctionRegister):
            raise HostError(f"{path} has no `app` (an azure.functions.FunctionApp)")
        return app

    def _spec(self, function: func.Function, config: HostConfig) -> _Spec:
        name = function.get_function_name() or function.get_user_function().__name__
        bindings: list[dict[str, Any]] = json.loads(function.get_function_json())["bindings"]
        user_function = function.get_user_function()
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise HostError(f"function {name}: expected one trigger, found {len(triggers)}")
        trigger = dict(triggers[0])
        trigger_type = str(trigger["type"])
        where = f"function {name}, binding {trigger.get('name')!r} ({trigger_type})"
        if trigger_type not in ("queueTrigger", "blobTrigger", "timerTrigger", "httpTrigger"):
            raise HostError(
                f"{where}: trigger type {trigger_type!r} is not supported by the local host "
                f"(queueTrigger, blobTrigger, timerTrigger, httpTrigger are)"
            )
        for key in ("queueName", "path", "schedule"):
            if isinstance(trigger.get(key), str):
                trigger[key] = substitute(trigger[key], self._settings, where)

        outputs: dict[str, _QueueTarget] = {}
        return_output: _QueueTarget | None = None
        for binding in bindings:
            if binding is triggers[0]:
                continue
            binding_name = str(binding.get("name"))
            binding_type = str(binding.get("type"))
            direction = str(binding.get("direction", "")).upper()
            binding_where = f"function {name}, binding {binding_name!r} ({binding_type})"
            if binding_type == "http" and direction == "OUT" and trigger_type == "httpTrigger":
                continue
            if binding_type == "queue" and direction == "OUT":
                target = self._queue_target(binding, config, binding_where)
                if binding_name == "$return":
                    return_output = target
                else:
                    outputs[binding_name] = target
                continue
            raise HostError(
                f"{binding_where}: {direction.lower() or 'this'} binding type {binding_type!r} "
                f"is not supported by the local host (only queue outputs are)"
            )

        trigger_parameter = str(trigger["name"])
        annotations = _annotations(user_function)
        context_parameter: str | None = None
        value_kind = "default"
        for parameter in inspect.signature(user_function).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            annotation = annotations.get(parameter.name, parameter.annotation)
            if parameter.name == trigger_parameter:
                value_kind = _value_kind(trigger_type, annotation, where)
            elif parameter.name in outputs:
                continue
            elif parameter.name == "context" or (
                isinstance(annotation, type) and issubclass(annotation, func.Context)
            ):
                context_parameter = parameter.name
            elif parameter.default is parameter.empty:
                raise HostError(
                    f"function {name}: parameter {parameter.name!r} has no binding "
                    f"(bindings: {', '.join(str(b.get('name')) for b in bindings)})"
                )
        return _Spec(
            name=name,
            user_function=user_function,
            is_async=inspect.iscoroutinefunction(user_function),
            trigger=trigger,
            trigger_parameter=trigger_parameter,
            value_kind=value_kind,
            context_parameter=context_parameter,
            outputs=outputs,
            return_output=return_output,
        )

    def _queue_target(
        self, binding: Mapping[str, Any], config: HostConfig, where: str
    ) -> _QueueTarget:
        queue_name = substitute(str(binding.get("queueName", "")), self._settings, where)
        _check_storage_name(queue_name, "queue", where)
        connection = storage_connection(
            str(binding.get("connection") or DEFAULT_CONNECTION), self._settings, where
        )
        client = _queue_client(connection, queue_name, where)
        return _QueueTarget(client, config.message_encoding)

    def _listener(self, spec: _Spec, invoker: _Invoker, config: HostConfig) -> _Listener:
        trigger = spec.trigger
        where = f"function {spec.name}, binding {trigger.get('name')!r} ({spec.trigger_type})"
        if spec.trigger_type == "timerTrigger":
            try:
                schedule = Schedule.parse(str(trigger.get("schedule", "")))
            except ValueError as exc:
                raise HostError(f"{where}: {exc}") from exc
            return _TimerListener(spec, invoker, schedule, bool(trigger.get("runOnStartup")))
        connection_name = str(trigger.get("connection") or DEFAULT_CONNECTION)
        connection = storage_connection(connection_name, self._settings, where)
        if spec.trigger_type == "queueTrigger":
            queue_name = str(trigger.get("queueName", ""))
            _check_storage_name(queue_name, "queue", where)
            return _QueueListener(
                spec,
                invoker,
                config,
                client=_queue_client(connection, queue_name, where),
                poison=_queue_client(connection, f"{queue_name}-poison", where),
                lease=self._lease_seconds(),
            )
        pattern = BlobPattern.parse(str(trigger.get("path", "")), where)
        host_storage = storage_connection(DEFAULT_CONNECTION, self._settings, where)
        host_id = (
            self._settings.get("AzureFunctionsJobHost__id")
            or self._settings.get("AzureFunctionsWebHost__hostid")
            or DEFAULT_HOST_ID
        )
        try:
            service = BlobServiceClient.from_connection_string(connection)
            container = BlobServiceClient.from_connection_string(
                connection, **_polling_options()
            ).get_container_client(pattern.container)
            receipts = BlobServiceClient.from_connection_string(
                host_storage, **_polling_options()
            ).get_container_client(RECEIPTS_CONTAINER)
        except ValueError as exc:
            raise HostError(f"{where}: invalid storage connection string: {exc}") from exc
        return _BlobListener(
            spec,
            invoker,
            config,
            pattern=pattern,
            service=service,
            container=container,
            receipts=receipts,
            poison=_queue_client(connection, BLOB_POISON_QUEUE, where),
            host_id=host_id,
            poll_interval=self._blob_poll_interval,
            slots=self._blob_slots(config),
        )

    def _blob_slots(self, config: HostConfig) -> _Slots:
        if self._slots is None:
            self._slots = _Slots(config.blob_parallelism)
        return self._slots

    def _lease_seconds(self) -> float:
        if self._queue_lease is not None:
            return self._queue_lease
        value = self._settings.get(LEASE_SETTING)
        if not value:
            return QUEUE_LEASE_SECONDS
        try:
            lease = float(value)
        except ValueError:
            lease = 0.0
        if not 2 <= lease <= 7 * 86400:
            raise HostError(f"{LEASE_SETTING}={value!r} is not a number of seconds in 2-604800")
        return lease

    @staticmethod
    def _http_function(spec: _Spec) -> _HttpFunction:
        trigger = spec.trigger
        where = f"function {spec.name}, binding {trigger.get('name')!r} (httpTrigger)"
        methods = trigger.get("methods")
        return _HttpFunction(
            spec=spec,
            route=Route.parse(str(trigger.get("route") or spec.name), where),
            methods=None if not methods else frozenset(str(m).upper() for m in methods),
            auth_level=str(trigger.get("authLevel") or "FUNCTION").upper(),
        )

    def _teardown(self, timeout: float) -> None:
        self._stopped = True
        deadline = time.monotonic() + timeout
        for listener in self._listeners:
            listener.request_stop()
        if self._http is not None:
            self._http.stop_accepting()
        for listener in self._listeners:
            if not listener.join(deadline - time.monotonic()):
                listener.abandon()
                listener.join(1.0)
        if self._invoker is not None:
            self._invoker.shutdown(deadline - time.monotonic())
        if self._http is not None:
            self._http.close()
        for name, value in self._exported.items():
            if os.environ.get(name) == value:
                del os.environ[name]
        self._exported.clear()
        if self._saved_module is not None:
            sys.modules[self._module_name] = self._saved_module
        else:
            sys.modules.pop(self._module_name, None)
        if self._added_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(self.app_dir))
            self._added_path = False
        if self._live:
            logger.info("host stopped")
        self._live = False


def _optional_file(given: Path | str | None, default: Path) -> Path | None:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise HostError(f"{path} not found")
        return path
    return default if default.is_file() else None


def _check_storage_name(name: str, kind: str, where: str) -> None:
    if not _STORAGE_NAME.fullmatch(name):
        raise HostError(
            f"{where}: {name!r} is not a valid {kind} name (3-63 lowercase letters, digits and "
            f"single hyphens)"
        )


def _polling_options() -> dict[str, Any]:
    """Storage options for the host's own calls: the SDK's default retries wait 15 s and more
    between tries, which would hold up polling and `stop()` while Azurite is down; the
    listeners retry on their own schedule instead."""
    return {
        "retry_policy": LinearRetry(backoff=1, retry_total=2, random_jitter_range=0),
        "connection_timeout": 5,
    }


def _queue_client(connection: str, queue_name: str, where: str) -> QueueClient:
    try:
        return QueueClient.from_connection_string(connection, queue_name, **_polling_options())
    except ValueError as exc:
        raise HostError(f"{where}: invalid storage connection string: {exc}") from exc


def _thread_count(value: str | None) -> int:
    if value:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise HostError(f"PYTHON_THREADPOOL_THREAD_COUNT={value!r} is not a positive number")
        return count
    return min(32, (os.cpu_count() or 1) + 4)


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run the host in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.local.host",
        description="Run the function app's triggers against Azurite (a local Functions host).",
    )
    parser.add_argument("--app-dir", type=Path, default=Path("."), help="folder of the app")
    parser.add_argument(
        "--settings", type=Path, help="settings file (default: local.settings.json in app dir)"
    )
    parser.add_argument("--host-json", type=Path, help="host.json (default: the app dir's)")
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="0: any free")
    parser.add_argument("--module", default="function_app", help="the app module's name")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)

    def started() -> str:
        listed = ", ".join(f"{f.name}: {f.trigger}" for f in host.functions)
        return f"host started: {len(host.functions)} functions ({listed})"

    try:
        host = LocalHost(
            args.app_dir, args.settings, args.host_json, args.http_port, module=args.module
        )
        serve_until_signal(host.start, host.stop, started, poll=0.5)
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print("host stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
