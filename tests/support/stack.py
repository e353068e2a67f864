"""Helpers for end-to-end tests against the local stack (`exporter.local.stack.Stack`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from exporter.adapters.azure_storage import Storage
from exporter.admin.operations import upload_snapshot
from exporter.model.versions import SnapshotVersion


def drop_seen(
    storage: Storage, folder: Path, segment: str, name: str, rows: Sequence[str]
) -> SnapshotVersion:
    """Upload `rows` (below an `Email,FirstName` header) as snapshot `name` of `segment`, and
    return once the host's blob trigger has seen that version (its receipt is written): a
    snapshot that arrived before any destination selected its segment, so only on-demand
    exports and the timer take it. The file is written to `folder/segment/name` first."""
    path = folder / segment / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(["Email,FirstName", *rows]) + "\n", encoding="utf-8")
    if any(p.is_file() and p != path for p in path.parent.iterdir()):
        time.sleep(1.1)  # blob times have one-second resolution: "latest" is unambiguous
    version = upload_snapshot(storage, path, segment)
    hosts = storage.blobs.get_container_client("azure-webjobs-hosts")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            seen = [b.name for b in hosts.list_blobs() if b.name.endswith(f"/{version.name}")]
        except ResourceNotFoundError:  # created with the host's first receipt
            seen = []
        if any(version.etag.strip('"') in n for n in seen):
            return version
        time.sleep(0.2)
    raise AssertionError("the blob trigger did not see the snapshot")
