"""A blob arrived under `segments/` (the blob trigger): a snapshot file requests its runs
(`exporter.flow.run_requests`), a CDM folder's model.json is read (`exporter.flow.cdm_folders`);
a blob whose name no segment can have is logged and ignored."""

from __future__ import annotations

import logging

from exporter.core import cdm, paths
from exporter.core.redact import mask_emails
from exporter.flow.cdm_folders import on_manifest
from exporter.flow.run_requests import request_exports, segment_of
from exporter.flow.services import Services
from exporter.model.versions import SnapshotVersion

log = logging.getLogger("exporter.flow.runs")


def on_snapshot(svc: Services, version: SnapshotVersion) -> list[str]:
    """A blob arrived (blob trigger): a snapshot file, or a CDM folder's model.json."""
    if cdm.is_manifest(version.name):
        return on_manifest(svc, version)
    problem = paths.name_problem(version.name) or paths.segment_problem(segment_of(version.name))
    if problem:
        # No destination can select such a segment (names follow the segment rule): nothing to
        # run; said in the log, once per blob version, instead of a retry loop.
        log.warning("snapshot %s ignored: %s", paths.shown(mask_emails(version.name)), problem)
        return []
    return request_exports(svc, version, "blob")
