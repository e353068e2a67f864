"""A run's first steps: request (one run per destination x snapshot), CDM folders, planning;
and the poison handlers. Triggers call these, `exporter.flow.sending` (send a batch, follow its job)
and `exporter.flow.verification` (read the list back, heal it); `exporter.flow.finish` ends a run.

Every step is safe to repeat (the Functions host delivers at least once): a run is created once
per (destination, snapshot version, trigger time) and planned once; errors it will have again (a
wrong key, a missing list, a bad file) are recorded where a person reads them, and the step ends;
others propagate, so the host retries the message and, after its `maxDequeueCount`, poisons it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO

from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from exporter.core import cdm, paths
from exporter.core.batching import Batch, BatchLimits
from exporter.core.errors import InputError
from exporter.core.mapping import CustomField
from exporter.core.planning import OverCap, plan
from exporter.core.redact import mask_emails
from exporter.core.reject_report import RejectReport
from exporter.core.snapshots import open_snapshot
from exporter.core.synced_state import Delta, StateFormatError, SyncedState, read_emails
from exporter.flow import finish, removals, sending, slots
from exporter.flow.events import brief, event
from exporter.flow.fields import mapped_custom_fields, resolve_custom_fields
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.messages import (
    CDM_MANIFESTS,
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    POISON_SUFFIX,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ManifestCheck,
    Trigger,
    log_dropped,
    log_handler_failed,
)
from exporter.model.runs import BatchRecord, RunRecord, set_fields, utcnow
from exporter.model.versions import SnapshotVersion, entity_version
from exporter.ports.sendgrid import NotFound, Rejected, TransientError, Unauthorized
from exporter.ports.storage import read_manifest as read_cdm_manifest

log = logging.getLogger("exporter.flow.runs")


# --- requesting runs -------------------------------------------------------------------------


def segment_of(snapshot: str) -> str:
    """`loyal/2026-11-24.csv` belongs to segment `loyal`; a CDM folder's entity
    `ci/BlobExport/model.json#HighValue` to segment `HighValue`."""
    entity = cdm.split_entity_snapshot(snapshot)
    if entity is not None:
        return entity[1]
    return snapshot.split("/", 1)[0]


def make_run_id(destination: str, version: SnapshotVersion, trigger: Trigger, at: datetime) -> str:
    """Readable, time-ordered and deterministic for one delivery of one snapshot version, so a
    redelivered blob event maps onto the run it already made."""
    if trigger == "blob":
        stamp, salt = version.last_modified, ""
    elif trigger == "timer":
        stamp, salt = at, at.isoformat()
    else:
        stamp, salt = at, secrets.token_hex(8)
    digest = hashlib.sha256(
        "|".join((destination, version.name, version.etag, trigger, salt)).encode()
    ).hexdigest()[:12]
    return f"{stamp.astimezone(UTC):%Y%m%dT%H%M%S}-{digest}"


def request_exports(
    svc: Services,
    version: SnapshotVersion,
    trigger: Trigger,
    *,
    at: datetime | None = None,
    only: Iterable[str] | None = None,
    full_refresh: bool = False,
    allow_mass_removal: bool = False,
    verify: bool = False,
) -> list[str]:
    """One run per destination that selected the snapshot's segment; returns their ids."""
    at = at or utcnow()
    wanted = set(only) if only is not None else None
    segment = segment_of(version.name)
    run_ids = []
    for destination in svc.destinations.all():
        if segment not in destination.segments:
            continue
        if wanted is not None and destination.name not in wanted:
            continue
        run_id = make_run_id(destination.name, version, trigger, at)
        full = full_refresh or _full_refresh_due(svc, destination, segment)
        run = RunRecord(
            run_id=run_id,
            destination=destination.name,
            segment=segment,
            snapshot=version.name,
            etag=version.etag,
            trigger=trigger,
            list_id=destination.list_id,
            full_refresh=full,
            snapshot_time=version.last_modified,
        )
        if not svc.ledger.create_run(run):
            existing = svc.ledger.get_run(run_id)
            if existing is None or existing.request_queued:
                continue  # a repeat delivery of a request that is already being handled
        request = ExportRequest(
            run_id=run_id,
            destination=destination.name,
            segment=segment,
            snapshot=version.name,
            etag=version.etag,
            trigger=trigger,
            requested_at=at,
            snapshot_time=version.last_modified,
            full_refresh=full,
            allow_mass_removal=allow_mass_removal,
            verify=verify,
        )
        svc.storage.send(EXPORT_REQUESTS, request)
        svc.ledger.update_run(run_id, lambda r: set_fields(r, request_queued=True))
        run_ids.append(run_id)
        event("run requested", run_id=run_id, destination=destination.name, segment=segment)
    return run_ids


def _full_refresh_due(svc: Services, destination: Destination, segment: str) -> bool:
    """Every `full_refresh_every`-th run of a destination x segment sends every contact."""
    every = destination.full_refresh_every
    if not every:
        return False
    return svc.ledger.get_slot(destination.name, segment).syncs_since_full + 1 >= every


def on_snapshot(svc: Services, version: SnapshotVersion) -> list[str]:
    """A blob arrived (blob trigger): a snapshot file, or a CDM folder's model.json."""
    if cdm.is_manifest(version.name):
        return on_manifest(svc, version)
    problem = paths.name_problem(version.name) or paths.segment_problem(segment_of(version.name))
    if problem:
        # No destination can select such a segment (names follow the segment rule): nothing to
        # run; said in the log, once per blob version, instead of a retry loop.
        log.warning("snapshot %s ignored: %s", paths.shown(mask_emails(version.name)), problem)
        return []
    return request_exports(svc, version, "blob")


def refresh(svc: Services, at: datetime | None = None) -> list[str]:
    """The timer: export the latest snapshot of every selected segment again (a snapshot file,
    or the newest CDM entity of the segment's name: see `Storage.latest_snapshot`)."""
    at = (at or utcnow()).replace(microsecond=0)
    run_ids = []
    for destination in svc.destinations.all():
        if destination.consent is None:
            # Said once a tick in the log, not as a failed run every tick: the destination's
            # snapshots and on-demand exports still fail with the reason where people look.
            log.warning(
                "timer: destination %s has no recorded data-privacy consent: not exported",
                destination.name,
            )
            continue
        for segment in destination.segments:
            version = svc.storage.latest_snapshot(segment)
            if version is not None:
                run_ids += request_exports(svc, version, "timer", at=at, only=[destination.name])
    return run_ids


# --- CDM folders (see exporter.core.cdm) ------------------------------------------------------


def on_manifest(
    svc: Services,
    version: SnapshotVersion,
    *,
    checks: int = 0,
    at: datetime | None = None,
    give_up: str = "",
) -> list[str]:
    """A CDM folder's model.json arrived, or is looked at again. Each entity is a snapshot of
    the segment of its name: one run per destination that selected it, once all of the entity's
    partitions are there. Entities still missing a partition are looked at again later by a
    delayed message (no worker waits, no delivery attempt is spent); `svc.cdm_wait` after the
    model.json was written, or with `give_up` (the reason), each gets a failed run instead.

    Safe to repeat: an entity's run id depends only on the manifest's and partitions' ETags.
    """
    at = at or utcnow()
    try:
        manifest = read_cdm_manifest(svc.storage, version)
    except (ResourceModifiedError, ResourceNotFoundError):
        event("manifest skipped", manifest=version.name, reason="replaced or deleted")
        return []  # a newer version of it has a trigger of its own
    except cdm.ManifestError as exc:
        # No entity can be named, so no segment, so no run to fail: the log is the only place.
        # A wrong input, not a bug: its message says all, a traceback would not help.
        log.error("CDM folder not exported: %s", mask_emails(str(exc)))  # noqa: TRY400
        return []
    for name, reason in manifest.rejected.items():
        _fail_entity(svc, version, name, reason, "rejected")
    run_ids: list[str] = []
    waiting: dict[str, list[str]] = {}
    for entity in manifest.entities:
        found = _look_up_partitions(svc, version, entity)
        if isinstance(found, str):
            _fail_entity(svc, version, entity.name, found, "rejected")
            continue
        present = [v for v in found if v is not None]
        if len(present) < len(found):
            waiting[entity.name] = [
                p.blob for p, v in zip(entity.partitions, found, strict=True) if v is None
            ]
            continue
        snapshot = entity_version(version, entity, present)
        svc.storage.note_cdm_entity(snapshot)
        run_ids += request_exports(svc, snapshot, "blob")
    if not waiting:
        return run_ids
    waited = (at - version.last_modified).total_seconds()
    if give_up or waited >= svc.cdm_wait or checks >= svc.cdm_wait / svc.cdm_recheck + 10:
        for name, missing in waiting.items():
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            reason = give_up or (
                f"partition {missing[0]}{more} listed in {version.name} never arrived: still "
                f"missing {waited / 60:.0f} minutes after model.json was written, so entity "
                f"{name!r} was not exported"
            )
            _fail_entity(svc, version, name, reason, "incomplete")
        return run_ids
    check = ManifestCheck(
        manifest=version.name,
        etag=version.etag,
        written_at=version.last_modified,
        size=version.size,
        checks=checks + 1,
    )
    svc.storage.send(CDM_MANIFESTS, check, delay=svc.cdm_recheck)
    event("manifest waiting", manifest=version.name, entities=len(waiting), check=check.checks)
    return run_ids


_REFUSED_LOOKUPS = (400, 403, 414)
"""Storage's answers to a partition's HEAD that will not change on a retry (a name storage will
not take, a path it refuses): that entity fails, the others go on."""


def _look_up_partitions(
    svc: Services, manifest: SnapshotVersion, entity: cdm.Entity
) -> list[SnapshotVersion | None] | str:
    """Each partition's current version (None: not there yet), or why the entity cannot be
    exported when storage refuses to look one up. Partition names were checked when model.json
    was parsed (`cdm`: inside the folder, nothing that leaves the container); this keeps one
    entity's unexpected refusal from holding up the others (and the whole model.json in a retry
    loop). Other errors (storage unreachable) propagate: the host retries."""
    found: list[SnapshotVersion | None] = []
    for partition in entity.partitions:
        try:
            found.append(svc.storage.snapshot_version(partition.blob))
        except HttpResponseError as exc:
            if exc.status_code not in _REFUSED_LOOKUPS:
                raise
            return (
                f"entity {entity.name!r} of {manifest.name}: partition "
                f"{paths.shown(partition.name, 100)} ({paths.shown(partition.blob, 200)}) could "
                f"not be looked up: storage answered {exc.status_code} ({brief(exc)[:300]})"
            )
    return found


def check_manifest(
    svc: Services, message: ManifestCheck, *, at: datetime | None = None
) -> list[str]:
    """The delayed look at a CDM folder that was waiting for partitions (queue cdm-manifests)."""
    version = SnapshotVersion(message.manifest, message.etag, message.written_at, message.size)
    return on_manifest(svc, version, checks=message.checks, at=at)


def manifest_poisoned(svc: Services, message: ManifestCheck) -> None:
    """Every attempt to look at a CDM folder failed: export what is complete, and end the
    entities still waiting with a run that says so (never a silent drop). Never raises: a
    model.json that is gone or replaced is logged and dropped; a failure is logged."""
    queue = CDM_MANIFESTS + POISON_SUFFIX
    try:
        version = SnapshotVersion(message.manifest, message.etag, message.written_at, message.size)
        reason = (
            f"{message.manifest} could not be checked on any attempt (the host's logs say "
            "why), so this entity was not exported; upload the folder's model.json again "
            "to retry"
        )
        on_manifest(svc, version, checks=message.checks, give_up=reason)
    except Exception as exc:
        log_handler_failed(queue, exc, message.encode())


def _fail_entity(
    svc: Services, manifest: SnapshotVersion, entity: str, reason: str, outcome: str
) -> None:
    """A failed run for every destination that selected this entity, where people look for
    runs. Once per manifest version and outcome: a repeated look finds the run ended."""
    snapshot = SnapshotVersion(
        cdm.entity_snapshot(manifest.name, entity),
        f"{manifest.etag};{outcome}",
        manifest.last_modified,
        0,
    )
    named = entity if paths.valid_segment(entity) else paths.shown(entity, 80)
    event("entity not exported", manifest=manifest.name, entity=named, reason=reason)
    for destination in svc.destinations.all():
        if entity not in destination.segments:
            continue
        run_id = make_run_id(destination.name, snapshot, "blob", manifest.last_modified)
        run = RunRecord(
            run_id=run_id,
            destination=destination.name,
            segment=entity,
            snapshot=snapshot.name,
            etag=snapshot.etag,
            trigger="blob",
            list_id=destination.list_id,
            snapshot_time=snapshot.last_modified,
        )
        if not svc.ledger.create_run(run):
            existing = svc.ledger.get_run(run_id)
            if existing is None or existing.final:
                continue
        finish.fail_run(svc, run_id, reason)


# --- planning ------------------------------------------------------------------------------


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
        svc.storage.send(EXPORT_REQUESTS, request, delay=slots.SLOT_WAIT)
        return
    if blocked:
        finish.fail_run(svc, request.run_id, blocked, state="skipped")
        return
    svc.ledger.update_run(request.run_id, lambda r: set_fields(r, state="planning"))
    try:
        _plan(svc, request, destination)
    except TransientError as exc:
        # SendGrid (the list check, the custom fields) failed or asked to wait: plan again
        # later, as a batch would be sent again; nothing was sent yet.
        svc.storage.delete_run_blobs(request.run_id)

        def note(reason: str) -> None:
            why = f"planning attempt failed: {reason}"
            svc.ledger.update_run(request.run_id, lambda r: set_fields(r, error=why))

        def fail(reason: str) -> None:
            finish.fail_run(svc, request.run_id, f"planning failed: {reason}")

        sending.again(svc, EXPORT_REQUESTS, request, exc, fail=fail, note=note)
    except (InputError, Unauthorized, Rejected) as exc:
        svc.storage.delete_run_blobs(request.run_id)
        finish.fail_run(svc, request.run_id, str(exc))
    except (ResourceModifiedError, ResourceNotFoundError):
        svc.storage.delete_run_blobs(request.run_id)
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


def _old_state(svc: Services, destination: str, segment: str, list_id: str) -> SyncedState:
    data = svc.storage.read_state(destination, segment, list_id)
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
    old = _old_state(svc, destination.name, request.segment, destination.list_id)
    delta = Delta(old, full_refresh=request.full_refresh)
    version = SnapshotVersion(request.snapshot, request.etag, request.requested_at, 0)
    records: list[BatchRecord] = []

    def on_batch(batch: Batch) -> None:
        svc.storage.write_batch(run_id, batch.index, batch.contacts_json())
        records.append(BatchRecord(run_id, batch.index, len(batch.contacts), batch.body_bytes))

    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
        report = RejectReport(_TextSink(spool))
        with open_snapshot(
            svc.storage.open_snapshot(version),
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
        report_name = svc.storage.write_report(run_id, spool) if stats.rejected else ""

    leavers = 0
    if destination.sync_mode == "mirror":
        leavers = _plan_removals(
            svc, request, destination, delta=delta, valid=stats.valid, records=records
        )
    svc.ledger.put_batches(run_id, records)
    members = svc.storage.write_pending_state(run_id, delta)
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
    emails = svc.storage.state_emails(destination.name, request.segment, destination.list_id)
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


# --- poison messages -------------------------------------------------------------------------


def request_poisoned(svc: Services, request: ExportRequest) -> None:
    """Every attempt to plan the run failed: it ends `failed` with the last error. Never raises:
    a request naming a run that does not exist is logged and dropped."""
    queue = EXPORT_REQUESTS + POISON_SUFFIX
    try:
        run = svc.ledger.get_run(request.run_id)
        if run is None:
            log_dropped(queue, f"run {request.run_id} does not exist", request.encode())
            return
        last = run.error or "no error was recorded"
        finish.fail_run(svc, request.run_id, f"planning failed on every attempt; the last: {last}")
    except Exception as exc:
        log_handler_failed(queue, exc, request.encode())


def batch_poisoned(svc: Services, message: BatchMessage) -> None:
    """Every attempt to send a batch failed: the batch fails with the last error (and the run
    settles). Never raises: a message naming a batch that does not exist is logged and dropped."""
    _fail_poisoned_batch(
        svc, CONTACT_BATCHES + POISON_SUFFIX, message, "sending failed on every attempt"
    )


def job_poisoned(svc: Services, message: JobCheck) -> None:
    """Every attempt to check a batch's import job failed: the batch fails with the last error.
    Never raises: a message naming a batch that does not exist is logged and dropped."""
    _fail_poisoned_batch(
        svc,
        IMPORT_JOBS + POISON_SUFFIX,
        message,
        "the import job could not be checked on any attempt",
    )


def _fail_poisoned_batch(
    svc: Services, queue: str, message: BatchMessage | JobCheck, what: str
) -> None:
    try:
        batch = svc.ledger.get_batch(message.run_id, message.batch)
        if batch is None:
            run = svc.ledger.get_run(message.run_id)
            why = (
                f"run {message.run_id} does not exist"
                if run is None
                else f"run {message.run_id} has no batch {message.batch}"
            )
            log_dropped(queue, why, message.encode())
            return
        last = batch.error or "no error was recorded"
        sending.fail_batch(svc, message.run_id, message.batch, f"{what}; the last: {last}")
    except Exception as exc:
        log_handler_failed(queue, exc, message.encode())
