"""In-memory stand-ins behind the flow's narrow storage interface (for fast flow tests)."""

from __future__ import annotations

import hashlib
import io
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter.core import cdm
from exporter.core.batching import ContactStream
from exporter.core.snapshots.parts import Parts
from exporter.core.synced_state.delta import Delta
from exporter.core.synced_state.state import Member, state_size
from exporter.core.synced_state.writing import write_state
from exporter.model.layout import cdm_pointer_blob
from exporter.model.versions import (
    SnapshotVersion,
    entity_of,
    is_newer,
    is_snapshot_file,
    pointer_json,
    pointer_version,
)
from exporter.ports.storage import open_entity


@dataclass
class Sent:
    queue: str
    body: str
    delay: float


@dataclass
class MemoryStorage:
    """Snapshots, app blobs and queues in dicts; queues are drained by the test, in order."""

    snapshots: dict[str, tuple[bytes, SnapshotVersion]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    queues: dict[str, list[Sent]] = field(default_factory=lambda: defaultdict(list))
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    account_name: str = "devstoreaccount1"
    written: dict[str, datetime] = field(default_factory=dict)
    """When each reject report was written (what retention goes by)."""
    opened: list[str] = field(default_factory=list)
    """Every blob version opened for reading, in order (what a CDM read touched, and when)."""

    def put_snapshot(self, name: str, data: bytes) -> SnapshotVersion:
        etag = '"' + hashlib.sha256(data + name.encode()).hexdigest()[:16] + '"'
        at = datetime(2026, 11, 24, tzinfo=UTC) + timedelta(seconds=next(self._clock))
        version = SnapshotVersion(name, etag, at, len(data))
        self.snapshots[name] = (data, version)
        return version

    def send(self, queue: str, message: Any, *, delay: float = 0) -> None:
        self.queues[queue].append(Sent(queue, message.encode(), delay))

    def take(self, queue: str) -> list[Sent]:
        taken, self.queues[queue] = self.queues[queue], []
        return taken

    def delete_snapshot(self, name: str) -> None:
        del self.snapshots[name]

    def upload_snapshot(self, name: str, data: IO[bytes], size: int) -> SnapshotVersion:
        return self.put_snapshot(name, data.read())

    def stage_snapshot(
        self, name: str, data: IO[bytes], *, stop: Callable[[], bool]
    ) -> Callable[[], SnapshotVersion]:
        staged = data.read()
        return lambda: self.put_snapshot(name, staged)

    def snapshot_files(self, segment: str | None = None) -> Iterator[SnapshotVersion]:
        for name in sorted(self.snapshots):
            if is_snapshot_file(name) and (segment is None or name.startswith(f"{segment}/")):
                yield self.snapshots[name][1]

    def remove_snapshot(self, version: SnapshotVersion) -> bool:
        held = self.snapshots.get(version.name)
        if held is None or held[1].etag != version.etag:
            return False
        del self.snapshots[version.name]
        return True

    def open_snapshot(self, version: SnapshotVersion) -> IO[bytes] | Parts:
        if cdm.split_entity_snapshot(version.name) is not None:
            return open_entity(self, version)
        return self.open_version(version)

    def open_version(self, version: SnapshotVersion) -> IO[bytes]:
        if version.name not in self.snapshots:
            raise ResourceNotFoundError("gone")
        data, current = self.snapshots[version.name]
        if current.etag != version.etag:
            raise ResourceModifiedError("changed")
        self.opened.append(version.name)
        return io.BytesIO(data)

    def snapshot_version(self, name: str) -> SnapshotVersion | None:
        return self.snapshots[name][1] if name in self.snapshots else None

    def read_manifest(self, version: SnapshotVersion) -> bytes:
        data = self.open_version(version).read()
        cdm.check_size(version.name, len(data))
        return data

    def note_cdm_entity(self, version: SnapshotVersion) -> None:
        name = cdm_pointer_blob(entity_of(version)[1])
        held = pointer_version(self.blobs[name]) if name in self.blobs else None
        if held is None or is_newer(version, held):
            self.blobs[name] = pointer_json(version)

    def latest_snapshot(self, segment: str) -> SnapshotVersion | None:
        versions = [
            v
            for name, (_, v) in self.snapshots.items()
            if name.startswith(f"{segment}/") and is_snapshot_file(name)
        ]
        pointer = self.blobs.get(cdm_pointer_blob(segment))
        if pointer is not None:
            entity = pointer_version(pointer)
            manifest = self.snapshot_version(entity_of(entity)[0])
            if manifest is not None and manifest.etag == cdm.manifest_etag(entity.etag):
                versions.append(entity)
        return max(versions, key=lambda v: (v.last_modified, v.name), default=None)

    def write_batch(self, run_id: str, index: int, contacts_json: str) -> None:
        self.blobs[f"runs/{run_id}/batches/{index:05d}.json"] = contacts_json.encode()

    def read_batch(self, run_id: str, index: int) -> bytes:
        return self.blobs[f"runs/{run_id}/batches/{index:05d}.json"]

    def open_batch(self, run_id: str, index: int) -> ContactStream:
        # Small, uneven pieces: sending must not depend on where a read ends.
        data = self.read_batch(run_id, index)
        return ContactStream(len(data), (data[i : i + 997] for i in range(0, len(data), 997)))

    def write_report(self, run_id: str, report: IO[bytes]) -> str:
        report.seek(0)
        name = f"runs/{run_id}/rejects.csv"
        self.blobs[name] = report.read()
        self.written[name] = datetime.now(UTC)
        return name

    def delete_run_blobs(self, run_id: str) -> None:
        keep = f"runs/{run_id}/rejects.csv"
        for name in [n for n in self.blobs if n.startswith(f"runs/{run_id}/") and n != keep]:
            del self.blobs[name]

    def reports_older_than(self, cutoff: datetime) -> Iterator[str]:
        for name in list(self.blobs):
            if name.endswith("/rejects.csv") and self.written.get(name, cutoff) < cutoff:
                yield name.split("/")[1]

    def delete_report(self, run_id: str) -> None:
        self.blobs.pop(f"runs/{run_id}/rejects.csv", None)

    def read_state(self, destination: str, segment: str, list_id: str) -> bytes | None:
        return self.blobs.get(f"state/{destination}/{segment}/{list_id}/index")

    def state_emails(self, destination: str, segment: str, list_id: str) -> Iterable[bytes]:
        return io.BytesIO(self.blobs[f"state/{destination}/{segment}/{list_id}/emails"])

    def write_state(
        self,
        destination: str,
        segment: str,
        list_id: str,
        members: Iterable[Member],
        fields: Sequence[str],
    ) -> int:
        index, emails = io.BytesIO(), io.BytesIO()
        count = write_state(members, index, emails, fields)
        prefix = f"state/{destination}/{segment}/"
        for name in [n for n in self.blobs if n.startswith(prefix)]:
            del self.blobs[name]
        self.blobs[f"{prefix}{list_id}/index"] = index.getvalue()
        self.blobs[f"{prefix}{list_id}/emails"] = emails.getvalue()
        return count

    def commit_pending_state(
        self, run_id: str, destination: str, segment: str, list_id: str
    ) -> int:
        prefix = f"state/{destination}/{segment}/"
        for name in [n for n in self.blobs if n.startswith(prefix)]:
            del self.blobs[name]
        for part in ("index", "emails"):
            self.blobs[f"{prefix}{list_id}/{part}"] = self.blobs[f"runs/{run_id}/state/{part}"]
        return state_size(self.blobs[f"{prefix}{list_id}/index"])

    def write_pending_state(self, run_id: str, delta: Delta) -> int:
        index, emails = io.BytesIO(), io.BytesIO()
        count = delta.write(index, emails)
        self.blobs[f"runs/{run_id}/state/index"] = index.getvalue()
        self.blobs[f"runs/{run_id}/state/emails"] = emails.getvalue()
        return count

    def read_pending_index(self, run_id: str) -> bytes:
        return self.blobs[f"runs/{run_id}/state/index"]

    def pending_emails(self, run_id: str) -> Iterable[bytes]:
        return io.BytesIO(self.blobs[f"runs/{run_id}/state/emails"])

    def put_run_file(self, run_id: str, name: str, data: bytes | IO[bytes]) -> None:
        self.blobs[f"runs/{run_id}/{name}"] = data if isinstance(data, bytes) else data.read()

    def open_run_file(self, run_id: str, name: str) -> Iterable[bytes] | None:
        data = self.blobs.get(f"runs/{run_id}/{name}")
        return None if data is None else io.BytesIO(data)

    def write_removals(self, run_id: str, index: int, emails: list[str]) -> None:
        self.blobs[f"runs/{run_id}/removals/{index:05d}.txt"] = "\n".join(emails).encode()

    def read_removals(self, run_id: str, index: int) -> list[str]:
        return self.blobs[f"runs/{run_id}/removals/{index:05d}.txt"].decode().split("\n")
