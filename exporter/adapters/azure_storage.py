"""The app's Azure Storage: snapshots, the app's own blobs and the queue messages (layout:
`exporter.model.layout`).

In Azure the account is reached with a managed identity (`AzureWebJobsStorage__accountName`,
optionally `AzureWebJobsStorage__clientId`); locally with Azurite's connection string.
Snapshots are read in ranges, pinned to their version (a newer upload makes reading fail, not
mix); batches stream from their blob to SendGrid in 1 MiB reads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import IO, Any, Final, cast

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableServiceClient
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.blob import (
    BlobProperties,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
)
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from exporter.core import cdm
from exporter.core.batching import ContactStream
from exporter.core.errors import InputError
from exporter.core.snapshots import Parts
from exporter.core.synced_state import Delta, Member, state_size, write_state
from exporter.model.layout import (
    APP_CONTAINER,
    SEGMENTS,
    batch_blob,
    cdm_pointer_blob,
    removal_blob,
    report_blob,
    state_blob,
)
from exporter.model.messages import (
    CDM_MANIFESTS,
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    POISON_SUFFIX,
)
from exporter.model.versions import (
    SnapshotVersion,
    entity_of,
    is_newer,
    is_snapshot_file,
    pointer_json,
    pointer_version,
)
from exporter.ports.storage import _Message, open_entity

QUEUES: Final = (EXPORT_REQUESTS, CONTACT_BATCHES, IMPORT_JOBS, LIST_CHECKS, CDM_MANIFESTS)


MAX_QUEUE_DELAY: Final = 7 * 24 * 3600 - 60  # a queue message can be hidden for up to 7 days


READ_RANGE: Final = 4 << 20
"""Snapshots are read in 4 MiB ranges (the SDK's first GET would otherwise take 32 MiB)."""


BATCH_RANGE: Final = 1 << 20
"""Batch blobs are read in 1 MiB ranges while they are sent: a dozen workers sending at once
hold about a dozen MiB of batches, not a dozen 6 MB batches twice over."""


def _credential(env: Mapping[str, str], prefix: str) -> TokenCredential:
    client_id = env.get(f"{prefix}__clientId")
    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()


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

    @property
    def account_name(self) -> str:
        """The storage account's name: CDM partition URLs must name this account."""
        return str(self.blobs.account_name)

    def snapshot_version(self, name: str) -> SnapshotVersion | None:
        try:
            props = self.segments.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return SnapshotVersion(name, str(props.etag), props.last_modified, int(props.size))

    def open_snapshot(self, version: SnapshotVersion) -> IO[bytes] | Parts:
        """Exactly that version: a snapshot file's stream, or a CDM entity's partitions as they
        were when its model.json was accepted (a newer upload makes reading fail, not mix)."""
        if cdm.split_entity_snapshot(version.name) is not None:
            return open_entity(self, version)
        return self.open_version(version)

    def open_version(self, version: SnapshotVersion) -> IO[bytes]:
        """A stream of exactly that blob version in `segments`."""
        downloader = self.segments.get_blob_client(version.name).download_blob(
            etag=version.etag, match_condition=MatchConditions.IfNotModified, max_concurrency=1
        )
        return cast(IO[bytes], downloader)

    def read_manifest(self, version: SnapshotVersion) -> bytes:
        """That version of a CDM model.json; one over the size limit is refused after its first
        range, never read whole."""
        downloader = self.segments.get_blob_client(version.name).download_blob(
            etag=version.etag, match_condition=MatchConditions.IfNotModified
        )
        cdm.check_size(version.name, int(downloader.size))
        data: bytes = downloader.readall()
        return data

    def latest_snapshot(self, segment: str) -> SnapshotVersion | None:
        """The newest snapshot of a segment: a file `segments/<segment>/<file>`, or the CDM
        entity of that name its pointer blob names (see `note_cdm_entity`), whichever is newer."""
        newest = self._cdm_entity(segment)
        for item in self.segments.walk_blobs(name_starts_with=f"{segment}/", delimiter="/"):
            if not isinstance(item, BlobProperties) or not is_snapshot_file(item.name):
                continue  # a sub-folder (a CDM folder's partitions, say), or not a snapshot
            version = SnapshotVersion(
                item.name, str(item.etag), item.last_modified, int(item.size or 0)
            )
            # Blob times have one-second resolution: a tie goes to the later name, as in
            # `slots.order` (exports name their files by time).
            if newest is None or (version.last_modified, version.name) > (
                newest.last_modified,
                newest.name,
            ):
                newest = version
        return newest

    def note_cdm_entity(self, version: SnapshotVersion) -> None:
        """Point `cdm/<segment>.json` at this CDM entity snapshot, unless it points at a newer
        one: the timer finds a segment's CDM snapshot there without listing the container.
        Concurrent manifests are settled with ETags (the newest wins)."""
        client = self.app.get_blob_client(cdm_pointer_blob(entity_of(version)[1]))
        for _ in range(5):
            try:
                current = client.download_blob()
                held: SnapshotVersion | None = pointer_version(current.readall())
                etag: str | None = current.properties.etag
            except ResourceNotFoundError:
                held, etag = None, None
            if held is not None and not is_newer(version, held):
                return
            try:
                if etag is None:
                    client.upload_blob(pointer_json(version))
                else:
                    client.upload_blob(
                        pointer_json(version),
                        overwrite=True,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another manifest moved the pointer meanwhile: compare again
            return

    def _cdm_entity(self, segment: str) -> SnapshotVersion | None:
        """The segment's pointed-at CDM entity, if its model.json is still that version (a
        replaced one that is still waiting for partitions must not be re-exported)."""
        try:
            data = self.app.download_blob(cdm_pointer_blob(segment)).readall()
        except ResourceNotFoundError:
            return None
        version = pointer_version(data)
        current = self.snapshot_version(entity_of(version)[0])
        if current is None or current.etag != cdm.manifest_etag(version.etag):
            return None
        return version

    # --- run blobs ----------------------------------------------------------------------------

    def write_batch(self, run_id: str, index: int, contacts_json: str) -> None:
        self.app.upload_blob(
            batch_blob(run_id, index), contacts_json.encode("utf-8"), overwrite=True
        )

    def read_batch(self, run_id: str, index: int) -> bytes:
        """A batch's contacts as the UTF-8 JSON array they were written as."""
        data: bytes = self.app.download_blob(batch_blob(run_id, index)).readall()
        return data

    def open_batch(self, run_id: str, index: int) -> ContactStream:
        """A batch's contacts, read in BATCH_RANGE pieces as they are sent (see `upsert`)."""
        blob = self.app.get_blob_client(batch_blob(run_id, index))
        first = blob.download_blob(offset=0, length=BATCH_RANGE, max_concurrency=1)
        # The answer's Content-Range ("bytes 0-1048575/5188891") holds the whole blob's size.
        whole = first.properties.content_range
        size = int(whole.rsplit("/", 1)[1]) if whole else int(first.properties.size)

        def chunks() -> Iterator[bytes]:
            data: bytes = first.readall()
            yield data
            offset = len(data)
            while offset < size:
                part = blob.download_blob(
                    offset=offset,
                    length=min(BATCH_RANGE, size - offset),
                    etag=first.properties.etag,
                    match_condition=MatchConditions.IfNotModified,
                    max_concurrency=1,
                )
                data = part.readall()
                if not data:
                    raise OSError(f"batch blob {blob.blob_name} ended early")
                yield data
                offset += len(data)

        return ContactStream(size, chunks())

    def write_report(self, run_id: str, report: IO[bytes]) -> str:
        name = report_blob(run_id)
        report.seek(0)
        self.app.upload_blob(name, report, overwrite=True)
        return name

    def delete_run_blobs(self, run_id: str) -> None:
        """The run's contact data (batches, removals, its pending state, what its looks found):
        gone once the run has ended (or failed to plan). The reject report stays (it holds row
        numbers and reasons, no profile values) until its retention runs out."""
        keep = report_blob(run_id)
        for blob in self.app.list_blobs(name_starts_with=f"runs/{run_id}/"):
            if blob.name != keep:
                with contextlib.suppress(ResourceNotFoundError):
                    self.app.delete_blob(blob.name)

    def reports_older_than(self, cutoff: datetime) -> Iterator[str]:
        """Run ids whose reject report was written before `cutoff`."""
        for blob in self.app.list_blobs(name_starts_with="runs/"):
            if blob.name.endswith("/rejects.csv") and blob.last_modified < cutoff:
                yield blob.name.split("/")[1]

    def delete_report(self, run_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.app.delete_blob(report_blob(run_id))

    # --- synced state (see exporter.core.synced_state) ----------------------------------------

    def read_state(self, destination: str, segment: str, list_id: str) -> bytes | None:
        """The committed state's index of this destination x segment x list, or None before
        its first run (a destination moved to another list starts that list from nothing)."""
        try:
            data: bytes = self.app.download_blob(
                state_blob(destination, segment, list_id, "index")
            ).readall()
        except ResourceNotFoundError:
            return None
        return data

    def state_emails(self, destination: str, segment: str, list_id: str) -> Iterable[bytes]:
        """The committed state's emails, streamed line by line."""
        downloader = self.app.download_blob(state_blob(destination, segment, list_id, "emails"))
        return _Lines(downloader.chunks())

    def write_state(
        self,
        destination: str,
        segment: str,
        list_id: str,
        members: Iterable[Member],
        fields: Sequence[str],
    ) -> int:
        """Commit a state (members in key order) for this destination x segment x list, and
        delete the states of the other lists the destination x segment had."""
        with (
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as index,
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as emails,
        ):
            count = write_state(members, index, emails, fields)
            for part, spool in (("emails", emails), ("index", index)):  # the index last
                spool.seek(0)
                self.app.upload_blob(
                    state_blob(destination, segment, list_id, part), spool, overwrite=True
                )
        self._drop_other_states(destination, segment, list_id)
        return count

    def commit_pending_state(
        self, run_id: str, destination: str, segment: str, list_id: str
    ) -> int:
        """Commit a run's pending state as it is (a streamed blob-to-blob copy, the index last:
        it is what the next run reads first); returns its member count."""
        for part in ("emails", "index"):
            source = self.app.download_blob(f"runs/{run_id}/state/{part}")
            self.app.upload_blob(
                state_blob(destination, segment, list_id, part), source.chunks(), overwrite=True
            )
        self._drop_other_states(destination, segment, list_id)
        header = self.app.download_blob(
            state_blob(destination, segment, list_id, "index"), offset=0, length=16
        ).readall()
        return state_size(header)

    def _drop_other_states(self, destination: str, segment: str, list_id: str) -> None:
        """Only the list the destination names now is trusted: other lists' states of the pair
        (and the one kept before states were per list) go."""
        keep = state_blob(destination, segment, list_id, "")
        for blob in self.app.list_blobs(name_starts_with=f"state/{destination}/{segment}/"):
            if not blob.name.startswith(keep):
                with contextlib.suppress(ResourceNotFoundError):
                    self.app.delete_blob(blob.name)

    def write_pending_state(self, run_id: str, delta: Delta) -> int:
        """The state this run's snapshot says (its members and their contacts), beside the run:
        what its list is compared with, and what its committed state is made from."""
        with (
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as index,
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as emails,
        ):
            count = delta.write(index, emails)
            for part, spool in (("index", index), ("emails", emails)):
                spool.seek(0)
                self.app.upload_blob(f"runs/{run_id}/state/{part}", spool, overwrite=True)
        return count

    def read_pending_index(self, run_id: str) -> bytes:
        data: bytes = self.app.download_blob(f"runs/{run_id}/state/index").readall()
        return data

    def pending_emails(self, run_id: str) -> Iterable[bytes]:
        return _Lines(self.app.download_blob(f"runs/{run_id}/state/emails").chunks())

    def put_run_file(self, run_id: str, name: str, data: bytes | IO[bytes]) -> None:
        """A file of the run's own (what a look at its list found), replaced if there."""
        self.app.upload_blob(f"runs/{run_id}/{name}", data, overwrite=True)

    def open_run_file(self, run_id: str, name: str) -> Iterable[bytes] | None:
        """A file of the run's, line by line (None when it was never written)."""
        client = self.app.get_blob_client(f"runs/{run_id}/{name}")
        try:
            downloader = client.download_blob()
        except ResourceNotFoundError:
            return None
        return _Lines(downloader.chunks())

    def write_removals(self, run_id: str, index: int, emails: list[str]) -> None:
        self.app.upload_blob(
            removal_blob(run_id, index), ("\n".join(emails) + "\n").encode(), overwrite=True
        )

    def read_removals(self, run_id: str, index: int) -> list[str]:
        data: bytes = self.app.download_blob(removal_blob(run_id, index)).readall()
        return [line for line in data.decode().split("\n") if line]

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


AZURITE_CONNECTION_STRING: Final = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    # Azurite's well-known development key: public, documented, and useless outside Azurite.
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
