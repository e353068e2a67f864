"""Exports on demand: queue runs for one destination, of a named snapshot or of the latest
snapshot of each segment it selects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.admin.destinations import get_destination
from exporter.admin.errors import ConflictError, NotFoundError
from exporter.admin.events import event
from exporter.admin.requests import ExportBody
from exporter.core.errors import InputError
from exporter.core.paths import valid_segment
from exporter.flow import run_requests
from exporter.flow.services import Services
from exporter.model.destinations import SEGMENT_RULE, Destination
from exporter.model.messages import Trigger
from exporter.model.versions import SnapshotVersion, is_snapshot_file


@dataclass(frozen=True, slots=True)
class StartedRun:
    run_id: str
    segment: str
    snapshot: str


@dataclass(frozen=True, slots=True)
class Exported:
    destination: str
    runs: list[StartedRun]
    without_snapshot: list[str] = field(default_factory=list)
    """Selected segments with no snapshot yet (nothing to export for them)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "runs": [
                {"run_id": r.run_id, "segment": r.segment, "snapshot": r.snapshot}
                for r in self.runs
            ],
            "without_snapshot": self.without_snapshot,
        }


def export_now(
    svc: Services,
    name: str,
    body: ExportBody,
    *,
    trigger: Trigger,
) -> Exported:
    """Queue runs for one destination: of a named snapshot, or of the latest snapshot of each
    segment it selects. Returns at once with the run ids."""
    destination = get_destination(svc, name)
    if destination.consent is None:
        raise ConflictError(
            f"no data-privacy consent is recorded for destination {name!r}: nothing is "
            "exported; record who accepted the terms (destinations update --consent-by NAME)"
        )
    versions: list[SnapshotVersion] = []
    missing: list[str] = []
    if body.snapshot:
        versions.append(_named_snapshot(svc, destination, body.snapshot))
    else:
        for segment in destination.segments:
            version = svc.storage.latest_snapshot(segment)
            if version is None:
                missing.append(segment)
            else:
                versions.append(version)
        if not versions:
            where = ", ".join(f"segments/{m}/" for m in missing)
            raise NotFoundError(f"no snapshot to export: nothing under {where}")
    started = []
    for version in versions:
        for run_id in run_requests.request_exports(
            svc,
            version,
            trigger,
            only=[name],
            full_refresh=body.full_refresh,
            allow_mass_removal=body.allow_mass_removal,
            verify=body.verify,
        ):
            started.append(StartedRun(run_id, run_requests.segment_of(version.name), version.name))
    event("export requested", destination=name, runs=len(started), trigger=trigger)
    return Exported(name, started, missing)


def _named_snapshot(svc: Services, destination: Destination, name: str) -> SnapshotVersion:
    segment = run_requests.segment_of(name)
    if "/" not in name or not is_snapshot_file(name):
        raise InputError(
            f"snapshot {name!r} must be a blob name in the segments container, "
            "<segment>/<file>.csv|.jsonl[.gz]"
        )
    if not valid_segment(segment):
        raise InputError(f"snapshot {name!r}: its segment is not a segment name: {SEGMENT_RULE}")
    if segment not in destination.segments:
        raise InputError(
            f"snapshot {name!r} belongs to segment {segment!r}, which destination "
            f"{destination.name!r} does not select ({', '.join(destination.segments)})"
        )
    version = svc.storage.snapshot_version(name)
    if version is None:
        raise NotFoundError(f"no snapshot segments/{name}")
    return version
