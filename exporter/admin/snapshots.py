"""Snapshots in the `segments` container, one code path for the CLI and the HTTP API: list them,
show one (its properties, what its first bytes say it is, the runs that read it), remove one.
(A local file is checked and uploaded by `exporter.admin.exports.upload_checked`.)

A snapshot is named by its blob name in `segments`, `<segment>/<file>` (`segments/` in front is
accepted). Names come from outside (a command line, a URL): each is decoded and checked as a blob
name (`exporter.core.paths`) and must name a snapshot file, so nothing reaches outside the
container, or into a CDM folder's partitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any, Final

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter.admin.errors import ConflictError, NotFoundError
from exporter.admin.events import event
from exporter.core.errors import InputError, MappingError
from exporter.core.mapping import FieldMapping, ResolvedMapping
from exporter.core.paths import blob_name, segment_problem, shown
from exporter.core.redact import mask_emails
from exporter.core.snapshots.formats import detect_format
from exporter.core.snapshots.parts import Parts
from exporter.core.snapshots.snapshot import Snapshot, open_snapshot
from exporter.flow.run_requests import segment_of
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.layout import SEGMENTS
from exporter.model.runs import RunRecord
from exporter.model.versions import SnapshotVersion, is_snapshot_file

MAX_LISTED: Final = 10_000
"""Snapshot files one listing returns at most (`truncated` says when there were more)."""
MAX_RUNS_SHOWN: Final = 20
"""Runs of a snapshot `show` lists, the newest first (`runs_total` counts them all)."""
MAX_COLUMNS_SHOWN: Final = 50
WAITING_STATES: Final = frozenset({"queued", "planning"})
"""Runs that have not read their snapshot yet: removing it makes them end `skipped`."""


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    version: SnapshotVersion
    newest: bool
    """The newest file of its segment: what `export --destination` and the timer take (unless
    a CDM entity of that name is newer)."""

    def as_json(self) -> dict[str, Any]:
        v = self.version
        return {
            "name": v.name,
            "segment": segment_of(v.name),
            "size": v.size,
            "etag": v.etag,
            "last_modified": v.last_modified.isoformat(),
            "format": detect_format(v.name),
            "compressed": v.name.lower().endswith(".gz"),
            "newest": self.newest,
        }


@dataclass(frozen=True, slots=True)
class Listing:
    snapshots: list[SnapshotEntry]
    truncated: bool

    def as_json(self) -> dict[str, Any]:
        return {"snapshots": [s.as_json() for s in self.snapshots], "truncated": self.truncated}


@dataclass(frozen=True, slots=True)
class SnapshotDetails:
    entry: SnapshotEntry
    destinations: list[str]
    """The destinations that select its segment."""
    content: dict[str, Any]
    """What its head says: `readable`, and its format, columns and mapping, or the error."""
    runs: list[RunRecord]
    runs_total: int

    def as_json(self) -> dict[str, Any]:
        return self.entry.as_json() | {
            "destinations": self.destinations,
            "content": self.content,
            "runs": [
                {
                    "run_id": r.run_id,
                    "destination": r.destination,
                    "state": r.state,
                    "trigger": r.trigger,
                    "created_at": r.created_at.isoformat(),
                    "this_version": same_etag(r.etag, self.entry.version.etag),
                }
                for r in self.runs
            ],
            "runs_total": self.runs_total,
        }


@dataclass(frozen=True, slots=True)
class Removed:
    version: SnapshotVersion
    skipped_runs: list[str]
    """Its runs that had not read it yet: they end `skipped`."""
    newest: str | None
    """The segment's newest snapshot file now (None: none is left)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "removed": self.version.name,
            "etag": self.version.etag,
            "skipped_runs": self.skipped_runs,
            "newest": self.newest,
        }


# --- list, show, remove ----------------------------------------------------------------------


def list_snapshots(
    svc: Services, segment: str | None = None, *, limit: int = MAX_LISTED
) -> Listing:
    """The snapshot files of one segment or of all, by segment, the newest first."""
    if segment is not None:
        check_segment(segment)
    if not 1 <= limit <= MAX_LISTED:
        raise InputError(f"limit must be from 1 to {MAX_LISTED:,}")
    found = list(islice(svc.storage.snapshot_files(segment), limit + 1))
    truncated = len(found) > limit
    newest = _newest_of(found[:limit])
    ordered = sorted(found[:limit], key=_order, reverse=True)
    ordered.sort(key=lambda v: segment_of(v.name))  # stable: by segment, the newest first
    return Listing(
        [SnapshotEntry(v, _name(newest.get(segment_of(v.name))) == v.name) for v in ordered],
        truncated,
    )


def show_snapshot(svc: Services, raw: str) -> SnapshotDetails:
    version = _current(svc, snapshot_name(raw))
    segment = segment_of(version.name)
    newest = _newest_of(islice(svc.storage.snapshot_files(segment), MAX_LISTED))
    chosen = selecting(list(svc.destinations.all()), segment)
    used = runs_of_snapshot(svc, version.name)
    return SnapshotDetails(
        SnapshotEntry(version, _name(newest.get(segment)) == version.name),
        [d.name for d in chosen],
        _content(svc, version, chosen),
        used[:MAX_RUNS_SHOWN],
        len(used),
    )


def remove_snapshot(svc: Services, raw: str, *, etag: str | None = None) -> Removed:
    """Delete a snapshot file (with `etag`: only that version of it). Runs that have not read it
    yet end `skipped`; the segment's newest snapshot is then the one before."""
    version = _current(svc, snapshot_name(raw))
    name = version.name
    if etag is not None and not same_etag(etag, version.etag):
        raise ConflictError(
            f"snapshot {name!r} is at version {version.etag}, not {etag}: it was replaced; "
            "nothing was removed"
        )
    if not svc.storage.remove_snapshot(version):
        _current(svc, name)  # gone meanwhile: 404
        raise ConflictError(f"snapshot {name!r} was replaced meanwhile: nothing was removed")
    waiting = [
        r.run_id
        for r in runs_of_snapshot(svc, name)
        if same_etag(r.etag, version.etag) and r.state in WAITING_STATES
    ]
    segment = segment_of(name)
    newest = _newest_of(islice(svc.storage.snapshot_files(segment), MAX_LISTED)).get(segment)
    event("snapshot removed", snapshot=name, waiting_runs=len(waiting))
    return Removed(version, waiting, newest.name if newest else None)


def get_snapshot(svc: Services, raw: str) -> SnapshotVersion:
    """The snapshot of that name as it is now; NotFoundError when there is none."""
    return _current(svc, snapshot_name(raw))


def runs_of_snapshot(svc: Services, name: str) -> list[RunRecord]:
    """Every run of this snapshot (any version of it), the newest first."""
    return [r for r in svc.ledger.runs(limit=1_000_000) if r.snapshot == name]


def snapshot_name(raw: str) -> str:
    """A snapshot's blob name in `segments`, from outside data: decoded, checked, and a file of
    a segment (`<segment>/<file>.csv|.jsonl[.gz]`); `segments/` in front is taken off. The
    folder need not be a valid segment name: a file stored by hand there is listed, so it can
    be shown and removed too."""
    name = blob_name(raw)
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == SEGMENTS:
        name = "/".join(parts[1:])
    if not is_snapshot_file(name):
        raise InputError(
            f"{shown(raw)} is not a snapshot: a snapshot is named <segment>/<file> in the "
            "segments container, a .csv or .jsonl file, optionally .gz"
        )
    return name


def same_etag(a: str, b: str) -> bool:
    """Whether two ETags name one version (a blob listing gives them bare, headers quoted)."""
    return a.strip('"') == b.strip('"')


def _name(version: SnapshotVersion | None) -> str | None:
    return None if version is None else version.name


def _current(svc: Services, name: str) -> SnapshotVersion:
    version = svc.storage.snapshot_version(name)
    if version is None:
        raise NotFoundError(f"no snapshot segments/{name}")
    return version


def _order(version: SnapshotVersion) -> tuple[Any, str]:
    # Blob times have one-second resolution: a tie goes to the later name (`latest_snapshot`).
    return version.last_modified, version.name


def _newest_of(versions: Iterable[SnapshotVersion]) -> dict[str, SnapshotVersion]:
    newest: dict[str, SnapshotVersion] = {}
    for v in versions:
        segment = segment_of(v.name)
        if segment not in newest or _order(v) > _order(newest[segment]):
            newest[segment] = v
    return newest


def _content(
    svc: Services, version: SnapshotVersion, destinations: Sequence[Destination]
) -> dict[str, Any]:
    """What the head of the snapshot says (its first range is read, no more): its format and
    columns, and whether the mapping of every destination that selects it fits."""
    try:
        stream = svc.storage.open_snapshot(version)
        if isinstance(stream, Parts):  # a CDM entity: never a snapshot file
            return {"readable": None}
        with open_with_mappings(stream, version.name, destinations) as (snapshot, fitted):
            columns = list(snapshot.columns)
            return {
                "readable": True,
                "format": snapshot.format,
                "compressed": snapshot.compressed,
                "delimiter": snapshot.delimiter,
                "columns": [mask_emails(c) for c in columns[:MAX_COLUMNS_SHOWN]],
                "columns_total": len(columns),
                "mappings": [
                    {
                        "destinations": names,
                        "mapping": {
                            f.name: mask_emails(c)
                            for f, c in zip(mapping.fields, mapping.columns, strict=True)
                        },
                    }
                    for names, mapping in fitted
                ],
            }
    except InputError as exc:
        return {"readable": False, "error": mask_emails(str(exc))}
    except (ResourceModifiedError, ResourceNotFoundError):
        return {"readable": None, "error": "the snapshot was replaced or deleted while it was read"}


@contextmanager
def open_with_mappings(
    source: Path | IO[bytes], name: str, destinations: Sequence[Destination]
) -> Iterator[tuple[Snapshot, list[tuple[list[str], ResolvedMapping]]]]:
    """The snapshot opened with the mapping of the destinations that select it, and each
    distinct mapping among theirs fitted to its columns, with the destinations that have it (the
    default mapping, for no destination, when none selects it). One that does not fit raises
    MappingError naming its destinations."""
    groups: dict[tuple[tuple[str, str], ...], tuple[FieldMapping, list[str]]] = {}
    for d in destinations:
        key = tuple(sorted(d.mapping.items()))
        groups.setdefault(key, (d.field_mapping(), []))[1].append(d.name)
    (first, users), *others = list(groups.values()) or [(FieldMapping(), [])]
    try:
        snapshot = open_snapshot(source, name=name, mapping=first)
    except MappingError as exc:
        raise MappingError(_of(users, exc)) from None
    with snapshot:
        fitted = [(users, snapshot.mapping)]
        for mapping, names in others:
            try:
                fitted.append((names, mapping.resolve(snapshot.columns)))
            except MappingError as exc:
                raise MappingError(_of(names, exc)) from None
        yield snapshot, fitted


def _of(destinations: list[str], exc: MappingError) -> str:
    if not destinations:
        return str(exc)
    return f"the mapping of destination {', '.join(map(repr, destinations))}: {exc}"


def selecting(destinations: Sequence[Destination], segment: str) -> list[Destination]:
    return [d for d in destinations if segment in d.segments]


def check_segment(segment: str) -> None:
    problem = segment_problem(segment)
    if problem:
        raise InputError(f"segment {shown(segment)} cannot be a segment name: {problem}")
