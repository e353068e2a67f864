"""Azurite for tests: one process per test session, and small helpers to talk to it.

The session fixture `azurite` (tests/conftest.py) starts it through `start_test_azurite`; it is
stopped by PID at the end of the session, also when tests fail. Tests share the instance, so
each uses its own queue and container names (`unique_name`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from exporter.local.azurite import AzuriteProcess, ensure_installed, start_azurite

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def start_test_azurite(data_dir: Path) -> AzuriteProcess:
    """Install Azurite from package-lock.json if needed, and start it on free ports."""
    return start_azurite(data_dir, executable=ensure_installed(REPO))


def unique_name(prefix: str) -> str:
    """A queue or container name no other test uses (3-63 lowercase characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def queue_client(connection_string: str, name: str, *, base64: bool = True) -> QueueClient:
    """A client that encodes like the Functions host expects by default (base64)."""
    if not base64:
        return QueueClient.from_connection_string(connection_string, name)
    return QueueClient.from_connection_string(
        connection_string,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


def eventually(check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with what it last returned."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        time.sleep(interval)
