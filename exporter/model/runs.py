"""A run and its batches as the ledger records them: one destination x one snapshot version,
from request to final state, and the slot that keeps two runs of a segment from interleaving.

Plain slotted dataclasses (the flow changes them through `RunLedger.update_*` with a `change`
function); `totals` adds up a run's batches. Where they are stored: `exporter.ports.ledger`
(the interface) and `exporter.adapters.table_ledger` (Azure Table storage).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from exporter.model.notifications import NotificationRecord

RunState = Literal[
    "queued",
    "planning",
    "sending",
    "confirming",
    "verifying",
    "succeeded",
    "succeeded_with_errors",
    "failed",
    "skipped",
]


FINAL_STATES: Final = frozenset({"succeeded", "succeeded_with_errors", "failed", "skipped"})


BatchState = Literal["queued", "accepted", "done", "failed"]


SETTLED_BATCH_STATES: Final = frozenset({"done", "failed"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def set_fields(record: Any, **values: Any) -> bool:
    """A `change` for `update_run`/`update_batch`/`update_slot` that sets these fields."""
    for key, value in values.items():
        setattr(record, key, value)
    return True


@dataclass(slots=True)
class RunRecord:
    """One destination x one snapshot version, from request to final state."""

    run_id: str
    destination: str
    segment: str
    snapshot: str
    etag: str
    trigger: str
    created_at: datetime = field(default_factory=utcnow)
    snapshot_time: datetime | None = None
    """When the snapshot version was written (orders snapshots of one segment)."""
    updated_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    state: str = "queued"
    request_queued: bool = False
    """Set once the export request is in its queue: a repeat that finds it unset knows the
    first attempt died in between, and queues it again."""
    planned: bool = False
    """Set once the run's batches and pending state are written: from then on, however the run
    ends, its state is committed (see `exporter.flow.commit`)."""
    batches_queued: bool = False
    """Set once every batch message is in its queue (the same crash window, one step later)."""
    error: str = ""
    list_id: str = ""
    reject_report: str = ""
    rows: int = 0
    valid: int = 0
    unchanged: int = 0
    sent: int = 0
    members: int = 0
    full_refresh: bool = False
    sync_mode: str = "upsert"
    state_committed: bool = False
    rejected: int = 0
    duplicates: int = 0
    blank: int = 0
    warnings: int = 0
    batches: int = 0
    body_bytes: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    warning_kinds: dict[str, int] = field(default_factory=dict)
    requested: int = 0
    created: int = 0
    updated: int = 0
    errored: int = 0
    leavers: int = 0
    removed: int = 0
    batches_done: int = 0
    batches_failed: int = 0
    list_count: int | None = None
    """The list's contact count as SendGrid showed it when the run ended; None: unknown (the
    reason is in `list_count_note`)."""
    list_count_note: str = ""
    drift: int | None = None
    """list_count minus the members this destination expects from the segment (None when the
    count is unknown). SendGrid's counts lag: a verified run's `missing`/`changed`/`extra` are
    the member-by-member truth."""
    verify: bool = False
    """This run reads the list back from SendGrid (its contacts export) and heals it."""
    verified: bool = False
    """The list was read back and held exactly what the segment says (the last look)."""
    verify_note: str = ""
    """Why the list was not verified, or what verifying it found."""
    looks: int = 0
    """Looks at the list taken (each reads a SendGrid export of it); the next look's number."""
    look_queued: bool = False
    """Set once the message for the next look is in its queue (a repeat that finds it unset
    while the run is `verifying` queues it)."""
    export_id: str = ""
    """The SendGrid export of the latest look."""
    heals: int = 0
    """Times this run sent what a look found missing, changed or extra (at most once)."""
    missing: int | None = None
    """Members of the segment the list lacked, at the last look (None: not looked)."""
    changed: int | None = None
    """Members whose fields on the list differed from the segment's, at the last look."""
    extra: int | None = None
    """Contacts on the list the segment does not hold, at the last look (mirror mode removes
    them; upsert mode leaves them)."""
    unverifiable: int = 0
    """Members whose fields SendGrid's export does not show (only their membership was seen)."""
    resent: int = 0
    """Contacts sent again to heal the list."""
    extra_removed: int = 0
    """Contacts the segment does not hold, taken off the list to heal it (mirror mode)."""
    notifications: list[NotificationRecord] = field(default_factory=list)
    """What the run's end was told to whom, and how each delivery went (`exporter.flow.notify`);
    never part of its outcome."""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(slots=True)
class BatchRecord:
    """One upsert request of a run: its job and what SendGrid made of it."""

    run_id: str
    index: int
    contacts: int
    body_bytes: int
    kind: str = "upsert"
    """`upsert` (contacts into the list) or `remove` (emails out of it, mirror mode)."""
    round: int = 0
    """0: planned from the snapshot; 1: sent to heal the list after a look at it."""
    removed: int = 0
    searched: bool = False
    """A removal batch: its emails were looked up; `contact_ids` holds what SendGrid found."""
    contact_ids: str = ""
    """A removal batch: the ids of its contacts, comma-separated (at most 100 x 36 characters)."""
    state: str = "queued"
    job_id: str = ""
    attempts: int = 0
    deferrals: int = 0
    requested: int = 0
    created: int = 0
    updated: int = 0
    errored: int = 0
    error: str = ""
    errors_url: str = ""
    updated_at: datetime = field(default_factory=utcnow)

    @property
    def settled(self) -> bool:
        return self.state in SETTLED_BATCH_STATES


@dataclass(slots=True)
class SlotRecord:
    """Who is exporting a destination x segment now, and which snapshot was exported last.

    Two snapshots of one segment never interleave on one destination: a run takes the slot
    before planning and gives it back when it ends."""

    destination: str
    segment: str
    run_id: str = ""
    snapshot: str = ""
    snapshot_time: datetime | None = None
    synced_snapshot: str = ""
    synced_time: datetime | None = None
    """The snapshot (name, time) of the last run whose state was committed."""
    synced_run: str = ""
    """The run that committed it (a repeated release of that run counts once)."""
    syncs_since_full: int = 0
    """Committed runs since the last one that sent every contact (see `full_refresh_every`)."""
    syncs_since_verify: int = 0
    """Committed runs since the last one that read the list back (see `verify_every`)."""
    updated_at: datetime = field(default_factory=utcnow)


def totals(batches: Iterable[BatchRecord]) -> dict[str, int]:
    """What the batches of a run add up to (for progress and finalisation)."""
    out = dict.fromkeys(
        ("requested", "created", "updated", "errored", "removed", "accepted", "done", "failed"), 0
    )
    for b in batches:
        out["removed"] += b.removed
        out["requested"] += b.requested
        out["created"] += b.created
        out["updated"] += b.updated
        out["errored"] += b.errored
        if b.state in ("accepted", "done"):
            out["accepted"] += 1
        if b.state == "done":
            out["done"] += 1
        if b.state == "failed":
            out["failed"] += 1
    return out


def confirmed_difference(run: RunRecord) -> bool:
    """The run's last look found the list different from the segment, and it was a second look
    (taken `verify_lag` after the first saw the difference): not SendGrid's lag. What ends a run
    failed as drift (`exporter.flow.finish`), notifies `list_drift` and shows in the overview."""
    if not run.looks or run.looks % 2:
        return False
    extra = run.extra if run.sync_mode == "mirror" else 0
    return bool(run.missing or run.changed or extra)


def differences(run: RunRecord) -> str:
    """What the run's last look at its list found different from the segment."""
    parts = [f"{run.missing or 0:,} missing", f"{run.changed or 0:,} with other field values"]
    extra = f"{run.extra or 0:,} not in the segment"
    parts.append(extra if run.sync_mode == "mirror" else extra + " (kept: upsert mode)")
    return ", ".join(parts)
