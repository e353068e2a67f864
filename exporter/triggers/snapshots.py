"""Blob trigger: a snapshot file arrived under `segments/<segment>/`, or a CDM folder's
model.json anywhere below `segments/`; and the delayed looks at a CDM folder still waiting for
its partitions (queue `cdm-manifests`; a message that cannot be decoded is logged and dropped,
and the poison handler never fails).

Bound to a `BlobClient` (SDK type binding), not to the content: the host would otherwise read
the whole snapshot into memory. Only the blob's properties are read here; planning streams it.
The path matches deeper blobs too (Azure's `{name}` and the local host's last placeholder both
span '/'), so which blobs count is decided here, by `is_snapshot_blob`, the same everywhere.
"""

from __future__ import annotations

import logging

import azure.functions as func
from azurefunctions.extensions.bindings import blob

from exporter.flow import arrivals, cdm_folders, poison
from exporter.model.messages import CDM_MANIFESTS, POISON_SUFFIX, ManifestCheck
from exporter.model.versions import SnapshotVersion, is_snapshot_blob
from exporter.triggers import poisoned, receive, services

bp = func.Blueprint()
log = logging.getLogger("exporter.triggers")


@bp.blob_trigger(
    arg_name="client",
    path="segments/{segment}/{name}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource.EVENT_GRID,  # Flex Consumption has no polling; the local host polls
)
def snapshot_arrived(client: blob.BlobClient) -> None:
    if not is_snapshot_blob(client.blob_name):
        # e.g. a CDM folder's partition: it is read through the folder's model.json
        log.info("ignored blob that is not a snapshot file or a model.json: %s", client.blob_name)
        return
    props = client.get_blob_properties()
    version = SnapshotVersion(
        client.blob_name, str(props.etag), props.last_modified, int(props.size)
    )
    arrivals.on_snapshot(services(), version)


@bp.queue_trigger(arg_name="msg", queue_name=CDM_MANIFESTS, connection="AzureWebJobsStorage")
def manifest_recheck(msg: func.QueueMessage) -> None:
    check = receive(CDM_MANIFESTS, ManifestCheck, msg)  # one that cannot be decoded: dropped
    if check is not None:
        cdm_folders.check_manifest(services(), check)


@bp.queue_trigger(
    arg_name="msg", queue_name=CDM_MANIFESTS + POISON_SUFFIX, connection="AzureWebJobsStorage"
)
def manifest_recheck_poisoned(msg: func.QueueMessage) -> None:
    poisoned(CDM_MANIFESTS + POISON_SUFFIX, ManifestCheck, msg, poison.manifest_poisoned)
