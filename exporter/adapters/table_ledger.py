"""The run ledger in Azure Table storage (Azurite locally).

One partition per run: the run itself at RowKey `run` and one entity per batch (`batch-00000`),
so concurrent workers update different entities and rarely contend; where they do (the run
entity), updates are optimistic with ETags and retried. Slots live in partitions
`slot|<destination>|<segment>`.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

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

from exporter.model.notifications import record_from
from exporter.model.runs import BatchRecord, RunRecord, SlotRecord, utcnow

TABLE: Final = "runs"


_MAX_TEXT: Final = 16_000  # characters kept of an error text (a table property holds 32K)


R = TypeVar("R", RunRecord, BatchRecord, SlotRecord)
"""A `change` mutates the record it is given; returning False leaves the stored one untouched."""


_RUN_FIELDS = {f.name for f in fields(RunRecord)}


_SLOT_FIELDS = {f.name for f in fields(SlotRecord)}


_BATCH_FIELDS = {f.name for f in fields(BatchRecord)}


_JSON_FIELDS = {"reasons", "warning_kinds", "notifications"}
"""Stored as JSON text (`notifications`: a list of `NotificationRecord`s, bounded: at most 10
targets x 4 events of short fields each)."""


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
    stored = values.get("notifications")
    found = stored if isinstance(stored, list) else []
    values["notifications"] = [record_from(n) for n in found if isinstance(n, dict)]
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
