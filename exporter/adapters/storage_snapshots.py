"""Snapshots and CDM folders in `segments`: a blob's current version, exactly that version read
in ranges (a newer upload makes reading fail, not mix), a CDM entity's partitions as they were
when its model.json was accepted, a segment's latest snapshot, the pointers
(`cdm/<segment>.json` in the app's container) that let the timer find a segment's CDM entity
without listing; and for administration, the snapshot files listed and one version removed."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import IO, Final, cast

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobPrefix, BlobProperties, ContentSettings

from exporter.adapters.storage_containers import Containers
from exporter.core import cdm
from exporter.core.snapshots.parts import Parts
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

STAGE_BLOCK: Final = 8 << 20
"""Bytes of one staged block of an upload (Azure allows 50,000 blocks: 400 GiB)."""


def quoted(etag: str) -> str:
    """An ETag as a blob's properties give it (`"0x8DC…"`): a listing gives it bare, and one
    version must carry one ETag whichever way it was found (run ids, the slot's mark)."""
    return etag if etag.startswith('"') else f'"{etag}"'


class SnapshotBlobs(Containers):
    """Reading snapshots and CDM folders (a part of `Storage`)."""

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
                item.name, quoted(str(item.etag)), item.last_modified, int(item.size or 0)
            )
            # Blob times have one-second resolution: a tie goes to the later name, as in
            # `slots.order` (exports name their files by time).
            if newest is None or (version.last_modified, version.name) > (
                newest.last_modified,
                newest.name,
            ):
                newest = version
        return newest

    def stage_snapshot(
        self, name: str, data: IO[bytes], *, stop: Callable[[], bool]
    ) -> Callable[[], SnapshotVersion]:
        """Stage `data` as uncommitted blocks of `segments/<name>` (invisible until committed;
        the service drops uncommitted blocks after a week); returns the commit. Block ids carry
        this upload's own nonce, so two uploads of one name never mix their blocks."""
        blob = self.segments.get_blob_client(name)
        nonce = uuid.uuid4().hex
        blocks: list[BlobBlock] = []
        size = 0
        while not stop():
            chunk = data.read(STAGE_BLOCK)
            if not chunk:
                break
            block_id = base64.b64encode(f"{nonce}-{len(blocks):06d}".encode()).decode()
            blob.stage_block(block_id, chunk, length=len(chunk))
            blocks.append(BlobBlock(block_id))
            size += len(chunk)

        def commit() -> SnapshotVersion:
            result = blob.commit_block_list(
                blocks, content_settings=ContentSettings(content_type="application/octet-stream")
            )
            written = result["last_modified"]
            if not isinstance(written, datetime):
                raise TypeError("commit_block_list answered without last_modified")
            return SnapshotVersion(name, str(result["etag"]), written, size)

        return commit

    def snapshot_files(self, segment: str | None = None) -> Iterator[SnapshotVersion]:
        """The snapshot files (`<segment>/<file>`) of one segment or of every one, folder by
        folder in name order. Only the top two levels are walked (with a delimiter): a CDM
        folder's partitions, deeper down, cost no listing."""
        if segment is not None:
            folders: Iterator[str] = iter([f"{segment}/"])
        else:
            folders = (
                str(item.name)
                for item in self.segments.walk_blobs(delimiter="/")
                if isinstance(item, BlobPrefix)
            )
        for folder in folders:
            for item in self.segments.walk_blobs(name_starts_with=folder, delimiter="/"):
                if isinstance(item, BlobProperties) and is_snapshot_file(item.name):
                    # A listing gives ETags bare, a blob's headers quoted: quoted, as everywhere.
                    yield SnapshotVersion(
                        item.name, quoted(str(item.etag)), item.last_modified, int(item.size or 0)
                    )

    def remove_snapshot(self, version: SnapshotVersion) -> bool:
        """Delete exactly this version (If-Match its ETag, with any blob snapshots of it); False
        when it is gone already or was replaced meanwhile (the newer upload stays)."""
        try:
            self.segments.delete_blob(
                version.name,
                delete_snapshots="include",
                etag=version.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

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
