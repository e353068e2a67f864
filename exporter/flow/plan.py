"""Planning a run (queue export-requests): stream exactly the requested snapshot version through
the core into batch blobs and a reject report, against the synced state of destination x
segment x list (only new and changed contacts are sent; in mirror mode the members who left
become removal batches); then queue one message per batch (`exporter.flow.sending`).

Safe to repeat (the Functions host delivers at least once): a run is planned once; errors it
will have again (a wrong key, a missing list, a bad file) are recorded where a person reads
them, and the step ends; others propagate, so the host retries the message and, after its
`maxDequeueCount`, poisons it (`exporter.flow.poison`).
"""

from __future__ import annotations

import logging
import tempfile
from typing import IO

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter.core.batching import Batch, BatchLimits
from exporter.core.errors import InputError
from exporter.core.mapping import CustomField
from exporter.core.planning import OverCap, plan
from exporter.core.reject_report import RejectReport
from exporter.core.snapshots.snapshot import open_snapshot
from exporter.core.synced_state.delta import Delta
from exporter.core.synced_state.state import StateFormatError, SyncedState, read_emails
from exporter.flow import finish, removals, sending, slots
from exporter.flow.events import brief, event
from exporter.flow.fields import mapped_custom_fields, resolve_custom_fields
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.messages import EXPORT_REQUESTS, ExportRequest
from exporter.model.runs import BatchRecord, RunRecord, set_fields
from exporter.model.versions import SnapshotVersion
from exporter.ports.sendgrid import NotFound, Rejected, TransientError, Unauthorized
from exporter.ports.storage import SyncedStates

log = logging.getLogger("exporter.flow.runs")


def _custom_fields(svc: Services, destination: Destination) -> dict[str, CustomField]:
    """The mapping's custom fields resolved (created, if the destination allows) by
    `fields.resolve_custom_fields`; without any, no key is looked up and SendGrid is not asked."""
    if not mapped_custom_fields(destination):
        return {}
    return resolve_custom_fields(svc.sendgrid(destination), destination)


def plan_run(svc: Services, request: ExportRequest) -> None:
    """Stream the snapshot into batch blobs and a reject report; queue one message per batch."""
    run = svc.ledger.get_run(request.run_id)
    if run is None or run.final:
        return
    if run.planned or run.state in ("sending", "confirming", "verifying"):
        if run.state in ("sending", "confirming") and not run.batches_queued:
            sending.queue_batches(svc, request.run_id)  # the planner died while queueing them
        elif run.state == "sending" and not run.batches:
            finish.settle(svc, request.run_id)  # nothing to send, and it died before settling
        return  # planned already (a repeat delivery)
    destination = svc.destinations.get(request.destination)
    if destination is None:
        finish.fail_run(svc, request.run_id, "the destination was removed before the run started")
        return
    if destination.consent is None:
        finish.fail_run(
            svc,
            request.run_id,
            f"no data-privacy consent is recorded for destination {destination.name!r}: "
            "nothing was sent; record who accepted the terms and when, then export again",
        )
        return
    blocked = slots.take(svc, request)
    if blocked == "wait":  # an older snapshot of this segment is being exported: after it
        svc.queues.send(EXPORT_REQUESTS, request, delay=slots.SLOT_WAIT)
        return
    if blocked:
        finish.fail_run(svc, request.run_id, blocked, state="skipped")
        return
    svc.ledger.update_run(request.run_id, lambda r: set_fields(r, state="planning"))
    try:
        _plan_unless_ended(svc, request, destination)
    except TransientError as exc:
        # SendGrid (the list check, the custom fields) failed or asked to wait: plan again
        # later, as a batch would be sent again; nothing was sent yet.
        svc.run_files.delete_run_blobs(request.run_id)

        def note(reason: str) -> None:
            why = f"planning attempt failed: {reason}"
            svc.ledger.update_run(request.run_id, lambda r: set_fields(r, error=why))

        def fail(reason: str) -> None:
            finish.fail_run(svc, request.run_id, f"planning failed: {reason}")

        sending.again(svc, EXPORT_REQUESTS, request, exc, fail=fail, note=note)
    except (InputError, Unauthorized, Rejected) as exc:
        svc.run_files.delete_run_blobs(request.run_id)
        finish.fail_run(svc, request.run_id, str(exc))
    except (ResourceModifiedError, ResourceNotFoundError):
        svc.run_files.delete_run_blobs(request.run_id)
        finish.fail_run(
            svc,
            request.run_id,
            "the snapshot was replaced or deleted before it could be read; "
            "a newer version is exported by its own run",
            state="skipped",
        )
    except Exception as exc:
        # Recorded for the poison handler, then retried by the host.
        reason = f"planning attempt failed: {brief(exc)}"
        svc.ledger.update_run(request.run_id, lambda r: set_fields(r, error=reason))
        raise


def _plan_unless_ended(svc: Services, request: ExportRequest, destination: Destination) -> None:
    try:
        _plan(svc, request, destination)
    except Exception as exc:
        if _ended_meanwhile(svc, request.run_id, exc):
            return  # stopped while planning (its destination removed): what failed was that
        raise


def _ended_meanwhile(svc: Services, run_id: str, exc: Exception | None = None) -> bool:
    """Whether the run ended while it was being planned (its destination removed, say): then
    whatever it wrote is deleted (the removal deleted the run's blobs before some were written),
    batch records it left open fail, and the step ends quietly (one event line)."""
    try:
        run = svc.ledger.get_run(run_id)
    except Exception:
        if exc is None:
            raise
        return False  # storage is failing: the original error stands
    if run is not None and not run.final:
        return False
    svc.run_files.delete_run_blobs(run_id)
    for batch in svc.ledger.batches(run_id):
        if not batch.settled:
            svc.ledger.update_batch(run_id, batch.index, _not_sent)
    event(
        "planning stopped",
        run_id=run_id,
        reason="the run ended while it was planned",
        error=type(exc).__name__ if exc is not None else "",
    )
    return True


def _not_sent(batch: BatchRecord) -> bool:
    if batch.settled:
        return False
    batch.state, batch.error = "failed", "the run ended while it was planned: not sent"
    return True


def _old_state(states: SyncedStates, destination: str, segment: str, list_id: str) -> SyncedState:
    data = states.read_state(destination, segment, list_id)
    if data is None:
        return SyncedState.empty()
    try:
        return SyncedState.read_index(data)
    except StateFormatError as exc:
        log.warning("state of %s/%s unreadable (%s): sending everyone", destination, segment, exc)
        return SyncedState.empty()


def _check_list(svc: Services, destination: Destination) -> None:
    """Nothing is read or sent for a list SendGrid no longer has."""
    try:
        svc.sendgrid(destination).get_list(destination.list_id)
    except NotFound:
        reason = finish.list_gone(destination.name, destination.list_id)
        raise InputError(f"{reason}. Nothing was sent") from None


def _plan(svc: Services, request: ExportRequest, destination: Destination) -> None:
    run_id = request.run_id
    _check_list(svc, destination)
    custom_fields = _custom_fields(svc, destination)
    old = _old_state(svc.synced_states, destination.name, request.segment, destination.list_id)
    delta = Delta(old, full_refresh=request.full_refresh)
    version = SnapshotVersion(request.snapshot, request.etag, request.requested_at, 0)
    records: list[BatchRecord] = []

    def on_batch(batch: Batch) -> None:
        svc.batch_blobs.write_batch(run_id, batch.index, batch.contacts_json())
        records.append(BatchRecord(run_id, batch.index, len(batch.contacts), batch.body_bytes))

    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
        report = RejectReport(_TextSink(spool))
        with open_snapshot(
            svc.snapshots.open_snapshot(version),
            name=request.snapshot,
            mapping=destination.field_mapping(),
        ) as snapshot:
            delta.fields = tuple(f.name for f in snapshot.mapping.fields[1:])
            try:
                stats = plan(
                    snapshot,
                    on_batch=on_batch,
                    on_reject=report,
                    custom_fields=custom_fields,
                    limits=BatchLimits(
                        max_contacts=svc.max_batch_contacts, list_ids=(destination.list_id,)
                    ),
                    delta=delta,
                    max_valid=destination.profile_cap,
                )
            except OverCap as exc:
                raise InputError(
                    f"{exc}, over the cap of {destination.profile_cap:,} set on destination "
                    f"{destination.name!r}: nothing was exported; raise the destination's "
                    "profile_cap to export it"
                ) from None
        report_name = svc.report_blobs.write_report(run_id, spool) if stats.rejected else ""

    leavers = 0
    if destination.sync_mode == "mirror":
        leavers = _plan_removals(
            svc, request, destination, delta=delta, valid=stats.valid, records=records
        )
    if _ended_meanwhile(svc, run_id):
        return
    svc.ledger.put_batches(run_id, records)
    members = svc.pending_states.write_pending_state(run_id, delta)
    slot = svc.ledger.get_slot(destination.name, request.segment)
    verify = (
        request.verify
        or request.full_refresh
        or destination.verifies(members, slot.syncs_since_verify)
    )

    def planned(run: RunRecord) -> bool:
        if run.final:
            return False  # ended while planning (its destination was removed, say)
        run.planned = True
        run.verify = verify
        if not verify:
            run.verify_note = (
                f"not verified this run: segments over {destination.verify_up_to:,} members "
                + (
                    f"are read back every {destination.verify_every} runs"
                    if destination.verify_every
                    else "are read back only when asked (--verify)"
                )
            )
        run.list_id = destination.list_id
        run.rows, run.valid, run.rejected = stats.rows, stats.valid, stats.rejected
        run.unchanged, run.members, run.leavers = stats.unchanged, members, leavers
        run.sync_mode = destination.sync_mode
        run.sent = sum(r.contacts for r in records if r.kind == "upsert")
        run.duplicates, run.blank = stats.duplicates, stats.blank
        run.warnings = sum(stats.warnings.values())
        run.batches, run.body_bytes = len(records), stats.body_bytes
        run.reasons, run.warning_kinds = dict(stats.reasons), dict(stats.warnings)
        run.reject_report = report_name
        run.error = ""
        run.state = "sending"
        return True

    if svc.ledger.update_run(run_id, planned).final:
        _ended_meanwhile(svc, run_id)
        return
    if records:
        sending.queue_batches(svc, run_id)
    else:
        finish.settle(svc, run_id)  # nothing to send: read the list back, or end the run
    event(
        "run planned",
        run_id=run_id,
        destination=destination.name,
        segment=request.segment,
        rows=stats.rows,
        valid=stats.valid,
        rejected=stats.rejected,
        duplicates=stats.duplicates,
        unchanged=stats.unchanged,
        batches=stats.batches,
    )


def _plan_removals(
    svc: Services,
    request: ExportRequest,
    destination: Destination,
    *,
    delta: Delta,
    valid: int,
    records: list[BatchRecord],
) -> int:
    """Mirror mode: removal batches for the members who left the segment (after the guard)."""
    held = len(delta.old)
    leaving = held - delta.old.seen.count(1)
    if not leaving:
        return 0
    share = leaving / held
    too_many = share > destination.max_removal_share or valid == 0
    if too_many and not request.allow_mass_removal:
        raise InputError(
            f"this snapshot would remove {leaving:,} of the {held:,} contacts that "
            f"destination {destination.name!r} holds from segment {request.segment!r} "
            f"({share:.0%}; allowed: {destination.max_removal_share:.0%}"
            + (", and it would empty the list" if valid == 0 else "")
            + "): nothing was sent. If the segment really shrank, export again allowing "
            "mass removal"
        )
    emails = svc.synced_states.state_emails(destination.name, request.segment, destination.list_id)
    leavers = read_emails(emails, delta.old.left())
    records += removals.removal_batches(svc, request.run_id, len(records), leavers)
    return leaving


class _TextSink:
    """A text stream over a binary spool (the reject report is CSV text, stored as UTF-8)."""

    def __init__(self, binary: IO[bytes]) -> None:
        self._binary = binary

    def write(self, text: str) -> int:
        self._binary.write(text.encode("utf-8"))
        return len(text)
