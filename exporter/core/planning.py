"""Plan a run: stream a snapshot through mapping, validation and de-duplication into batches.

Every data row ends exactly once as valid, rejected, duplicate or blank; that invariant is what
the counts in `PlanStats` add up to and what the property tests check. Batches are handed to
`on_batch` as soon as they are full, so memory holds one batch plus the keys of the emails seen
(8 to 24 bytes each: see `exporter.core.synced_state`).

Planning is bounded in time as well as memory: a snapshot over `input_limits.MAX_ROWS` rows, or
with more than `input_limits.MAX_BLANK_RUN` blank rows in a row, fails; and one attempt stops at its
deadline (`PLAN_DEADLINE_SECONDS`, under the function's 10-minute timeout) with a file-level
error, instead of being killed by the host and retried five times.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any, Final, Protocol

from exporter.core.batching import DEFAULT_LIMITS, Batch, BatchLimits, BatchPacker
from exporter.core.contacts import ContactBuilder
from exporter.core.errors import InputError
from exporter.core.mapping import CustomField, FieldMapping
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.records import BLANK, RowProblem
from exporter.core.snapshots.snapshot import Snapshot, open_snapshot
from exporter.core.synced_state.delta import Delta

PLAN_DEADLINE_SECONDS: Final = 8 * 60.0
"""How long one planning attempt may read: host.json's `functionTimeout` is 10 minutes, and the
rest of the attempt (writing the state and the batches' records) needs some of it. Past this,
the run fails with `planning_timeout`."""

_WATCH_EVERY: Final = 256
"""Rows between looks at the clock and the row count (the reader also looks at the clock for
every 64 KiB it reads, so a line that takes long to skip is watched too)."""


class _Expired(Exception):
    """The deadline passed: raised by the clock check, wherever the reader is."""


class Observer(Protocol):
    """Decides, contact by contact, what is sent (`synced_state.delta.Delta` for a run's plan,
    `synced_state.delta.Resend` when a verification heals a list)."""

    unchanged: int

    def observe(self, email: str, contact_json: str, mask: int) -> bool | None:
        """None for a duplicate email, else whether the contact goes into a batch."""
        ...


class OverCap(InputError):
    """The snapshot has more valid contacts than the cap planning was given: reading stopped."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the segment has more than {cap:,} valid profiles")
        self.cap = cap


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
    """Valid contacts the list already holds as they are (not sent; see `synced_state`)."""
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
    deadline: float | None = PLAN_DEADLINE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    max_valid: int = sys.maxsize,
) -> PlanStats:
    """Plan one snapshot. Raises SnapshotError if the file turns out unreadable part-way, has
    more rows than `input_limits.MAX_ROWS`, a run of more than `input_limits.MAX_BLANK_RUN` blank
    rows, or takes longer than `deadline` seconds by `clock` (None: no deadline).

    Reading stops with `OverCap` once more than `max_valid` contacts are valid (a destination's
    profile cap: what de-duplication remembers, 8-24 bytes a contact, stays bounded by it).

    With a `delta`, only contacts new or changed since its old state go into batches (the others
    count as `unchanged`), and the delta collects the new state. `custom_fields` (from
    `exporter.flow.fields.resolve_custom_fields`) keys custom values by field id and types them.
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
    row = line = 0
    max_rows = input_limits.MAX_ROWS
    max_blank = input_limits.MAX_BLANK_RUN
    blank_last = blank_first = -1  # the latest blank row, and the first of its run of blanks
    blank_first_line = 0
    stop_at = None if deadline is None else clock() + deadline

    def watch() -> None:
        if stop_at is not None and clock() > stop_at:
            raise _Expired

    def emit(batch: Batch) -> None:
        nonlocal batches, body_bytes
        batches += 1
        body_bytes += batch.body_bytes
        if on_batch is not None:
            on_batch(batch)

    records = snapshot.records()
    snapshot.watch = watch
    try:
        while True:
            before = row
            chunk = islice(records, min(_WATCH_EVERY, max_rows + 1 - before))
            for row, (line, record) in enumerate(chunk, start=before + 1):
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
                                    "bad_unicode",
                                    "a field holds a lone surrogate (invalid Unicode)",
                                )
                                size = 0
                        if size > max_contact:
                            built = RowProblem(
                                "contact_too_large",
                                f"the contact is {size:,} bytes; "
                                f"one request allows {max_contact:,}",
                            )
                        if type(built) is tuple:
                            send = observe(email, contact, mask)
                            if send is None:
                                duplicates += 1
                                continue
                            valid += 1
                            if valid > max_valid:
                                raise OverCap(max_valid)
                            if not send:
                                continue  # unchanged since the last committed run
                            closed = add(contact, size)
                            if closed is not None:
                                emit(closed)
                            continue
                    problem = built  # type: ignore[assignment]
                elif record is BLANK:
                    blank += 1
                    if row != blank_last + 1:
                        blank_first, blank_first_line = row, line
                    blank_last = row
                    if row - blank_first >= max_blank:
                        raise snapshot.error(
                            "blank_rows",
                            f"more than {max_blank:,} blank rows in a row, from line "
                            f"{blank_first_line:,}: this is not a segment export",
                            line=line,
                        )
                    continue
                else:
                    problem = record  # type: ignore[assignment]
                reasons[problem.reason] += 1
                if on_reject is not None:
                    # Looked up per rejected row only: valid rows never pay for it.
                    part = snapshot.part
                    where = "" if part is None else part.name
                    on_reject(RejectedRow(row, line, problem.reason, problem.message, where))

            if row == before:
                break  # every row read
            if row > max_rows:
                raise snapshot.error(
                    "too_many_rows",
                    f"the snapshot has more than {max_rows:,} rows, the limit for one snapshot",
                    line=line,
                )
            watch()
    except _Expired:
        raise snapshot.error(
            "planning_timeout",
            f"planning stopped at its time limit of {deadline or 0:,.0f} s for one attempt, "
            f"after {row:,} rows: the snapshot takes too long to read; "
            "split it into smaller snapshots",
            line=line or None,
        ) from None
    finally:
        snapshot.watch = None

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
