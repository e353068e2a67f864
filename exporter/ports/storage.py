"""What the flow needs of storage, as Protocols (`exporter.adapters.azure_storage` on Azure
Storage; `tests/support/fakes.py` in memory), and reading a CDM entity through them.

Each Protocol is one thing a step needs; `Services` hands each out as a typed view of the same
storage (`svc.queues`, `svc.batch_blobs` …), so mypy proves a step touches only its part. The
Protocol (its methods, `Services`' view): the steps of `exporter.flow` that use it.

- `Queues` (send; `queues`): run_requests, cdm_folders, plan, sending, finish, verification
- `SnapshotReads` (latest_snapshot, snapshot_version, open_snapshot; `snapshots`):
  run_requests (the timer's newest), cdm_folders (partitions), plan and heal (read a version)
- `CdmManifests` (account_name, read_manifest, note_cdm_entity; `manifests`): cdm_folders
- `BatchBlobs` (write_batch, open_batch, read_batch; `batch_blobs`): plan and heal write,
  sending sends, commit reads those that did not land
- `RemovalBlobs` (write_removals, read_removals; `removal_blobs`): removals (mirror mode; plan
  and heal through it), commit reads those not done
- `SyncedStates` (read_state, state_emails, write_state, commit_pending_state;
  `synced_states`): plan compares against it, commit writes the next run's
- `PendingStates` (write_pending_state, read_pending_index, pending_emails; `pending_states`):
  plan writes, verification compares the list with it, commit reads it
- `RunFiles` (put_run_file, open_run_file, delete_run_blobs; `run_files`): verification writes
  what a look found, heal and commit read it; plan (on failure) and finish delete a run's files
- `ReportBlobs` (write_report, reports_older_than, delete_report; `report_blobs`): plan writes,
  retention deletes

`RunStorage` is all of them (the flow's part); `AdminStorage` what administration needs
besides; `AppStorage` both: what `Services` holds. `ManifestReads` and `EntityReads` are what
`read_manifest` and `open_entity` (below) need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
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


class Queues(Protocol):
    """The flow's queues: the next step of a run, now or `delay` seconds later."""

    def send(self, queue: str, message: _Message, *, delay: float = 0) -> None: ...


class SnapshotReads(Protocol):
    """Snapshots in `segments/`: the newest of a segment, a blob's version, exactly one version's
    content (a file's stream, or a CDM entity's partitions)."""

    def latest_snapshot(self, segment: str) -> SnapshotVersion | None: ...

    def snapshot_version(self, name: str) -> SnapshotVersion | None: ...

    def open_snapshot(self, version: SnapshotVersion) -> IO[bytes] | Parts: ...


class ManifestReads(Protocol):
    """What reading a model.json needs of storage (`Storage` and the tests' in-memory one)."""

    @property
    def account_name(self) -> str: ...

    def read_manifest(self, version: SnapshotVersion) -> bytes: ...


class CdmManifests(ManifestReads, Protocol):
    """A CDM folder's model.json read, and the pointer to a segment's newest CDM entity moved."""

    def note_cdm_entity(self, version: SnapshotVersion) -> None: ...


class BatchBlobs(Protocol):
    """A run's upsert batches (claim checks: a JSON array of contacts each)."""

    def write_batch(self, run_id: str, index: int, contacts_json: str) -> None: ...

    def open_batch(self, run_id: str, index: int) -> ContactStream: ...

    def read_batch(self, run_id: str, index: int) -> bytes: ...


class RemovalBlobs(Protocol):
    """A run's removal batches (mirror mode: the emails to take off the list)."""

    def write_removals(self, run_id: str, index: int, emails: list[str]) -> None: ...

    def read_removals(self, run_id: str, index: int) -> list[str]: ...


class SyncedStates(Protocol):
    """The synced state of destination x segment x list: what the next run compares against."""

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


class PendingStates(Protocol):
    """A run's pending state: what its snapshot says, with each contact's field mask."""

    def write_pending_state(self, run_id: str, delta: Delta) -> int: ...

    def read_pending_index(self, run_id: str) -> bytes: ...

    def pending_emails(self, run_id: str) -> Iterable[bytes]: ...


class RunFiles(Protocol):
    """A run's other files (what its last look found), and deleting all a run wrote but its
    reject report, when it ends."""

    def put_run_file(self, run_id: str, name: str, data: bytes | IO[bytes]) -> None: ...

    def open_run_file(self, run_id: str, name: str) -> Iterable[bytes] | None: ...

    def delete_run_blobs(self, run_id: str) -> None: ...


class ReportBlobs(Protocol):
    """Reject reports: written by the planner, deleted after their retention."""

    def write_report(self, run_id: str, report: IO[bytes]) -> str: ...

    def reports_older_than(self, cutoff: datetime) -> Iterator[str]: ...

    def delete_report(self, run_id: str) -> None: ...


class RunStorage(
    Queues,
    SnapshotReads,
    CdmManifests,
    BatchBlobs,
    RemovalBlobs,
    SyncedStates,
    PendingStates,
    RunFiles,
    ReportBlobs,
    Protocol,
):
    """All the flow needs of storage (each step uses its part, see the module's docstring)."""


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
    """What administration needs of storage besides the flow's: upload, list and remove
    snapshots, read a reject report, find and delete a destination's blobs (in the app's
    container)."""

    @property
    def app_url(self) -> str:
        """The app container's URL (where a reject report can be fetched, with access)."""
        ...

    def upload_snapshot(self, name: str, data: IO[bytes], size: int) -> SnapshotVersion:
        """Put a snapshot at `segments/<name>` (replacing one of that name)."""
        ...

    def stage_snapshot(
        self, name: str, data: IO[bytes], *, stop: Callable[[], bool]
    ) -> Callable[[], SnapshotVersion]:
        """Send `data` towards `segments/<name>` without making it a blob yet (uncommitted
        blocks: no reader and no trigger sees them, and the service drops them unless they are
        committed); returns the commit, which makes it the blob (replacing one of that name).
        `stop` is asked between blocks: true ends the staging early (then never commit)."""
        ...

    def snapshot_files(self, segment: str | None = None) -> Iterator[SnapshotVersion]:
        """The snapshot files in `segments` (`<segment>/<file>`, see `is_snapshot_file`) of one
        segment, or of every segment, with their properties. A CDM folder's partitions (deeper
        down) are never listed."""
        ...

    def remove_snapshot(self, version: SnapshotVersion) -> bool:
        """Delete exactly this version of a snapshot file; False when it is not there any more
        (deleted, or replaced by a newer upload, which stays)."""
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
    """All of it: what `Services` holds (the flow's steps see `RunStorage`'s parts)."""
