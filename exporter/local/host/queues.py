"""Queue triggers: batches, leases, dequeue count, the poison queue, polling back-off.

A listener receives up to batchSize messages under a 10-minute lease, renewed at half time while
the function runs (the local-only setting LOCAL_HOST_QUEUE_LEASE_SECONDS shortens it, so a killed
host's messages reappear sooner), and fetches the next batch when no more than newBatchThreshold
are in flight: up to batchSize + newBatchThreshold run at once per function, as in Azure. Bodies
are base64-decoded (messageEncoding base64) into an `azure.functions.QueueMessage` with id, body,
dequeue_count, insertion/expiration/next-visible times and pop_receipt (`str` and `bytes`
annotations get the body). Success deletes the message; a failure (a body that is not base64
counts as one) makes it visible again after visibilityTimeout, and a failure at dequeue_count >=
maxDequeueCount copies it, as received, to `<queue>-poison` and deletes it (so does receiving it
with a higher dequeue count, left by a crash). Polling backs off from 100 ms, doubling up to
maxPollingInterval while the queue is empty, and polls again at once after finding messages. A
missing queue is created. At stop, a message whose invocation still runs keeps its lease until
the lease ends, as in Azure. A disabled function (`AzureWebJobs.<name>.Disabled`) receives
nothing until it is switched on again; messages in flight finish.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import functools
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from azure.core.exceptions import AzureError
from azure.functions.queue import QueueMessage as FunctionsQueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageQueueMessage

from exporter.local.host.app import FunctionSpec
from exporter.local.host.config import (
    DEFAULT_CONNECTION,
    MIN_POLLING_INTERVAL,
    THREAD_PREFIX,
    HostConfig,
    HostError,
    check_storage_name,
    create_queue,
    queue_client,
    storage_connection,
)
from exporter.local.host.invoker import Invoker, exception_of
from exporter.local.host.listener import Listener

logger = logging.getLogger("exporter.local.host")

LEASE_SETTING: Final = "LOCAL_HOST_QUEUE_LEASE_SECONDS"
QUEUE_LEASE_SECONDS: Final = 600.0
DISABLED_RECHECK: Final = 1.0
"""Seconds between looks at whether a disabled function is switched on again."""


def queue_listener(
    spec: FunctionSpec,
    invoker: Invoker,
    config: HostConfig,
    settings: Mapping[str, str],
    *,
    lease: float | None,
) -> QueueListener:
    """The listener of a queue function (`lease`: see `lease_seconds`); HostError when its
    connection or queue name cannot work."""
    trigger = spec.trigger
    where = f"function {spec.name}, binding {trigger.get('name')!r} ({spec.trigger_type})"
    connection_name = str(trigger.get("connection") or DEFAULT_CONNECTION)
    connection = storage_connection(connection_name, settings, where)
    queue_name = str(trigger.get("queueName", ""))
    check_storage_name(queue_name, "queue", where)
    return QueueListener(
        spec,
        invoker,
        config,
        client=queue_client(connection, queue_name, where),
        poison=queue_client(connection, f"{queue_name}-poison", where),
        lease=lease_seconds(settings, lease),
    )


def lease_seconds(settings: Mapping[str, str], given: float | None = None) -> float:
    """The queue lease in seconds: `given`, else the setting LOCAL_HOST_QUEUE_LEASE_SECONDS, else
    Azure's 10 minutes."""
    if given is not None:
        return given
    value = settings.get(LEASE_SETTING)
    if not value:
        return QUEUE_LEASE_SECONDS
    try:
        lease = float(value)
    except ValueError:
        lease = 0.0
    if not 2 <= lease <= 7 * 86400:
        raise HostError(f"{LEASE_SETTING}={value!r} is not a number of seconds in 2-604800")
    return lease


@dataclass(slots=True)
class _Leased:
    message: StorageQueueMessage
    pop_receipt: str
    renewed_at: float


class QueueListener(Listener):
    """Queue trigger semantics: batches, leases, dequeue count, poison queue, polling back-off."""

    def __init__(
        self,
        spec: FunctionSpec,
        invoker: Invoker,
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
            if can_fetch and now >= next_poll and self.disabled():
                next_poll = now + DISABLED_RECHECK  # switched off: look again later
            elif not self._stopping.is_set() and can_fetch and now >= next_poll:
                found = 0
                try:
                    if not created:
                        create_queue(self._client)
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
        self._events.put((message_id, exception_of(done)))

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
                create_queue(self._poison)
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
