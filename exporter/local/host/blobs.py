"""Blob triggers: each blob version once, receipts, retries, the poison queue.

A trigger's path is `container/pattern` with `{placeholders}` (only the last may span `/`); every
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
does for those types), InputStream with name `container/blob`, length and uri. At most
maxDegreeOfParallelism blob invocations run at once, all blob triggers together.

Not as in Azure: the container is always polled (every second); a binding's `source`
(`EventGrid`, as Flex Consumption needs) is accepted and ignored. Azure retries blob invocations
through an internal queue, so its attempt count survives a restart; here it lives in memory (a
receipt still stops reprocessing of versions that succeeded or were poisoned). Receipts are not
leased: this host assumes it is the only instance on the storage account. A version overwritten
before its invocation starts is skipped; the new version triggers on its own. A disabled
function (`AzureWebJobs.<name>.Disabled`) does not scan; once switched on again, the versions
written meanwhile trigger.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.functions.blob import InputStream
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from exporter.local.host.app import FunctionSpec
from exporter.local.host.config import (
    DEFAULT_CONNECTION,
    STORAGE_NAME,
    THREAD_PREFIX,
    HostConfig,
    HostError,
    create_queue,
    polling_options,
    queue_client,
    storage_connection,
)
from exporter.local.host.invoker import Invoker, Skip, exception_of
from exporter.local.host.listener import Listener

logger = logging.getLogger("exporter.local.host")

DEFAULT_HOST_ID: Final = "local-host"
RECEIPTS_CONTAINER: Final = "azure-webjobs-hosts"
BLOB_POISON_QUEUE: Final = "webjobs-blobtrigger-poison"
BLOB_POLL_INTERVAL: Final = 1.0


def blob_listener(
    spec: FunctionSpec,
    invoker: Invoker,
    config: HostConfig,
    settings: Mapping[str, str],
    *,
    poll_interval: float,
    slots: BlobSlots,
) -> BlobListener:
    """The listener of a blob function; HostError when its connection or path cannot work."""
    trigger = spec.trigger
    where = f"function {spec.name}, binding {trigger.get('name')!r} ({spec.trigger_type})"
    connection_name = str(trigger.get("connection") or DEFAULT_CONNECTION)
    connection = storage_connection(connection_name, settings, where)
    pattern = BlobPattern.parse(str(trigger.get("path", "")), where)
    host_storage = storage_connection(DEFAULT_CONNECTION, settings, where)
    host_id = (
        settings.get("AzureFunctionsJobHost__id")
        or settings.get("AzureFunctionsWebHost__hostid")
        or DEFAULT_HOST_ID
    )
    try:
        service = BlobServiceClient.from_connection_string(connection)
        container = BlobServiceClient.from_connection_string(
            connection, **polling_options()
        ).get_container_client(pattern.container)
        receipts = BlobServiceClient.from_connection_string(
            host_storage, **polling_options()
        ).get_container_client(RECEIPTS_CONTAINER)
    except ValueError as exc:
        raise HostError(f"{where}: invalid storage connection string: {exc}") from exc
    return BlobListener(
        spec,
        invoker,
        config,
        pattern=pattern,
        service=service,
        container=container,
        receipts=receipts,
        poison=queue_client(connection, BLOB_POISON_QUEUE, where),
        host_id=host_id,
        poll_interval=poll_interval,
        slots=slots,
    )


class BlobSlots:
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
        if not STORAGE_NAME.fullmatch(container):
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


class BlobListener(Listener):
    """Blob trigger semantics: each blob version once, receipts, retries, the poison queue."""

    def __init__(
        self,
        spec: FunctionSpec,
        invoker: Invoker,
        config: HostConfig,
        *,
        pattern: BlobPattern,
        service: BlobServiceClient,
        container: ContainerClient,
        receipts: ContainerClient,
        poison: QueueClient,
        host_id: str,
        poll_interval: float,
        slots: BlobSlots,
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
            if not self._stopping.is_set() and now >= next_scan and not self.disabled():
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
        future.add_done_callback(lambda done: self._events.put((key, exception_of(done))))

    def _value(self, version: _BlobVersion) -> Any:
        """The trigger argument for this version (runs on the worker thread)."""
        container = self._pattern.container
        client = self._service.get_blob_client(container, version.name)
        kind = self._spec.value_kind
        try:
            if kind.startswith("sdk:"):
                properties = client.get_blob_properties()
                if _quoted(properties.etag) != version.etag:
                    raise Skip("blob overwritten before the invocation; the new version triggers")
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
            raise Skip("blob deleted before the invocation") from exc
        except ResourceModifiedError as exc:
            raise Skip("blob overwritten before the invocation; the new version triggers") from exc
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
            elif isinstance(error, Skip):
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
        create_queue(self._poison)
        self._poison.send_message(base64.b64encode(json.dumps(message).encode()).decode("ascii"))
        logger.warning(
            "blob %s/%s failed %d times: sent to %s",
            self._pattern.container,
            version.name,
            version.attempts + 1,
            BLOB_POISON_QUEUE,
        )
