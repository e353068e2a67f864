"""One run at a time per destination x segment, the newer snapshot winning (the slot).

A run takes the slot before planning and gives it back when it ends, so two snapshots of one
segment never interleave on one destination: an older one still in flight makes a newer one wait;
a newer one exported (or being exported) makes an older one skip. The slot also remembers the
last snapshot whose state was committed, and how many syncs ago every contact was sent (full
refresh) and the list was read back (verification), for the destination's cadences.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from exporter.flow.services import Services
from exporter.model.messages import ExportRequest
from exporter.model.runs import RunRecord, SlotRecord, utcnow

SLOT_WAIT: Final = 15.0
"""Seconds before a run waiting for an older run of its segment looks again."""
STALE_HOLDER: Final = timedelta(hours=3)
"""A holder of a slot that has not moved for this long is taken to be dead."""


def order(when: datetime | None, name: str) -> tuple[datetime, str]:
    """Snapshots of a segment in the order they were written. Blob times have one-second
    resolution, so a tie goes to the later name (exports name their files by time)."""
    return (when or datetime.min.replace(tzinfo=UTC), name)


def take(svc: Services, request: ExportRequest) -> str | None:
    """Take the destination x segment slot: None when taken; `wait`; or why to skip."""
    ours = order(request.snapshot_time, request.snapshot)
    outcome: list[str] = []

    def change(slot: SlotRecord) -> bool:
        outcome.clear()
        if slot.run_id == request.run_id:
            return False  # ours already (a repeat delivery)
        if slot.synced_time and ours < order(slot.synced_time, slot.synced_snapshot):
            outcome.append(
                "a newer snapshot of this segment was already exported to this destination"
            )
            return False
        if slot.run_id:
            holder = svc.ledger.get_run(slot.run_id)
            if holder and not holder.final and utcnow() - holder.updated_at < STALE_HOLDER:
                if order(holder.snapshot_time, holder.snapshot) > ours:
                    outcome.append(
                        "a newer snapshot of this segment is being exported to this destination"
                    )
                else:
                    outcome.append("wait")
                return False
        slot.run_id, slot.snapshot = request.run_id, request.snapshot
        slot.snapshot_time = request.snapshot_time
        return True

    svc.ledger.update_slot(request.destination, request.segment, change)
    return outcome[0] if outcome else None


def release(svc: Services, run: RunRecord) -> None:
    """Give back the slot when a run ends; a committed run moves the 'exported up to' mark and
    counts towards the cadences (a failed run commits its state, but neither moves the mark nor
    counts). Safe to repeat: a run is counted once."""

    def give(slot: SlotRecord) -> bool:
        changed = False
        if slot.run_id == run.run_id:
            slot.run_id, changed = "", True
        # The timer exports the same snapshot again: that moves the mark too (and counts).
        not_older = slot.synced_time is None or order(run.snapshot_time, run.snapshot) >= order(
            slot.synced_time, slot.synced_snapshot
        )
        counted = slot.synced_run == run.run_id
        succeeded = run.state in ("succeeded", "succeeded_with_errors")
        if run.state_committed and succeeded and run.snapshot_time and not_older and not counted:
            slot.synced_time, slot.synced_snapshot = run.snapshot_time, run.snapshot
            slot.synced_run = run.run_id
            # A run that skipped nobody as unchanged (a full refresh, or the first) sent all.
            sent_all = run.full_refresh or run.unchanged == 0
            slot.syncs_since_full = 0 if sent_all else slot.syncs_since_full + 1
            slot.syncs_since_verify = 0 if run.looks else slot.syncs_since_verify + 1
            changed = True
        return changed

    svc.ledger.update_slot(run.destination, run.segment, give)
