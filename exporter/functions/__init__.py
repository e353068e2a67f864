"""The triggers: each decodes its input, calls one function of `exporter.runs`, and returns.

`services()` builds the clients once per worker process (connections are reused across
invocations, as Azure Functions recommends) from the app settings.
"""

from __future__ import annotations

import threading

from exporter.runs import Services

_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    global _services  # noqa: PLW0603  # one set of clients per worker process
    with _lock:
        if _services is None:
            _services = Services.from_env()
        return _services


def reset_services() -> None:
    """Forget the cached clients (tests that change settings in-process)."""
    global _services  # noqa: PLW0603
    with _lock:
        _services = None
