"""Plan a run: stream a snapshot through mapping, validation and de-duplication into batches.

Every data row ends exactly once as valid, rejected, duplicate or blank; that invariant is what
the counts in `PlanStats` add up to and what the property tests check. Batches are handed to
`on_batch` as soon as they are full, so memory holds one batch plus the keys of the emails seen
(8 to 24 bytes each: see `exporter.state`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from exporter.batching import DEFAULT_LIMITS, Batch, BatchLimits, BatchPacker
from exporter.contacts import ContactBuilder
from exporter.mapping import CustomField, FieldMapping
from exporter.snapshots import BLANK, RowProblem, Snapshot, open_snapshot
from exporter.state import Delta


class Observer(Protocol):
    """Decides, contact by contact, what is sent (`exporter.state.Delta` for a run's plan,
    `exporter.state.Resend` when a verification heals a list)."""

    unchanged: int

    def observe(self, email: str, contact_json: str, mask: int) -> bool | None:
        """None for a duplicate email, else whether the contact goes into a batch."""
        ...


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that will not be sent: its 1-based data row number, the line it starts on, and why.

    `row` counts across the whole snapshot; `line` is within the file the row is in: for a
    snapshot in parts (a CDM entity), `partition` names that file (its blob), else it is empty.
    """

    row: int
    line: int
    reason: str
    message: str
    partition: str = ""


@dataclass(slots=True)
class PlanStats:
    """What planning found. rows == valid + rejected + duplicates + blank."""

    rows: int = 0
    valid: int = 0
    unchanged: int = 0
    """Valid contacts the list already holds as they are (not sent; see `exporter.state`)."""
    rejected: int = 0
    duplicates: int = 0
    blank: int = 0
    batches: int = 0
    body_bytes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "valid": self.valid,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "blank": self.blank,
            "warnings": sum(self.warnings.values()),
            "batches": self.batches,
            "body_bytes": self.body_bytes,
            "reasons": dict(sorted(self.reasons.items())),
            "warning_kinds": dict(sorted(self.warnings.items())),
        }


def plan(
    snapshot: Snapshot,
    *,
    on_batch: Callable[[Batch], None] | None = None,
    on_reject: Callable[[RejectedRow], None] | None = None,
    custom_fields: Mapping[str, CustomField] | None = None,
    limits: BatchLimits = DEFAULT_LIMITS,
    delta: Observer | None = None,
) -> PlanStats:
    """Plan one snapshot. Raises SnapshotError if the file turns out unreadable part-way.

    With a `delta`, only contacts new or changed since its old state go into batches (the others
    count as `unchanged`), and the delta collects the new state. `custom_fields` (from
    `exporter.fields.resolve_custom_fields`) keys custom values by field id and types them.
    """
    stats = PlanStats()
    builder = ContactBuilder(snapshot.mapping.fields, custom_fields)
    build = builder.build
    packer = BatchPacker(limits)
    add = packer.add
    max_contact = limits.max_contact_bytes
    if delta is None:
        delta = Delta(collect=False)  # duplicates are still found; nothing is kept
    observe = delta.observe
    reasons = stats.reasons
    valid = duplicates = blank = batches = body_bytes = 0
    row = 0

    def emit(batch: Batch) -> None:
        nonlocal batches, body_bytes
        batches += 1
        body_bytes += batch.body_bytes
        if on_batch is not None:
            on_batch(batch)

    for row, (line, record) in enumerate(snapshot.records(), start=1):
        problem: RowProblem
        if type(record) is tuple:
            built = build(record)
            if type(built) is tuple:
                email, contact, mask = built
                if contact.isascii():
                    size = len(contact)
                else:
                    try:
                        size = len(contact.encode("utf-8"))
                    except UnicodeEncodeError:
                        built = RowProblem(
                            "bad_unicode", "a field holds a lone surrogate (invalid Unicode)"
                        )
                        size = 0
                if size > max_contact:
                    built = RowProblem(
                        "contact_too_large",
                        f"the contact is {size:,} bytes; one request allows {max_contact:,}",
                    )
                if type(built) is tuple:
                    send = observe(email, contact, mask)
                    if send is None:
                        duplicates += 1
                        continue
                    valid += 1
                    if not send:
                        continue  # unchanged since the last committed run
                    closed = add(contact, size)
                    if closed is not None:
                        emit(closed)
                    continue
            problem = built  # type: ignore[assignment]
        elif record is BLANK:
            blank += 1
            continue
        else:
            problem = record  # type: ignore[assignment]
        reasons[problem.reason] += 1
        if on_reject is not None:
            # Looked up per rejected row only: valid rows never pay for it.
            part = snapshot.part
            where = "" if part is None else part.name
            on_reject(RejectedRow(row, line, problem.reason, problem.message, where))

    last = packer.finish()
    if last is not None:
        emit(last)
    stats.rows = row
    stats.valid = valid
    stats.unchanged = delta.unchanged
    stats.duplicates = duplicates
    stats.blank = blank
    stats.rejected = sum(reasons.values())
    stats.batches = batches
    stats.body_bytes = body_bytes
    stats.warnings = builder.warnings
    return stats


def plan_file(
    source: str | Path | IO[bytes],
    mapping: FieldMapping | None = None,
    *,
    name: str | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    on_reject: Callable[[RejectedRow], None] | None = None,
    limits: BatchLimits = DEFAULT_LIMITS,
) -> PlanStats:
    """Open and plan a snapshot in one call (what `check` and the benchmark use)."""
    with open_snapshot(source, name=name, mapping=mapping) as snapshot:
        return plan(snapshot, on_batch=on_batch, on_reject=on_reject, limits=limits)
