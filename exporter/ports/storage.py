"""What the flow needs of storage, as Protocols (`exporter.adapters.azure_storage` on Azure
Storage; `tests/support/fakes.py` in memory), and reading a CDM entity through them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Protocol

from azure.core.exceptions import (
    ResourceModifiedError,
    ResourceNotFoundError,
)

from exporter.core import cdm
from exporter.core.batching import ContactStream
from exporter.core.snapshots.parts import Parts
from exporter.core.synced_state.delta import Delta
from exporter.core.synced_state.state import Member
from exporter.model.versions import SnapshotVersion, entity_of, entity_version


class _Message(Protocol):
    def encode(self) -> str: ...


class RunStorage(Protocol):
    """What the flow needs of storage (an in-memory version serves the flow's tests)."""

    def send(self, queue: str, message: _Message, *, delay: float = 0) -> None: ...

    def open_snapshot(self, version: SnapshotVersion) -> IO[bytes] | Parts: ...

    def latest_snapshot(self, segment: str) -> SnapshotVersion | None: ...

    @property
    def account_name(self) -> str: ...

    def snapshot_version(self, name: str) -> SnapshotVersion | None: ...

    def read_manifest(self, version: SnapshotVersion) -> bytes: ...

    def note_cdm_entity(self, version: SnapshotVersion) -> None: ...

    def write_batch(self, run_id: str, index: int, contacts_json: str) -> None: ...

    def read_batch(self, run_id: str, index: int) -> bytes: ...

    def open_batch(self, run_id: str, index: int) -> ContactStream: ...

    def write_report(self, run_id: str, report: IO[bytes]) -> str: ...

    def delete_run_blobs(self, run_id: str) -> None: ...

    def reports_older_than(self, cutoff: datetime) -> Iterator[str]: ...

    def delete_report(self, run_id: str) -> None: ...

    def read_state(self, destination: str, segment: str, list_id: str) -> bytes | None: ...

    def state_emails(self, destination: str, segment: str, list_id: str) -> Iterable[bytes]: ...

    def write_state(
        self,
        destination: str,
        segment: str,
        list_id: str,
        members: Iterable[Member],
        fields: Sequence[str],
    ) -> int: ...

    def commit_pending_state(
        self, run_id: str, destination: str, segment: str, list_id: str
    ) -> int: ...

    def write_pending_state(self, run_id: str, delta: Delta) -> int: ...

    def read_pending_index(self, run_id: str) -> bytes: ...

    def pending_emails(self, run_id: str) -> Iterable[bytes]: ...

    def put_run_file(self, run_id: str, name: str, data: bytes | IO[bytes]) -> None: ...

    def open_run_file(self, run_id: str, name: str) -> Iterable[bytes] | None: ...

    def write_removals(self, run_id: str, index: int, emails: list[str]) -> None: ...

    def read_removals(self, run_id: str, index: int) -> list[str]: ...


class ManifestReads(Protocol):
    """What reading a model.json needs of storage (`Storage` and the tests' in-memory one)."""

    @property
    def account_name(self) -> str: ...

    def read_manifest(self, version: SnapshotVersion) -> bytes: ...


class EntityReads(ManifestReads, Protocol):
    """What reading a CDM entity's partitions needs of storage."""

    def snapshot_version(self, name: str) -> SnapshotVersion | None: ...

    def open_version(self, version: SnapshotVersion) -> IO[bytes]: ...


def read_manifest(reads: ManifestReads, version: SnapshotVersion) -> cdm.Manifest:
    """That version of a model.json, parsed (partitions must be in this storage account)."""
    data = reads.read_manifest(version)
    return cdm.parse_manifest(data, name=version.name, account=reads.account_name)


def open_entity(reads: EntityReads, version: SnapshotVersion) -> Parts:
    """A CDM entity's partitions, each pinned to the ETag it had when the manifest was accepted:
    a partition deleted or replaced since fails like a replaced snapshot file does."""
    manifest_name, entity_name = entity_of(version)
    manifest = SnapshotVersion(
        manifest_name, cdm.manifest_etag(version.etag), version.last_modified, 0
    )
    entity = read_manifest(reads, manifest).entity(entity_name)
    found = [reads.snapshot_version(p.blob) for p in entity.partitions]
    present = [v for v in found if v is not None]
    if len(present) < len(found):
        gone = next(p.blob for p, v in zip(entity.partitions, found, strict=True) if v is None)
        raise ResourceNotFoundError(f"partition {gone} was deleted after model.json arrived")
    if entity_version(manifest, entity, present).etag != version.etag:
        raise ResourceModifiedError("a partition was replaced after model.json was accepted")
    pinned = {v.name: v for v in present}
    return cdm.entity_parts(entity, lambda p: reads.open_version(pinned[p.blob]))


class AdminStorage(Protocol):
    """What administration needs of storage besides the flow's: upload a snapshot, read a reject
    report, find and delete a destination's blobs (in the app's container)."""

    @property
    def app_url(self) -> str:
        """The app container's URL (where a reject report can be fetched, with access)."""
        ...

    def upload_snapshot(self, name: str, data: IO[bytes], size: int) -> SnapshotVersion:
        """Put a snapshot at `segments/<name>` (replacing one of that name)."""
        ...

    def has_app_blobs(self, prefix: str) -> bool: ...

    def delete_app_blobs(self, prefix: str, *, keep: str = "") -> int:
        """Delete the app's blobs under `prefix` but `keep`; returns how many. One gone already
        (a repeat, or another removal at the same time) is not an error."""
        ...

    def read_app_blob(self, name: str, *, limit: int) -> tuple[bytes, int]:
        """(at most the first `limit` bytes, the blob's whole size)."""
        ...

    def app_blob_chunks(self, name: str) -> Iterator[bytes]: ...


class AppStorage(RunStorage, AdminStorage, Protocol):
    """All of it: what `Services` holds (the flow's steps use `RunStorage`'s part)."""
