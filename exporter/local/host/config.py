"""Settings, host.json and storage connections, read as the real host reads them.

- Settings: `local.settings.json` `Values`, overlaid by the process environment (the environment
  wins), exported to `os.environ` before the app is imported; `%NAME%` in queue names, blob paths
  and schedules is replaced from them (an unknown name stops startup).
- Connections: a binding's `connection` names a setting (default `AzureWebJobsStorage`) holding a
  storage connection string; `UseDevelopmentStorage=true` means Azurite on its default ports.
  Identity-based connections (`<connection>__accountName`, `__serviceUri`, ...) and Key Vault
  references are not supported: use connection strings and plain values locally.
- host.json: `extensions.queues` `batchSize` (16), `newBatchThreshold` (batchSize/2),
  `maxPollingInterval`, `visibilityTimeout` (0), `maxDequeueCount` (5), `messageEncoding`
  (`base64` or `none`); `extensions.blobs.maxDegreeOfParallelism` (8 per CPU, for all blob
  triggers together); `functionTimeout`; `extensions.http.routePrefix` (`api`).
  `maxPollingInterval` defaults to 2 s here (1 min in Azure), so the local stack reacts quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import LinearRetry, QueueClient

from exporter.local.settings_file import SettingsFileError, read_values

DEFAULT_CONNECTION: Final = "AzureWebJobsStorage"
MIN_POLLING_INTERVAL: Final = 0.1
DEFAULT_FUNCTION_TIMEOUT: Final = 1800.0
THREAD_PREFIX: Final = "local-host"
STORAGE_NAME: Final = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
"""A valid queue or container name."""
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?")


class HostError(Exception):
    """The app or its configuration cannot run here; the message names the function and binding."""


def load_settings(settings_file: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """Return (values from the file, all settings): the file's `Values` under the environment."""
    values: dict[str, str] = {}
    if settings_file is not None:
        try:
            values = read_values(settings_file)
        except SettingsFileError as exc:
            raise HostError(str(exc)) from exc
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


def check_storage_name(name: str, kind: str, where: str) -> None:
    if not STORAGE_NAME.fullmatch(name):
        raise HostError(
            f"{where}: {name!r} is not a valid {kind} name (3-63 lowercase letters, digits and "
            f"single hyphens)"
        )


def polling_options() -> dict[str, Any]:
    """Storage options for the host's own calls: the SDK's default retries wait 15 s and more
    between tries, which would hold up polling and `stop()` while Azurite is down; the
    listeners retry on their own schedule instead."""
    return {
        "retry_policy": LinearRetry(backoff=1, retry_total=2, random_jitter_range=0),
        "connection_timeout": 5,
    }


def queue_client(connection: str, queue_name: str, where: str) -> QueueClient:
    try:
        return QueueClient.from_connection_string(connection, queue_name, **polling_options())
    except ValueError as exc:
        raise HostError(f"{where}: invalid storage connection string: {exc}") from exc


def create_queue(client: QueueClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
