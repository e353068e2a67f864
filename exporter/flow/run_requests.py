"""Requesting runs: one run per destination that selected a snapshot's segment, under an id
deterministic per delivery (a redelivered blob event makes no new run); the timer's re-exports.

A run requested here is planned by `exporter.flow.plan` (queue export-requests). A blob's arrival
is sorted by `exporter.flow.arrivals`; a CDM folder's entities are requested by
`exporter.flow.cdm_folders`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from exporter.core import cdm
from exporter.flow.events import event
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.messages import EXPORT_REQUESTS, ExportRequest, Trigger
from exporter.model.runs import RunRecord, set_fields, utcnow
from exporter.model.versions import SnapshotVersion

log = logging.getLogger("exporter.flow.runs")


def segment_of(snapshot: str) -> str:
    """`loyal/2026-11-24.csv` belongs to segment `loyal`; a CDM folder's entity
    `ci/BlobExport/model.json#HighValue` to segment `HighValue`."""
    entity = cdm.split_entity_snapshot(snapshot)
    if entity is not None:
        return entity[1]
    return snapshot.split("/", 1)[0]


def make_run_id(destination: str, version: SnapshotVersion, trigger: Trigger, at: datetime) -> str:
    """Readable, time-ordered and deterministic for one delivery of one snapshot version, so a
    redelivered blob event maps onto the run it already made."""
    if trigger == "blob":
        stamp, salt = version.last_modified, ""
    elif trigger == "timer":
        stamp, salt = at, at.isoformat()
    else:
        stamp, salt = at, secrets.token_hex(8)
    digest = hashlib.sha256(
        "|".join((destination, version.name, version.etag, trigger, salt)).encode()
    ).hexdigest()[:12]
    return f"{stamp.astimezone(UTC):%Y%m%dT%H%M%S}-{digest}"


def request_exports(
    svc: Services,
    version: SnapshotVersion,
    trigger: Trigger,
    *,
    at: datetime | None = None,
    only: Iterable[str] | None = None,
    full_refresh: bool = False,
    allow_mass_removal: bool = False,
    verify: bool = False,
) -> list[str]:
    """One run per destination that selected the snapshot's segment; returns their ids."""
    at = at or utcnow()
    wanted = set(only) if only is not None else None
    segment = segment_of(version.name)
    run_ids = []
    for destination in svc.destinations.all():
        if segment not in destination.segments:
            continue
        if wanted is not None and destination.name not in wanted:
            continue
        run_id = make_run_id(destination.name, version, trigger, at)
        full = full_refresh or _full_refresh_due(svc, destination, segment)
        run = RunRecord(
            run_id=run_id,
            destination=destination.name,
            segment=segment,
            snapshot=version.name,
            etag=version.etag,
            trigger=trigger,
            list_id=destination.list_id,
            full_refresh=full,
            snapshot_time=version.last_modified,
        )
        if not svc.ledger.create_run(run):
            existing = svc.ledger.get_run(run_id)
            if existing is None or existing.request_queued:
                continue  # a repeat delivery of a request that is already being handled
        request = ExportRequest(
            run_id=run_id,
            destination=destination.name,
            segment=segment,
            snapshot=version.name,
            etag=version.etag,
            trigger=trigger,
            requested_at=at,
            snapshot_time=version.last_modified,
            full_refresh=full,
            allow_mass_removal=allow_mass_removal,
            verify=verify,
        )
        svc.queues.send(EXPORT_REQUESTS, request)
        svc.ledger.update_run(run_id, lambda r: set_fields(r, request_queued=True))
        run_ids.append(run_id)
        event("run requested", run_id=run_id, destination=destination.name, segment=segment)
    return run_ids


def _full_refresh_due(svc: Services, destination: Destination, segment: str) -> bool:
    """Every `full_refresh_every`-th run of a destination x segment sends every contact."""
    every = destination.full_refresh_every
    if not every:
        return False
    return svc.ledger.get_slot(destination.name, segment).syncs_since_full + 1 >= every


def refresh(svc: Services, at: datetime | None = None) -> list[str]:
    """The timer: export the latest snapshot of every selected segment again (a snapshot file,
    or the newest CDM entity of the segment's name: see `Storage.latest_snapshot`)."""
    at = (at or utcnow()).replace(microsecond=0)
    run_ids = []
    for destination in svc.destinations.all():
        if destination.consent is None:
            # Said once a tick in the log, not as a failed run every tick: the destination's
            # snapshots and on-demand exports still fail with the reason where people look.
            log.warning(
                "timer: destination %s has no recorded data-privacy consent: not exported",
                destination.name,
            )
            continue
        for segment in destination.segments:
            version = svc.snapshots.latest_snapshot(segment)
            if version is not None:
                run_ids += request_exports(svc, version, "timer", at=at, only=[destination.name])
    return run_ids
