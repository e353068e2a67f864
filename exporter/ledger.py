"""The run ledger: every run's state and counts, and each of its batches, readable at any time.

Azure Table storage in production (Azurite locally): one partition per run, the run itself at
RowKey `run` and one entity per batch (`batch-00000`), so concurrent workers update different
entities and rarely contend; where they do (the run entity), updates are optimistic with ETags
and retried. An in-memory ledger with the same interface serves unit tests.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    TableClient,
    TableServiceClient,
    TableTransactionError,
    TransactionOperation,
    UpdateMode,
)

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
TABLE: Final = "runs"
_MAX_TEXT: Final = 16_000  # characters kept of an error text (a table property holds 32K)


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
    ends, its state is committed (see `exporter.commit`)."""
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


R = TypeVar("R", RunRecord, BatchRecord, SlotRecord)
"""A `change` mutates the record it is given; returning False leaves the stored one untouched."""


class RunLedger(Protocol):
    def create_run(self, run: RunRecord) -> bool:
        """Record a new run; False when a run with that id exists (the request is a repeat)."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def update_run(self, run_id: str, change: Callable[[RunRecord], bool | None]) -> RunRecord:
        """Apply `change` atomically (re-read and re-applied on a concurrent update)."""
        ...

    def put_batches(
        self, run_id: str, batches: Sequence[BatchRecord], *, overwrite: bool = True
    ) -> None:
        """Record batches; `overwrite=False` leaves any that exist as they are (a repeated
        step writes the same batches without resetting those already sent)."""
        ...

    def get_batch(self, run_id: str, index: int) -> BatchRecord | None: ...

    def update_batch(
        self, run_id: str, index: int, change: Callable[[BatchRecord], bool | None]
    ) -> BatchRecord: ...

    def batches(self, run_id: str) -> list[BatchRecord]: ...

    def has_open_batches(self, run_id: str) -> bool:
        """Whether any batch of the run is still `queued` or `accepted` (reads only those)."""
        ...

    def runs(self, destination: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Newest first."""
        ...

    def get_slot(self, destination: str, segment: str) -> SlotRecord:
        """The slot as stored (an empty one when there is none yet); writes nothing."""
        ...

    def update_slot(
        self, destination: str, segment: str, change: Callable[[SlotRecord], bool | None]
    ) -> SlotRecord:
        """Apply `change` to the slot atomically (an empty slot when there is none yet)."""
        ...


class MemoryRunLedger:
    """The ledger in a dict, with the same semantics (for unit tests)."""

    def __init__(self) -> None:
        # Re-entrant: a change function may read the ledger (a slot's change reads its holder).
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._batches: dict[tuple[str, int], BatchRecord] = {}
        self._slots: dict[tuple[str, str], SlotRecord] = {}

    def get_slot(self, destination: str, segment: str) -> SlotRecord:
        with self._lock:
            slot = self._slots.get((destination, segment))
            return copy.deepcopy(slot) if slot else SlotRecord(destination, segment)

    def update_slot(
        self, destination: str, segment: str, change: Callable[[SlotRecord], bool | None]
    ) -> SlotRecord:
        with self._lock:
            key = (destination, segment)
            draft = copy.deepcopy(self._slots.get(key) or SlotRecord(destination, segment))
            if change(draft) is not False:
                draft.updated_at = utcnow()
                self._slots[key] = draft
            return copy.deepcopy(self._slots.get(key) or draft)

    def create_run(self, run: RunRecord) -> bool:
        with self._lock:
            if run.run_id in self._runs:
                return False
            self._runs[run.run_id] = copy.deepcopy(run)
            return True

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            return copy.deepcopy(run) if run else None

    def update_run(self, run_id: str, change: Callable[[RunRecord], bool | None]) -> RunRecord:
        with self._lock:
            current = self._runs.get(run_id)
            if current is None:
                raise KeyError(f"no run {run_id}")
            draft = copy.deepcopy(current)
            if change(draft) is not False:
                draft.updated_at = utcnow()
                self._runs[run_id] = draft
            return copy.deepcopy(self._runs[run_id])

    def put_batches(
        self, run_id: str, batches: Sequence[BatchRecord], *, overwrite: bool = True
    ) -> None:
        with self._lock:
            for batch in batches:
                if overwrite or (run_id, batch.index) not in self._batches:
                    self._batches[(run_id, batch.index)] = copy.deepcopy(batch)

    def get_batch(self, run_id: str, index: int) -> BatchRecord | None:
        with self._lock:
            batch = self._batches.get((run_id, index))
            return copy.deepcopy(batch) if batch else None

    def update_batch(
        self, run_id: str, index: int, change: Callable[[BatchRecord], bool | None]
    ) -> BatchRecord:
        with self._lock:
            current = self._batches.get((run_id, index))
            if current is None:
                raise KeyError(f"no batch {index} in run {run_id}")
            draft = copy.deepcopy(current)
            if change(draft) is not False:
                draft.updated_at = utcnow()
                self._batches[(run_id, index)] = draft
            return copy.deepcopy(self._batches[(run_id, index)])

    def batches(self, run_id: str) -> list[BatchRecord]:
        with self._lock:
            found = [copy.deepcopy(b) for (r, _), b in self._batches.items() if r == run_id]
        return sorted(found, key=lambda b: b.index)

    def has_open_batches(self, run_id: str) -> bool:
        with self._lock:
            return any(r == run_id and not b.settled for (r, _), b in self._batches.items())

    def runs(self, destination: str | None = None, limit: int = 50) -> list[RunRecord]:
        with self._lock:
            found = [
                copy.deepcopy(r)
                for r in self._runs.values()
                if destination is None or r.destination == destination
            ]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]


_RUN_FIELDS = {f.name for f in fields(RunRecord)}
_SLOT_FIELDS = {f.name for f in fields(SlotRecord)}
_BATCH_FIELDS = {f.name for f in fields(BatchRecord)}
_JSON_FIELDS = {"reasons", "warning_kinds"}


def _to_entity(
    partition: str, row: str, record: RunRecord | BatchRecord | SlotRecord
) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    for key, value in asdict(record).items():
        if key in _JSON_FIELDS:
            entity[key] = json.dumps(value, sort_keys=True)
        elif isinstance(value, str):
            entity[key] = value[:_MAX_TEXT]
        elif value is not None:
            entity[key] = value
    return entity


def _from_entity(entity: dict[str, Any], names: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in names:
        if key not in entity:
            continue
        value = entity[key]
        if key in _JSON_FIELDS:
            value = json.loads(value or "{}")
        elif isinstance(value, datetime):
            value = value.astimezone(UTC)
        elif hasattr(value, "value") and not isinstance(value, (str, int, float)):
            value = value.value  # EntityProperty for Int64 values
        values[key] = value
    return values


def _run_from(entity: dict[str, Any]) -> RunRecord:
    values = _from_entity(entity, _RUN_FIELDS)
    if values.get("list_count") == -1:  # how runs before `list_count_note` said "unknown"
        values["list_count"], values["drift"] = None, None
    return RunRecord(**values)


def _batch_from(entity: dict[str, Any]) -> BatchRecord:
    return BatchRecord(**_from_entity(entity, _BATCH_FIELDS))


def _slot_from(entity: dict[str, Any]) -> SlotRecord:
    return SlotRecord(**_from_entity(entity, _SLOT_FIELDS))


def _slot_partition(destination: str, segment: str) -> str:
    # Table keys may not hold '/', '\\', '#' or '?'; segment names hold none of them.
    return f"slot|{destination}|{segment}"


def _batch_key(index: int) -> str:
    return f"batch-{index:05d}"


class TableRunLedger:
    """The ledger in Azure Table storage (table `runs`)."""

    def __init__(self, service: TableServiceClient, table: str = TABLE) -> None:
        self._table: TableClient = service.create_table_if_not_exists(table)

    def create_run(self, run: RunRecord) -> bool:
        try:
            self._table.create_entity(_to_entity(run.run_id, "run", run))
        except ResourceExistsError:
            return False
        return True

    def get_run(self, run_id: str) -> RunRecord | None:
        try:
            return _run_from(self._table.get_entity(run_id, "run"))
        except ResourceNotFoundError:
            return None

    def update_run(self, run_id: str, change: Callable[[RunRecord], bool | None]) -> RunRecord:
        return self._update(run_id, "run", _run_from, change)

    def put_batches(
        self, run_id: str, batches: Sequence[BatchRecord], *, overwrite: bool = True
    ) -> None:
        kind = TransactionOperation.UPSERT if overwrite else TransactionOperation.CREATE
        for start in range(0, len(batches), 100):  # a transaction holds at most 100 entities
            part = batches[start : start + 100]
            operations: list[tuple[TransactionOperation, dict[str, Any]]] = [
                (kind, _to_entity(run_id, _batch_key(b.index), b)) for b in part
            ]
            try:
                self._table.submit_transaction(operations)
            except TableTransactionError:
                if overwrite:
                    raise
                for batch in part:  # some exist already (a repeat): create the others
                    with contextlib.suppress(ResourceExistsError):
                        self._table.create_entity(
                            _to_entity(run_id, _batch_key(batch.index), batch)
                        )

    def get_batch(self, run_id: str, index: int) -> BatchRecord | None:
        try:
            return _batch_from(self._table.get_entity(run_id, _batch_key(index)))
        except ResourceNotFoundError:
            return None

    def update_batch(
        self, run_id: str, index: int, change: Callable[[BatchRecord], bool | None]
    ) -> BatchRecord:
        return self._update(run_id, _batch_key(index), _batch_from, change)

    def batches(self, run_id: str) -> list[BatchRecord]:
        entities = self._table.query_entities(
            "PartitionKey eq @run and RowKey ge 'batch-' and RowKey lt 'batch.'",
            parameters={"run": run_id},
        )
        return sorted((_batch_from(e) for e in entities), key=lambda b: b.index)

    def has_open_batches(self, run_id: str) -> bool:
        # The filter runs in the service: a run of 5,000 batches answers with at most one.
        entities = self._table.query_entities(
            "PartitionKey eq @run and RowKey ge 'batch-' and RowKey lt 'batch.' "
            "and (state eq 'queued' or state eq 'accepted')",
            parameters={"run": run_id},
            results_per_page=1,
            select=["RowKey"],
        )
        return next(iter(entities), None) is not None

    def runs(self, destination: str | None = None, limit: int = 50) -> list[RunRecord]:
        query = "RowKey eq 'run'"
        parameters: dict[str, Any] = {}
        if destination is not None:
            query += " and destination eq @destination"
            parameters["destination"] = destination
        found = [_run_from(e) for e in self._table.query_entities(query, parameters=parameters)]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    def get_slot(self, destination: str, segment: str) -> SlotRecord:
        try:
            entity = self._table.get_entity(_slot_partition(destination, segment), "slot")
        except ResourceNotFoundError:
            return SlotRecord(destination, segment)
        return _slot_from(entity)

    def update_slot(
        self, destination: str, segment: str, change: Callable[[SlotRecord], bool | None]
    ) -> SlotRecord:
        partition = _slot_partition(destination, segment)
        with contextlib.suppress(ResourceExistsError):  # the first run of this pair makes it
            self._table.create_entity(
                _to_entity(partition, "slot", SlotRecord(destination, segment))
            )
        return self._update(partition, "slot", _slot_from, change)

    def _update(
        self,
        partition: str,
        row: str,
        load: Callable[[dict[str, Any]], R],
        change: Callable[[R], bool | None],
    ) -> R:
        for attempt in range(50):
            try:
                entity = self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                raise KeyError(f"no entity {row} in run {partition}") from None
            record = load(entity)
            if change(record) is False:
                return record
            record.updated_at = utcnow()
            try:
                self._table.update_entity(
                    _to_entity(partition, row, record),
                    mode=UpdateMode.REPLACE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # another worker won: re-read
                continue
            return record
        raise RuntimeError(f"could not update {row} of run {partition}: too much contention")


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
