"""Dry runs and previews: what an export would send, read through the core as a run reads it
(open, map, validate, de-duplicate), with nothing sent and nothing kept.

`exporter check` dry-runs a local file (`dry_run_source`); the console dry-runs the latest
stored snapshot of a segment with the mapping being edited (`dry_run`), previews the first
contacts of its head (`preview`: a bounded read), and offers its columns (`segment_columns`:
the header, or a CDM entity's attributes) with the column the default mapping would take for
each field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter.admin.errors import ConflictError, NotFoundError
from exporter.admin.snapshots import check_segment, list_snapshots
from exporter.core.errors import MappingError
from exporter.core.mapping import FieldMapping, ResolvedMapping, field_spec
from exporter.core.planning import PlanStats, RejectedRow, plan
from exporter.core.redact import mask_emails
from exporter.core.snapshots.formats import Format
from exporter.core.snapshots.parts import Parts
from exporter.core.snapshots.snapshot import Snapshot, open_snapshot
from exporter.core.synced_state.delta import Delta
from exporter.flow.services import Services
from exporter.model.versions import SnapshotVersion

PREVIEW_CONTACTS: Final = 20
"""Contacts a preview shows."""
PREVIEW_MAX_ROWS: Final = 5_000
"""Rows a preview reads at most, however many of them are rejected: the head, never more."""
SAMPLES_PER_REASON: Final = 3
"""Rejected rows a dry run shows per reason (row, line and the message, emails masked)."""
MAX_SEGMENTS_LISTED: Final = 1_000


class FirstContacts(Delta):
    """Planning's observer for a dry run: duplicates found as a run finds them (nothing kept),
    and the first `keep` contacts that would be sent, as their JSON text. With `stop`, reading
    ends once it has them."""

    def __init__(self, keep: int = 1, *, stop: bool = False, max_rows: int = 0) -> None:
        super().__init__(collect=False)
        self.keep = keep
        self.stop = stop
        self.max_rows = max_rows
        self.rows = 0
        """Rows seen (valid, duplicate and, counted by the caller, rejected)."""
        self.contacts: list[str] = []

    def observe(self, email: str, contact_json: str, mask: int = 0) -> bool | None:
        sent = super().observe(email, contact_json, mask)
        if sent and len(self.contacts) < self.keep:
            self.contacts.append(contact_json)
        elif sent and self.stop:
            raise _Enough
        self.count_row()
        return sent

    def count_row(self) -> None:
        """One more row read; with `max_rows`, reading ends after that many."""
        self.rows += 1
        if self.max_rows and self.rows >= self.max_rows:
            raise _Enough

    @property
    def first(self) -> str | None:
        return self.contacts[0] if self.contacts else None


class _Enough(Exception):
    """A preview has what it shows: reading stops."""


@dataclass(frozen=True, slots=True)
class DryRun:
    snapshot: Snapshot
    stats: PlanStats
    first: FirstContacts


def dry_run_source(
    source: Path | IO[bytes] | Parts,
    mapping: FieldMapping,
    *,
    name: str | None = None,
    format: Format | None = None,
    on_reject: Callable[[RejectedRow], None] | None = None,
) -> DryRun:
    """Read a whole snapshot as a run would plan it (`exporter check`, the console's dry run)."""
    first = FirstContacts()
    with open_snapshot(source, name=name, mapping=mapping, format=format) as snapshot:
        stats = plan(snapshot, on_reject=on_reject, delta=first)
    return DryRun(snapshot, stats, first)


def summary(file: str, snapshot: Snapshot, stats: PlanStats) -> dict[str, Any]:
    """What a dry run found, as `exporter check --json` prints it."""
    mapping = snapshot.mapping
    return {
        "file": file,
        "format": snapshot.format,
        "compressed": snapshot.compressed,
        "delimiter": snapshot.delimiter,
        "mapping": mapping_of(mapping),
        **stats.as_dict(),
    }


def mapping_of(mapping: ResolvedMapping) -> dict[str, str]:
    """field -> column, as fitted to a snapshot's columns."""
    return {f.name: c for f, c in zip(mapping.fields, mapping.columns, strict=True)}


# --- a segment's latest stored snapshot ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentColumns:
    segment: str
    snapshot: str
    format: str
    columns: list[str]
    suggested: dict[str, str]
    """field -> the column the default mapping takes for it (empty when none fits)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "snapshot": self.snapshot,
            "format": self.format,
            "columns": self.columns,
            "suggested": self.suggested,
        }


@dataclass(frozen=True, slots=True)
class Preview:
    segment: str
    snapshot: str
    fields: list[str]
    """The contact's fields in the order a payload has them (custom fields by name)."""
    contacts: list[dict[str, Any]]
    """The first contacts as SendGrid receives them (custom fields keyed by name here: a run
    keys them by SendGrid's field ids)."""
    rows: int
    rejected: dict[str, int]
    """Rejected rows among those read, by reason."""

    def as_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "snapshot": self.snapshot,
            "fields": self.fields,
            "contacts": self.contacts,
            "rows": self.rows,
            "rejected": self.rejected,
        }


@dataclass(frozen=True, slots=True)
class SegmentDryRun:
    segment: str
    snapshot: str
    summary: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per reject reason, the first rows: row, line, message (emails masked)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "snapshot": self.snapshot,
            **self.summary,
            "samples": self.samples,
        }


def stored_segments(svc: Services) -> list[str]:
    """The segments that have a snapshot stored, and those a destination selects whose newest
    snapshot is a CDM entity."""
    listing = list_snapshots(svc, limit=10_000)
    found = {entry.as_json()["segment"] for entry in listing.snapshots}
    for destination in svc.destinations.all():
        for segment in destination.segments:
            if segment not in found and svc.snapshots.latest_snapshot(segment) is not None:
                found.add(segment)
    return sorted(found)[:MAX_SEGMENTS_LISTED]


def latest_of(svc: Services, segment: str) -> SnapshotVersion:
    check_segment(segment)
    version = svc.snapshots.latest_snapshot(segment)
    if version is None:
        raise NotFoundError(f"segment {segment!r} has no snapshot yet")
    return version


def segment_columns(svc: Services, segment: str) -> SegmentColumns:
    """The columns of the segment's latest snapshot and what the default mapping takes."""
    version = latest_of(svc, segment)
    with _opened(svc, version, _ColumnsOnly()) as snapshot:
        columns = list(snapshot.columns)
        suggested: dict[str, str] = {}
        with suppress(MappingError):  # no column looks like an email: nothing is suggested
            suggested = mapping_of(FieldMapping().resolve(columns))
        return SegmentColumns(segment, version.name, snapshot.format, columns, suggested)


def preview(svc: Services, segment: str, mapping: Mapping[str, str]) -> Preview:
    """The first `PREVIEW_CONTACTS` contacts of the segment's latest snapshot with `mapping`
    (of at most `PREVIEW_MAX_ROWS` rows read), as SendGrid would receive them."""
    version = latest_of(svc, segment)
    first = FirstContacts(PREVIEW_CONTACTS, stop=True, max_rows=PREVIEW_MAX_ROWS)
    rejected: dict[str, int] = {}

    def on_reject(row: RejectedRow) -> None:
        rejected[row.reason] = rejected.get(row.reason, 0) + 1
        first.count_row()

    with _opened(svc, version, _parse(mapping)) as snapshot:
        with suppress(_Enough):  # the head is read
            plan(snapshot, on_reject=on_reject, delta=first)
        fields = [f.name for f in snapshot.mapping.fields]
    contacts = [json.loads(c) for c in first.contacts]
    return Preview(segment, version.name, _payload_fields(fields), contacts, first.rows, rejected)


def dry_run(svc: Services, segment: str, mapping: Mapping[str, str]) -> SegmentDryRun:
    """The whole latest snapshot of the segment read as a run would plan it with `mapping`:
    valid, rejected by reason (with the first rows of each), duplicates. Nothing is sent."""
    version = latest_of(svc, segment)
    samples: dict[str, list[dict[str, Any]]] = {}

    def on_reject(row: RejectedRow) -> None:
        kept = samples.setdefault(row.reason, [])
        if len(kept) < SAMPLES_PER_REASON:
            kept.append({"row": row.row, "line": row.line, "message": mask_emails(row.message)})

    source = _source(svc, version)
    try:
        result = dry_run_source(source, _parse(mapping), name=version.name, on_reject=on_reject)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise _replaced(version) from None
    finally:
        _close(source)
    found = summary(f"segments/{version.name}", result.snapshot, result.stats)
    return SegmentDryRun(segment, version.name, found, samples)


# --- reading -----------------------------------------------------------------------------------


class _ColumnsOnly(FieldMapping):
    """A mapping that always fits: the columns are what is asked for, not a mapping."""

    def resolve(self, columns: Any) -> ResolvedMapping:
        try:
            return FieldMapping().resolve(columns)
        except MappingError:
            email = field_spec("email")
            return ResolvedMapping((email,), (columns[0],) if columns else ("",), (0,))


def _parse(mapping: Mapping[str, str]) -> FieldMapping:
    return FieldMapping.parse(f"{name}={column}" for name, column in mapping.items())


def _source(svc: Services, version: SnapshotVersion) -> IO[bytes] | Parts:
    try:
        return svc.snapshots.open_snapshot(version)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise _replaced(version) from None


@contextmanager
def _opened(svc: Services, version: SnapshotVersion, mapping: FieldMapping) -> Iterator[Snapshot]:
    source = _source(svc, version)
    try:
        with open_snapshot(source, name=version.name, mapping=mapping) as snapshot:
            yield snapshot
    except (ResourceModifiedError, ResourceNotFoundError):
        raise _replaced(version) from None
    finally:
        _close(source)


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


def _replaced(version: SnapshotVersion) -> ConflictError:
    return ConflictError(
        f"snapshot segments/{version.name} was replaced or deleted while it was read: try again"
    )


def _payload_fields(fields: list[str]) -> list[str]:
    """Reserved fields by name; custom fields as they stand under `custom_fields`."""
    return [f.removeprefix("custom:") for f in fields]
