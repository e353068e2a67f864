"""The run ledger in a dict, with the Table ledger's semantics (for fast tests)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence

from exporter.model.runs import BatchRecord, RunRecord, SlotRecord, utcnow


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
