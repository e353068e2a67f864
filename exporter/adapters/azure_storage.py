"""The app's Azure Storage account: its clients from app settings, creating its containers and
queues, queue messages, and what administration needs; the blobs the flow reads and writes are
its parts' (`storage_snapshots`, `storage_runs`, `storage_state`; layout:
`exporter.model.layout`).

In Azure the account is reached with a managed identity (`AzureWebJobsStorage__accountName`,
optionally `AzureWebJobsStorage__clientId`); locally with Azurite's connection string.
Snapshots are read in ranges, pinned to their version (a newer upload makes reading fail, not
mix); batches stream from their blob to SendGrid in 1 MiB reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, Final

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.blob import BlobServiceClient, ContentSettings
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from exporter.adapters.storage_runs import RunBlobs
from exporter.adapters.storage_snapshots import SnapshotBlobs
from exporter.adapters.storage_state import StateBlobs
from exporter.core.errors import InputError
from exporter.model.layout import APP_CONTAINER, SEGMENTS
from exporter.model.messages import (
    CDM_MANIFESTS,
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    NOTIFICATIONS,
    POISON_SUFFIX,
)
from exporter.model.versions import SnapshotVersion
from exporter.ports.storage import _Message

QUEUES: Final = (
    EXPORT_REQUESTS,
    CONTACT_BATCHES,
    IMPORT_JOBS,
    LIST_CHECKS,
    CDM_MANIFESTS,
    NOTIFICATIONS,
)


MAX_QUEUE_DELAY: Final = 7 * 24 * 3600 - 60  # a queue message can be hidden for up to 7 days


READ_RANGE: Final = 4 << 20
"""Snapshots are read in 4 MiB ranges (the SDK's first GET would otherwise take 32 MiB)."""


def _credential(env: Mapping[str, str], prefix: str) -> TokenCredential:
    client_id = env.get(f"{prefix}__clientId")
    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()


class Storage(SnapshotBlobs, RunBlobs, StateBlobs):
    """Blob, queue and table clients for one storage account, created once per process."""

    def __init__(
        self,
        blobs: BlobServiceClient,
        queues: QueueServiceClient,
        tables: TableServiceClient,
    ) -> None:
        self.blobs = blobs
        self.queues = queues
        self.tables = tables

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        setting: str = "AzureWebJobsStorage",
        *,
        options: Callable[[str], dict[str, Any]] | None = None,
    ) -> Storage:
        """From a connection string setting, or identity-based `<setting>__accountName`.
        `options("blob" | "queue" | "table")`: more keyword arguments for that client (the
        CLI's short timeouts: `exporter.wiring`)."""
        env = os.environ if env is None else env
        more = options or (lambda _client: {})
        connection = env.get(setting, "").strip()
        if connection:
            if connection == "UseDevelopmentStorage=true":
                connection = AZURITE_CONNECTION_STRING
            return cls(
                BlobServiceClient.from_connection_string(
                    connection,
                    max_single_get_size=READ_RANGE,
                    max_chunk_get_size=READ_RANGE,
                    **more("blob"),
                ),
                QueueServiceClient.from_connection_string(connection, **more("queue")),
                TableServiceClient.from_connection_string(connection, **more("table")),
            )
        account = env.get(f"{setting}__accountName", "").strip()
        if not account:
            raise InputError(
                f"no storage configured: set {setting} (a connection string) or "
                f"{setting}__accountName (a managed identity with access to the account)"
            )
        credential = _credential(env, setting)
        return cls(
            BlobServiceClient(
                f"https://{account}.blob.core.windows.net",
                credential=credential,
                max_single_get_size=READ_RANGE,
                max_chunk_get_size=READ_RANGE,
                **more("blob"),
            ),
            QueueServiceClient(
                f"https://{account}.queue.core.windows.net", credential=credential, **more("queue")
            ),
            TableServiceClient(
                f"https://{account}.table.core.windows.net", credential=credential, **more("table")
            ),
        )

    # --- set-up -----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the containers and queues the app uses (idempotent; cheap to repeat)."""
        for name in (SEGMENTS, APP_CONTAINER):
            with contextlib.suppress(ResourceExistsError):
                self.blobs.create_container(name)
        for queue in QUEUES:
            for name in (queue, queue + POISON_SUFFIX):
                with contextlib.suppress(ResourceExistsError):
                    self.queues.create_queue(name)

    # --- queues -----------------------------------------------------------------------------

    def queue(self, name: str) -> QueueClient:
        return self.queues.get_queue_client(
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )

    def send(self, queue: str, message: _Message, *, delay: float = 0) -> None:
        """Enqueue a message (base64, as the Functions host expects), hidden for `delay` s."""
        seconds = min(MAX_QUEUE_DELAY, max(0, round(delay)))
        self.queue(queue).send_message(message.encode(), visibility_timeout=seconds or None)

    # --- administration ----------------------------------------------------------------------

    @property
    def app_url(self) -> str:
        return str(self.app.url)

    def upload_snapshot(self, name: str, data: IO[bytes], size: int) -> SnapshotVersion:
        blob = self.segments.get_blob_client(name)
        result = blob.upload_blob(
            data,
            overwrite=True,
            max_concurrency=2,
            content_settings=ContentSettings(content_type="application/octet-stream"),
        )
        return SnapshotVersion(name, str(result["etag"]), result["last_modified"], size)

    def has_app_blobs(self, prefix: str) -> bool:
        found = self.app.list_blobs(name_starts_with=prefix, results_per_page=1)
        return next(iter(found), None) is not None

    def delete_app_blobs(self, prefix: str, *, keep: str = "") -> int:
        deleted = 0
        for blob in self.app.list_blobs(name_starts_with=prefix):
            if blob.name != keep:
                with contextlib.suppress(ResourceNotFoundError):
                    self.app.delete_blob(blob.name)
                    deleted += 1
        return deleted

    def read_app_blob(self, name: str, *, limit: int) -> tuple[bytes, int]:
        size = int(self.app.get_blob_client(name).get_blob_properties().size)
        data: bytes = self.app.download_blob(name, 0, min(size, limit)).readall()
        return data, size

    def app_blob_chunks(self, name: str) -> Iterator[bytes]:
        yield from self.app.download_blob(name).chunks()

    def blobs_under(self, container: str, prefix: str) -> Iterator[Any]:
        yield from self.blobs.get_container_client(container).list_blobs(name_starts_with=prefix)


AZURITE_CONNECTION_STRING: Final = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    # Azurite's well-known development key: public, documented, and useless outside Azurite.
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
