"""Removing a destination, safe to repeat.

A removal stops the destination's exports at once (its unfinished runs and their queued batches
fail saying so) and deletes what the app holds for it of people's data (its synced state, its
runs' batch blobs); the run history stays. Every step is safe to repeat, and a repeat finishes
what an interrupted removal left, also once the document is gone (the ledger still names the
destination's runs and segments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from azure.core.exceptions import AzureError, HttpResponseError

from exporter.admin.destinations import check_name
from exporter.admin.errors import NotFoundError, RemovalIncomplete
from exporter.admin.events import event, log
from exporter.core.errors import InputError, Unreachable
from exporter.flow import finish, sending
from exporter.flow.sending import REMOVED
from exporter.flow.services import Services
from exporter.model.runs import RunRecord, SlotRecord, utcnow


@dataclass(frozen=True, slots=True)
class Removal:
    destination: str
    stopped_runs: list[str]
    """Runs that had not ended: failed now, their unsent batches with them."""
    state_blobs_deleted: int
    run_blobs_deleted: int
    """Batch, removal and pending-state blobs of its runs (contacts); reject reports stay."""
    document_deleted: bool = True
    """False when the document was gone already (a repeat finishing an earlier removal)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "document_deleted": self.document_deleted,
            "stopped_runs": self.stopped_runs,
            "state_blobs_deleted": self.state_blobs_deleted,
            "run_blobs_deleted": self.run_blobs_deleted,
        }


_TABLE_KEY_FORBIDDEN: Final = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
"""Characters Azure Tables refuse in a key: no slot can exist under a key holding one."""


def remove_destination(svc: Services, name: str) -> Removal:
    """Stop every export to the destination at once and forget its synced state.

    The document goes first: from then on the planner refuses its queued requests and the
    workers refuse its batches (`sending.destination_for`). Then its unfinished runs end now
    rather than when their messages next come round (a rate-limit wait or a job check can be
    minutes away): unsettled batches fail, then the run. Then its synced state and its runs'
    contact blobs are deleted, and its slots forget what was synced. The run history (ledger,
    reject reports) stays.

    Safe to repeat, and never half done for good: each step finds its work from what is left
    (the ledger's runs of the destination and their segments, the blobs under its prefixes), so
    removing again after a failure (`RemovalIncomplete`), or after the document alone went,
    finishes the removal. A document that can no longer be read (hand-edited, or written before
    a rule it breaks) is removed all the same. `NotFoundError` only when nothing at all is
    known of the name.
    """
    check_name(name)
    step = "reading the destination"
    try:
        try:
            destination = svc.destinations.get(name)
        except InputError as exc:  # stored, but not readable: removed all the same
            log.warning("destination %s is removed unread: %s", name, exc)
            destination = None
        step = "deleting its document"
        document_deleted = svc.destinations.delete(name)
        step = "looking up its runs"
        storage = svc.storage
        history = svc.ledger.runs(name, limit=1_000_000)
        if not document_deleted and not history and not storage.has_app_blobs(f"state/{name}/"):
            raise NotFoundError(f"no destination {name!r}")
        step = "stopping its unfinished runs"
        stopped = [_stop(svc, run) for run in history if not run.final]
        step = "deleting its synced state"
        state_deleted = storage.delete_app_blobs(f"state/{name}/")
        step = "deleting its runs' contact blobs"
        run_deleted = sum(
            storage.delete_app_blobs(f"runs/{run.run_id}/", keep=run.reject_report)
            for run in history
        )
        step = "resetting its slots"
        segments = [*(destination.segments if destination else ()), *(r.segment for r in history)]
        for segment in dict.fromkeys(segments):
            _forget_slot(svc, name, segment)
    except (AzureError, Unreachable) as exc:
        raise RemovalIncomplete(
            f"removing destination {name!r} stopped while {step} ({type(exc).__name__}: "
            f"{_first_line(str(exc))}): what is done stays done; remove it again to finish"
        ) from None
    event(
        "destination removed",
        destination=name,
        document_deleted=document_deleted,
        stopped_runs=len(stopped),
        state_blobs_deleted=state_deleted,
        run_blobs_deleted=run_deleted,
    )
    return Removal(name, stopped, state_deleted, run_deleted, document_deleted)


def _stop(svc: Services, run: RunRecord) -> str:
    # Batches not settled fail, then the run, saying the destination was removed and how far it
    # got (`sending.stop_run`, which a worker finding the destination gone calls alike); a run
    # with nothing open ends as its batches say. A planner still running finds the run ended
    # and deletes what it wrote.
    if _slot_key_ok(run.destination, run.segment):
        try:
            sending.stop_run(svc, run.run_id, REMOVED)
        except HttpResponseError as exc:
            if exc.status_code != 400:
                raise
        else:
            return run.run_id
    # A segment no Table key can hold (a run of a blob name from before segment names had a
    # rule): it never had a slot, so it never planned, and ending it the usual way would trip
    # over the key again. It ends here; its blobs go with the others' below.
    _end_run(svc, run.run_id, f"{REMOVED}: the export was stopped")
    return run.run_id


def _end_run(svc: Services, run_id: str, reason: str) -> None:
    def change(run: RunRecord) -> bool:
        if run.final:
            return False
        run.state, run.error, run.finished_at = finish.FAILED, reason, utcnow()
        return True

    svc.ledger.update_run(run_id, change)


def _forget_slot(svc: Services, name: str, segment: str) -> None:
    """The slot of the destination and segment forgets what was synced; a slot that does not
    exist is not made. A segment name no Table key can hold has no slot (no run of it could
    take one)."""
    if not _slot_key_ok(name, segment):
        return
    try:
        slot = svc.ledger.get_slot(name, segment)
    except HttpResponseError as exc:
        if exc.status_code == 400:  # a key the Table service refuses: no slot under it
            return
        raise
    if slot.synced_snapshot or slot.synced_time is not None:
        svc.ledger.update_slot(name, segment, _forget_synced)


def _slot_key_ok(name: str, segment: str) -> bool:
    """Whether the Table service can hold the slot key of this destination and segment (no
    character it refuses; well within its 1 KiB)."""
    return bool(segment) and not _TABLE_KEY_FORBIDDEN.search(segment) and len(segment) <= 255


def _forget_synced(slot: SlotRecord) -> bool:
    if not slot.synced_snapshot and slot.synced_time is None:
        return False
    slot.synced_snapshot, slot.synced_time = "", None
    return True


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
