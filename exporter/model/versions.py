"""Snapshot versions: a snapshot blob as it is now (name, ETag, when written), the order of
snapshots of one segment, which blobs are snapshots, and a CDM entity's version (pinned to its
model.json's and partitions' ETags)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from exporter.core import cdm
from exporter.core.snapshots.formats import detect_format


@dataclass(frozen=True, slots=True)
class SnapshotVersion:
    """A snapshot blob as it is now: its name, ETag (the version) and when it was written."""

    name: str
    etag: str
    last_modified: datetime
    size: int


CDM_MANIFEST: Final = cdm.MANIFEST


def is_snapshot_file(name: str) -> bool:
    """A blob exported as a snapshot of its own: exactly `<segment>/<file>`, a CSV or JSON Lines
    file, maybe gzipped.

    Deeper blobs are not: that is where a CDM folder keeps its partitions
    (`<folder>/<Entity>/<yyyy>/<mm>/<dd>/<HHMM>/<Entity>_1.csv`), read only through the folder's
    model.json, which is not a snapshot file either (it is never read as JSON Lines).
    """
    segment, _, file = name.partition("/")
    if not segment or not file or "/" in file or file.lower() == CDM_MANIFEST:
        return False
    return detect_format(name) is not None


def is_snapshot_blob(name: str) -> bool:
    """What the blob trigger acts on: a snapshot file, or a CDM folder's model.json."""
    return is_snapshot_file(name) or cdm.is_manifest(name)


def entity_version(
    manifest: SnapshotVersion, entity: cdm.Entity, partitions: list[SnapshotVersion]
) -> SnapshotVersion:
    """An entity's snapshot version: named `<model.json>#<Entity>`, pinned to the manifest's
    and every partition's ETag (`cdm.pinned_etag`), written when the manifest was."""
    return SnapshotVersion(
        cdm.entity_snapshot(manifest.name, entity.name),
        cdm.pinned_etag(manifest.etag, [(p.name, p.etag) for p in partitions]),
        manifest.last_modified,
        sum(p.size for p in partitions),
    )


def entity_of(version: SnapshotVersion) -> tuple[str, str]:
    """(model.json blob, entity name) of a CDM entity snapshot."""
    split = cdm.split_entity_snapshot(version.name)
    if split is None:
        raise ValueError(f"{version.name} is not a CDM entity snapshot")
    return split


def pointer_json(version: SnapshotVersion) -> bytes:
    return json.dumps(
        {
            "snapshot": version.name,
            "etag": version.etag,
            "last_modified": version.last_modified.isoformat(),
            "size": version.size,
        }
    ).encode()


def pointer_version(data: bytes) -> SnapshotVersion:
    doc = json.loads(data)
    return SnapshotVersion(
        doc["snapshot"], doc["etag"], datetime.fromisoformat(doc["last_modified"]), doc["size"]
    )


def is_newer(version: SnapshotVersion, than: SnapshotVersion) -> bool:
    """Snapshots in the order they were written (a tie in blob time goes to the later name)."""
    return (version.last_modified, version.name) > (than.last_modified, than.name)
