"""Exports: a local file checked, then uploaded into `segments/` (which starts a run per
destination that selects its segment), and exports on demand: runs queued for one destination,
of a named snapshot or of the latest snapshot of each segment it selects.

Before an upload the file is read once, whole, as a stream, by the reader the planner uses
(`exporter.core.snapshots`): its format by name and by its first bytes, UTF-8, the header, the
mapping of every destination that selects the segment, every line against its bounds, and the
planner's bounds on rows and on blank rows in a row. Contacts are not validated nor batched
(that is `exporter check`; rejected rows never fail a run), which keeps the read at about a
fifth of planning's time (1.3-2 s a million rows). Meanwhile the same file is staged in the
storage account as uncommitted blocks, which no reader and no trigger sees: only when the check
has passed are they committed into the blob. So a check costs about max(read, upload) rather
than their sum, and a file that fails it is never a snapshot.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.admin.destinations import get_destination
from exporter.admin.errors import ConflictError, NotFoundError
from exporter.admin.events import event
from exporter.admin.requests import ExportBody
from exporter.admin.snapshots import check_segment, open_with_mappings, selecting
from exporter.core.errors import InputError
from exporter.core.paths import blob_name, valid_segment
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.records import BLANK
from exporter.core.snapshots.snapshot import Snapshot
from exporter.flow import run_requests
from exporter.flow.services import Services
from exporter.model.destinations import SEGMENT_RULE, Destination
from exporter.model.messages import Trigger
from exporter.model.versions import SnapshotVersion, is_snapshot_file


@dataclass(frozen=True, slots=True)
class FileCheck:
    format: str
    compressed: bool
    delimiter: str | None
    rows: int
    blank: int

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "compressed": self.compressed,
            "delimiter": self.delimiter,
            "rows": self.rows,
            "blank": self.blank,
        }


@dataclass(frozen=True, slots=True)
class Uploaded:
    version: SnapshotVersion
    check: FileCheck
    runs: list[tuple[str, str]]
    """(run id, destination) of the runs its arrival starts: the blob trigger's run ids are
    deterministic per destination and snapshot version."""

    def as_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.version.name,
            "etag": self.version.etag,
            "size": self.version.size,
            "check": self.check.as_json(),
            "runs": [{"run_id": r, "destination": d} for r, d in self.runs],
        }


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


# --- a local file, checked, then uploaded ------------------------------------------------------


def upload_checked(svc: Services, path: Path, segment: str, *, force: bool = False) -> Uploaded:
    """Upload `path` as `segments/<segment>/<file name>` once it has been read whole as the
    planner will read it. Refused, with nothing uploaded: a segment no destination selects
    (unless `force`: a destination may be added later), a file that cannot be read."""
    check_segment(segment)
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    name = blob_name(f"{segment}/{path.name}", decoded=True)
    if not is_snapshot_file(name):
        raise InputError(f"{path.name}: a snapshot is a .csv or .jsonl file, optionally .gz")
    everyone = list(svc.destinations.all())
    chosen = selecting(everyone, segment)
    if not chosen and not force:
        raise NotFoundError(_unknown_segment(segment, everyone))
    before = _stamp(path)
    failed = threading.Event()
    with path.open("rb") as data, ThreadPoolExecutor(1, thread_name_prefix="stage") as pool:
        # The upload is staged while the file is checked; only a file that passes is committed.
        staging = pool.submit(svc.storage.stage_snapshot, name, data, stop=failed.is_set)
        try:
            check = check_file(path, name, chosen)
        except InputError as exc:
            failed.set()
            raise InputError(f"{path.name}: {exc}; nothing was uploaded") from None
        except BaseException:
            failed.set()
            raise
        commit = staging.result()
    if _stamp(path) != before:
        raise InputError(f"{path} changed while it was read; nothing was uploaded")
    version = commit()
    runs = [
        (run_requests.make_run_id(d.name, version, "blob", version.last_modified), d.name)
        for d in chosen
    ]
    event("snapshot uploaded", snapshot=version.name, rows=check.rows, destinations=len(runs))
    return Uploaded(version, check, runs)


def check_file(path: Path, name: str, destinations: Sequence[Destination]) -> FileCheck:
    """Read the file whole, as a stream, as the planner will (see the module's text); raises
    the `InputError` that would fail the run."""
    with open_with_mappings(path, name, destinations) as (snapshot, _):
        rows, blank = _read_through(snapshot)
        return FileCheck(snapshot.format, snapshot.compressed, snapshot.delimiter, rows, blank)


def _read_through(snapshot: Snapshot) -> tuple[int, int]:
    """Every record, kept for nothing; the planner's bounds on rows and on blank rows in a row
    (`exporter.core.planning.plan`) raise as they would there. Returns (rows, blank rows)."""
    max_rows, max_blank = input_limits.MAX_ROWS, input_limits.MAX_BLANK_RUN
    rows = blank = blank_run = blank_from = 0
    for line, record in snapshot.records():
        rows += 1
        if record is BLANK:
            blank += 1
            blank_run += 1
            if blank_run == 1:
                blank_from = line
            if blank_run > max_blank:
                raise snapshot.error(
                    "blank_rows",
                    f"more than {max_blank:,} blank rows in a row, from line {blank_from:,}: "
                    "this is not a segment export",
                    line=line,
                )
        else:
            blank_run = 0
        if rows > max_rows:
            raise snapshot.error(
                "too_many_rows",
                f"the snapshot has more than {max_rows:,} rows, the limit for one snapshot",
                line=line,
            )
    return rows, blank


def _unknown_segment(segment: str, destinations: Sequence[Destination]) -> str:
    """`no destination selects segment 'x'`, with the closest selected names (case aside)."""
    selected = sorted({s for d in destinations for s in d.segments})
    by_lower: dict[str, str] = {}
    for s in selected:
        by_lower.setdefault(s.lower(), s)
    close = [by_lower[c] for c in _closest(segment.lower(), list(by_lower))]
    text = f"no destination selects segment {segment!r}"
    if close:
        quoted = [repr(c) for c in close]
        either = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        text += f"; did you mean {either}?"
    elif selected:
        more = f" and {len(selected) - 10} more" if len(selected) > 10 else ""
        text += f" (the destinations select {', '.join(selected[:10])}{more})"
    else:
        text += " (no destination is set up yet)"
    return text + " (use --force to upload anyway)"


def _closest(word: str, names: list[str]) -> list[str]:
    """Up to three names like `word` (difflib's ratio at least 0.6), the best first, leaving out
    those well behind the best (`cli-uu`: `cli-u`, not `cli-e` too)."""
    scored = []
    for name in names:
        matcher = difflib.SequenceMatcher(None, word, name)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            ratio = matcher.ratio()
            if ratio >= 0.6:
                scored.append((ratio, name))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [name for ratio, name in scored[:3] if ratio >= scored[0][0] - 0.1]


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
