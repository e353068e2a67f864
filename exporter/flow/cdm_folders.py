"""CDM folders (see `exporter.core.cdm`): a model.json's entities become runs once all their
partitions are there; an entity that cannot be exported (rejected, or a partition that never
arrived) ends as a failed run for every destination that selected it, where people look."""

from __future__ import annotations

import logging
from datetime import datetime

from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from exporter.core import cdm, paths
from exporter.core.redact import mask_emails
from exporter.flow import finish
from exporter.flow.events import brief, event
from exporter.flow.run_requests import make_run_id, request_exports
from exporter.flow.services import Services
from exporter.model.messages import CDM_MANIFESTS, ManifestCheck
from exporter.model.runs import RunRecord, utcnow
from exporter.model.versions import SnapshotVersion, entity_version
from exporter.ports.storage import read_manifest as read_cdm_manifest

log = logging.getLogger("exporter.flow.runs")


def on_manifest(
    svc: Services,
    version: SnapshotVersion,
    *,
    checks: int = 0,
    at: datetime | None = None,
    give_up: str = "",
) -> list[str]:
    """A CDM folder's model.json arrived, or is looked at again. Each entity is a snapshot of
    the segment of its name: one run per destination that selected it, once all of the entity's
    partitions are there. Entities still missing a partition are looked at again later by a
    delayed message (no worker waits, no delivery attempt is spent); `svc.cdm_wait` after the
    model.json was written, or with `give_up` (the reason), each gets a failed run instead.

    Safe to repeat: an entity's run id depends only on the manifest's and partitions' ETags.
    """
    at = at or utcnow()
    try:
        manifest = read_cdm_manifest(svc.manifests, version)
    except (ResourceModifiedError, ResourceNotFoundError):
        event("manifest skipped", manifest=version.name, reason="replaced or deleted")
        return []  # a newer version of it has a trigger of its own
    except cdm.ManifestError as exc:
        # No entity can be named, so no segment, so no run to fail: the log is the only place.
        # A wrong input, not a bug: its message says all, a traceback would not help.
        log.error("CDM folder not exported: %s", mask_emails(str(exc)))  # noqa: TRY400
        return []
    for name, reason in manifest.rejected.items():
        _fail_entity(svc, version, name, reason, "rejected")
    run_ids: list[str] = []
    waiting: dict[str, list[str]] = {}
    for entity in manifest.entities:
        found = _look_up_partitions(svc, version, entity)
        if isinstance(found, str):
            _fail_entity(svc, version, entity.name, found, "rejected")
            continue
        present = [v for v in found if v is not None]
        if len(present) < len(found):
            waiting[entity.name] = [
                p.blob for p, v in zip(entity.partitions, found, strict=True) if v is None
            ]
            continue
        snapshot = entity_version(version, entity, present)
        svc.manifests.note_cdm_entity(snapshot)
        run_ids += request_exports(svc, snapshot, "blob")
    if not waiting:
        return run_ids
    waited = (at - version.last_modified).total_seconds()
    if give_up or waited >= svc.cdm_wait or checks >= svc.cdm_wait / svc.cdm_recheck + 10:
        for name, missing in waiting.items():
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            reason = give_up or (
                f"partition {missing[0]}{more} listed in {version.name} never arrived: still "
                f"missing {waited / 60:.0f} minutes after model.json was written, so entity "
                f"{name!r} was not exported"
            )
            _fail_entity(svc, version, name, reason, "incomplete")
        return run_ids
    check = ManifestCheck(
        manifest=version.name,
        etag=version.etag,
        written_at=version.last_modified,
        size=version.size,
        checks=checks + 1,
    )
    svc.queues.send(CDM_MANIFESTS, check, delay=svc.cdm_recheck)
    event("manifest waiting", manifest=version.name, entities=len(waiting), check=check.checks)
    return run_ids


_REFUSED_LOOKUPS = (400, 403, 414)
"""Storage's answers to a partition's HEAD that will not change on a retry (a name storage will
not take, a path it refuses): that entity fails, the others go on."""


def _look_up_partitions(
    svc: Services, manifest: SnapshotVersion, entity: cdm.Entity
) -> list[SnapshotVersion | None] | str:
    """Each partition's current version (None: not there yet), or why the entity cannot be
    exported when storage refuses to look one up. Partition names were checked when model.json
    was parsed (`cdm`: inside the folder, nothing that leaves the container); this keeps one
    entity's unexpected refusal from holding up the others (and the whole model.json in a retry
    loop). Other errors (storage unreachable) propagate: the host retries."""
    found: list[SnapshotVersion | None] = []
    for partition in entity.partitions:
        try:
            found.append(svc.snapshots.snapshot_version(partition.blob))
        except HttpResponseError as exc:
            if exc.status_code not in _REFUSED_LOOKUPS:
                raise
            return (
                f"entity {entity.name!r} of {manifest.name}: partition "
                f"{paths.shown(partition.name, 100)} ({paths.shown(partition.blob, 200)}) could "
                f"not be looked up: storage answered {exc.status_code} ({brief(exc)[:300]})"
            )
    return found


def check_manifest(
    svc: Services, message: ManifestCheck, *, at: datetime | None = None
) -> list[str]:
    """The delayed look at a CDM folder that was waiting for partitions (queue cdm-manifests)."""
    version = SnapshotVersion(message.manifest, message.etag, message.written_at, message.size)
    return on_manifest(svc, version, checks=message.checks, at=at)


def _fail_entity(
    svc: Services, manifest: SnapshotVersion, entity: str, reason: str, outcome: str
) -> None:
    """A failed run for every destination that selected this entity, where people look for
    runs. Once per manifest version and outcome: a repeated look finds the run ended."""
    snapshot = SnapshotVersion(
        cdm.entity_snapshot(manifest.name, entity),
        f"{manifest.etag};{outcome}",
        manifest.last_modified,
        0,
    )
    named = entity if paths.valid_segment(entity) else paths.shown(entity, 80)
    event("entity not exported", manifest=manifest.name, entity=named, reason=reason)
    for destination in svc.destinations.all():
        if entity not in destination.segments:
            continue
        run_id = make_run_id(destination.name, snapshot, "blob", manifest.last_modified)
        run = RunRecord(
            run_id=run_id,
            destination=destination.name,
            segment=entity,
            snapshot=snapshot.name,
            etag=snapshot.etag,
            trigger="blob",
            list_id=destination.list_id,
            snapshot_time=snapshot.last_modified,
        )
        if not svc.ledger.create_run(run):
            existing = svc.ledger.get_run(run_id)
            if existing is None or existing.final:
                continue
        finish.fail_run(svc, run_id, reason)
