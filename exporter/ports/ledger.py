"""The run ledger's interface: every run's state and counts, each of its batches and the slots,
readable at any time and changed atomically (`exporter.adapters.table_ledger` on Azure Table
storage; `tests/support/memory_ledger.py` in memory, for tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from exporter.model.runs import BatchRecord, RunRecord, SlotRecord


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
