"""The triggers: each decodes its input, calls one function of `exporter.flow`, and returns.

`services()` builds the clients once per worker process (connections are reused across
invocations, as Azure Functions recommends) from the app settings. `receive()` decodes a queue
message defensively: one that cannot be decoded is recorded and dropped, never retried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import azure.functions as func

from exporter.flow.services import Services
from exporter.model.messages import BadMessage, M, decode, log_dropped, log_handler_failed
from exporter.wiring import services_from_env

_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    global _services  # noqa: PLW0603  # one set of clients per worker process
    with _lock:
        if _services is None:
            _services = services_from_env()
        return _services


def reset_services() -> None:
    """Forget the cached clients (tests that change settings in-process)."""
    global _services  # noqa: PLW0603
    with _lock:
        _services = None


def receive(queue: str, model: type[M], msg: func.QueueMessage) -> M | None:
    """The message decoded as `model`, or None when it cannot be (not JSON, a field missing or
    out of range, an over-long id, over 64 KB): then it is recorded (a log line with the queue,
    the reason and a short, masked excerpt) and the trigger returns normally, so the host
    deletes it. Retrying a message that cannot be read would only fail again, five times, and
    end in a poison queue with nothing said."""
    body = msg.get_body()
    try:
        return decode(model, body)
    except BadMessage as exc:
        log_dropped(queue, str(exc), body)
        return None


def poisoned(
    queue: str, model: type[M], msg: func.QueueMessage, handler: Callable[[Services, M], None]
) -> None:
    """A poison queue's trigger: decode defensively (see `receive`), run `handler`, and never
    raise: a poison handler that fails records why and drops the message, so nothing ends in a
    `<queue>-poison-poison` queue that no one watches."""
    message = receive(queue, model, msg)
    if message is None:
        return
    try:
        handler(services(), message)
    except Exception as exc:
        log_handler_failed(queue, exc, msg.get_body())
