"""The app's Azure Storage: where snapshots, batches, reports and queue messages live.

Layout (one storage account, `AzureWebJobsStorage`):
- container `segments`: snapshots dropped by the data platform, `segments/<segment>/<file>`;
- container `exporter`: our own blobs: `destinations/<name>.json`,
  `runs/<run_id>/batches/<index>.json` (claim checks: a batch's contacts as a JSON array),
  `runs/<run_id>/rejects.csv` (the reject report: row numbers and reasons, no row values);
- queues `export-requests`, `contact-batches`, `import-jobs` (base64 JSON messages, as the
  Functions host expects), and the host's `<queue>-poison` queues;
- table `runs` (see `exporter.ledger`).

In Azure the account is reached with a managed identity (`AzureWebJobsStorage__accountName`,
optionally `AzureWebJobsStorage__clientId`); locally with Azurite's connection string.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import IO, Any, Final, Protocol, cast

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from exporter.errors import InputError
from exporter.messages import CONTACT_BATCHES, EXPORT_REQUESTS, IMPORT_JOBS, POISON_SUFFIX
from exporter.snapshots import detect_format
from exporter.state import Delta

SEGMENTS: Final = "segments"
APP_CONTAINER: Final = "exporter"
QUEUES: Final = (EXPORT_REQUESTS, CONTACT_BATCHES, IMPORT_JOBS)
MAX_QUEUE_DELAY: Final = 7 * 24 * 3600 - 60  # a queue message can be hidden for up to 7 days
READ_RANGE: Final = 4 << 20
"""Snapshots are read in 4 MiB ranges (the SDK's first GET would otherwise take 32 MiB)."""


@dataclass(frozen=True, slots=True)
class SnapshotVersion:
    """A snapshot blob as it is now: its name, ETag (the version) and when it was written."""

    name: str
    etag: str
    last_modified: datetime
    size: int


class _Message(Protocol):
    def encode(self) -> str: ...


def _credential(env: Mapping[str, str], prefix: str) -> TokenCredential:
    client_id = env.get(f"{prefix}__clientId")
    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()


class RunStorage(Protocol):
    """What the flow needs of storage (an in-memory version serves the flow's tests)."""

    def send(self, queue: str, message: _Message, *, delay: float = 0) -> None: ...

    def open_snapshot(self, version: SnapshotVersion) -> IO[bytes]: ...

    def latest_snapshot(self, segment: str) -> SnapshotVersion | None: ...

    def write_batch(self, run_id: str, index: int, contacts_json: str) -> None: ...

    def read_batch(self, run_id: str, index: int) -> bytes: ...

    def write_report(self, run_id: str, report: IO[bytes]) -> str: ...

    def delete_run_blobs(self, run_id: str) -> None: ...

    def read_state(self, destination: str, segment: str) -> bytes | None: ...

    def write_pending_state(self, run_id: str, delta: Delta) -> int: ...

    def commit_state(self, run_id: str, destination: str, segment: str) -> None: ...

    def state_emails(self, destination: str, segment: str) -> IO[bytes]: ...

    def write_removals(self, run_id: str, index: int, emails: list[str]) -> None: ...

    def read_removals(self, run_id: str, index: int) -> list[str]: ...


class Storage:
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
        cls, env: Mapping[str, str] | None = None, setting: str = "AzureWebJobsStorage"
    ) -> Storage:
        """From a connection string setting, or identity-based `<setting>__accountName`."""
        env = os.environ if env is None else env
        connection = env.get(setting, "").strip()
        if connection:
            if connection == "UseDevelopmentStorage=true":
                connection = AZURITE_CONNECTION_STRING
            return cls(
                BlobServiceClient.from_connection_string(
                    connection, max_single_get_size=READ_RANGE, max_chunk_get_size=READ_RANGE
                ),
                QueueServiceClient.from_connection_string(connection),
                TableServiceClient.from_connection_string(connection),
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
            ),
            QueueServiceClient(f"https://{account}.queue.core.windows.net", credential=credential),
            TableServiceClient(f"https://{account}.table.core.windows.net", credential=credential),
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

    @cached_property
    def app(self) -> ContainerClient:
        return self.blobs.get_container_client(APP_CONTAINER)

    @cached_property
    def segments(self) -> ContainerClient:
        return self.blobs.get_container_client(SEGMENTS)

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

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot_version(self, name: str) -> SnapshotVersion | None:
        try:
            props = self.segments.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return SnapshotVersion(name, str(props.etag), props.last_modified, int(props.size))

    def open_snapshot(self, version: SnapshotVersion) -> IO[bytes]:
        """A stream of exactly that version (a newer upload makes reading it fail, not mix)."""
        downloader = self.segments.get_blob_client(version.name).download_blob(
            etag=version.etag, match_condition=MatchConditions.IfNotModified, max_concurrency=1
        )
        return cast(IO[bytes], downloader)

    def latest_snapshot(self, segment: str) -> SnapshotVersion | None:
        """The newest snapshot file under `segments/<segment>/`, if any."""
        newest: SnapshotVersion | None = None
        for blob in self.segments.list_blobs(name_starts_with=f"{segment}/"):
            if not is_snapshot_file(blob.name):
                continue
            version = SnapshotVersion(
                blob.name, str(blob.etag), blob.last_modified, int(blob.size or 0)
            )
            if newest is None or version.last_modified > newest.last_modified:
                newest = version
        return newest

    # --- run blobs ----------------------------------------------------------------------------

    def write_batch(self, run_id: str, index: int, contacts_json: str) -> None:
        self.app.upload_blob(
            batch_blob(run_id, index), contacts_json.encode("utf-8"), overwrite=True
        )

    def read_batch(self, run_id: str, index: int) -> bytes:
        """A batch's contacts as the UTF-8 JSON array they were written as."""
        data: bytes = self.app.download_blob(batch_blob(run_id, index)).readall()
        return data

    def write_report(self, run_id: str, report: IO[bytes]) -> str:
        name = f"runs/{run_id}/rejects.csv"
        report.seek(0)
        self.app.upload_blob(name, report, overwrite=True)
        return name

    def delete_run_blobs(self, run_id: str) -> None:
        for blob in self.app.list_blobs(name_starts_with=f"runs/{run_id}/batches/"):
            with contextlib.suppress(ResourceNotFoundError):
                self.app.delete_blob(blob.name)

    # --- synced state (see exporter.state) -------------------------------------------------------

    def read_state(self, destination: str, segment: str) -> bytes | None:
        """The committed state's index (16 bytes a member), or None before the first success."""
        try:
            data: bytes = self.app.download_blob(
                state_blob(destination, segment, "index")
            ).readall()
        except ResourceNotFoundError:
            return None
        return data

    def write_pending_state(self, run_id: str, delta: Delta) -> int:
        """The state this run would leave, beside the run until it has fully succeeded."""
        with (
            tempfile.SpooledTemporaryFile(max_size=32 << 20) as index,
            tempfile.SpooledTemporaryFile(max_size=32 << 20) as emails,
        ):
            count = delta.write(index, emails)
            for part, spool in (("index", index), ("emails", emails)):
                spool.seek(0)
                self.app.upload_blob(f"runs/{run_id}/state/{part}", spool, overwrite=True)
        return count

    def commit_state(self, run_id: str, destination: str, segment: str) -> None:
        """Make a run's pending state the destination x segment's state (streamed copy)."""
        for part in ("emails", "index"):  # the index last: it is what the next run reads first
            source = self.app.download_blob(f"runs/{run_id}/state/{part}")
            self.app.upload_blob(
                state_blob(destination, segment, part), source.chunks(), overwrite=True
            )

    def state_emails(self, destination: str, segment: str) -> IO[bytes]:
        """The committed state's emails, streamed line by line."""
        downloader = self.app.download_blob(state_blob(destination, segment, "emails"))
        return cast(IO[bytes], _Lines(downloader.chunks()))

    def write_removals(self, run_id: str, index: int, emails: list[str]) -> None:
        self.app.upload_blob(
            removal_blob(run_id, index), ("\n".join(emails) + "\n").encode(), overwrite=True
        )

    def read_removals(self, run_id: str, index: int) -> list[str]:
        data: bytes = self.app.download_blob(removal_blob(run_id, index)).readall()
        return [line for line in data.decode().split("\n") if line]

    def blobs_under(self, container: str, prefix: str) -> Iterator[Any]:
        yield from self.blobs.get_container_client(container).list_blobs(name_starts_with=prefix)


class _Lines:
    """Lines of a stream of byte chunks (iteration only: what `read_emails` needs)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        rest = b""
        for chunk in self._chunks:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest


def removal_blob(run_id: str, index: int) -> str:
    return f"runs/{run_id}/removals/{index:05d}.txt"


def state_blob(destination: str, segment: str, part: str) -> str:
    return f"state/{destination}/{segment}/{part}"


def batch_blob(run_id: str, index: int) -> str:
    return f"runs/{run_id}/batches/{index:05d}.json"


CDM_MANIFEST: Final = "model.json"


def is_snapshot_file(name: str) -> bool:
    """A blob the exporter treats as a snapshot: a CSV or JSON Lines file, maybe gzipped.

    A CDM manifest (`model.json`, written by Customer Insights' folder export) is not one: it
    describes a folder of partitions, and is never read as JSON Lines.
    """
    if name.rsplit("/", 1)[-1].lower() == CDM_MANIFEST:
        return False
    return detect_format(name) is not None


AZURITE_CONNECTION_STRING: Final = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    # Azurite's well-known development key: public, documented, and useless outside Azurite.
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
