"""Blob trigger: a snapshot arrived under `segments/<segment>/`.

Bound to a `BlobClient` (SDK type binding), not to the content: the host would otherwise read
the whole snapshot into memory. Only the blob's properties are read here; planning streams it.
"""

from __future__ import annotations

import logging

import azure.functions as func
from azurefunctions.extensions.bindings import blob

from exporter import runs
from exporter.functions import services
from exporter.storage import SnapshotVersion, is_snapshot_file

bp = func.Blueprint()
log = logging.getLogger("exporter.functions")


@bp.blob_trigger(
    arg_name="client", path="segments/{segment}/{name}", connection="AzureWebJobsStorage"
)
def snapshot_arrived(client: blob.BlobClient) -> None:
    if not is_snapshot_file(client.blob_name):
        log.info("ignored blob that is not a snapshot file: %s", client.blob_name)
        return
    props = client.get_blob_properties()
    version = SnapshotVersion(
        client.blob_name, str(props.etag), props.last_modified, int(props.size)
    )
    runs.on_snapshot(services(), version)
