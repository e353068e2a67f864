"""The flow of a run: request, plan, send, confirm, finalise. Triggers call these and nothing else.

Every step is safe to repeat (the Functions host delivers at least once): a run is created once
per (destination, snapshot version, trigger time), a batch is sent only from `queued`, a job is
recorded only until its batch settles, and a run is finalised only once. Errors the next attempt
may not have (5xx, timeouts) propagate so the host retries; errors it will have again (a wrong
key, a rejected batch, a bad file) are recorded where a person reads them, and the step ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter import cdm
from exporter.batching import MAX_CONTACTS, Batch, BatchLimits
from exporter.destinations import BlobDestinationStore, Destination, DestinationStore
from exporter.errors import InputError
from exporter.fields import mapped_custom_fields, resolve_custom_fields
from exporter.ledger import (
    BatchRecord,
    RunLedger,
    RunRecord,
    SlotRecord,
    TableRunLedger,
    totals,
    utcnow,
)
from exporter.mapping import CustomField
from exporter.messages import (
    CDM_MANIFESTS,
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ManifestCheck,
    Trigger,
)
from exporter.planning import plan
from exporter.redact import mask_emails
from exporter.reports import RejectReport
from exporter.secrets import SecretProvider, secret_provider
from exporter.sendgrid import (
    NotFound,
    RateLimited,
    Rejected,
    SendGridClient,
    SendGridError,
    TransientError,
    Unauthorized,
)
from exporter.settings import SendGridSettings
from exporter.snapshots import open_snapshot
from exporter.state import Delta, StateFormatError, SyncedState, email_key, read_emails
from exporter.storage import RunStorage, SnapshotVersion, Storage, entity_version
from exporter.storage import read_manifest as read_cdm_manifest

log = logging.getLogger("exporter.runs")

FIRST_JOB_CHECK: Final = 1.0
"""Seconds before the first look at an import job (SendGrid rarely settles one sooner)."""
MAX_JOB_CHECK_DELAY: Final = 60.0
MAX_JOB_CHECKS: Final = 200
"""About 3 hours of checking (most checks a minute apart) before a job counts as lost."""
MAX_DEFERRALS: Final = 100
"""How often a batch may be put back for a rate limit before its run is told."""


@dataclass
class Services:
    """What the flow needs from the outside world; built once per process from app settings."""

    storage: RunStorage
    ledger: RunLedger
    destinations: DestinationStore
    secrets: SecretProvider
    sendgrid_settings: SendGridSettings = field(default_factory=SendGridSettings)
    max_batch_contacts: int = MAX_CONTACTS
    """Contacts per upsert request (setting MAX_BATCH_CONTACTS): SendGrid's 30,000 by default;
    smaller batches narrow what one rejected request holds up."""
    cdm_recheck: float = 30.0
    """Seconds between looks at a CDM folder whose model.json arrived before all of its
    partitions (setting CDM_RECHECK_SECONDS)."""
    cdm_wait: float = 1800.0
    """How long after its model.json was written a CDM folder may wait for its partitions
    (setting CDM_WAIT_SECONDS); then its entities' runs fail, naming what never arrived."""
    _clients: dict[str, tuple[str, SendGridClient]] = field(default_factory=dict, repr=False)
    """Per API-key secret name: (the key's SHA-256, the client made with it)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Services:
        """From app settings (the environment by default), creating containers and queues."""
        env = os.environ if env is None else env
        storage = Storage.from_env(env)
        storage.ensure()
        return cls(
            storage=storage,
            ledger=TableRunLedger(storage.tables),
            destinations=BlobDestinationStore(storage.app),
            secrets=secret_provider(env),
            sendgrid_settings=SendGridSettings.from_env(env),
            max_batch_contacts=_batch_size(env.get("MAX_BATCH_CONTACTS")),
            cdm_recheck=_seconds(env, "CDM_RECHECK_SECONDS", 30.0),
            cdm_wait=_seconds(env, "CDM_WAIT_SECONDS", 1800.0),
        )

    def sendgrid(self, destination: Destination) -> SendGridClient:
        """The client for a destination's key, resolved now: when the key behind the secret
        changes (rotation), a new client replaces the old one, so no client outlives its key."""
        name = destination.api_key_secret
        key = self.secrets.get(name)
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            cached = self._clients.get(name)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            # The old key's client releases its idle connections; a batch another thread is
            # still sending with it finishes (a closed client still works, on new connections).
            if cached is not None:
                cached[1].close()
            client = SendGridClient(key, self.sendgrid_settings)
            self._clients[name] = (fingerprint, client)
            return client


def _batch_size(value: str | None) -> int:
    if not value:
        return MAX_CONTACTS
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_CONTACTS:
        raise InputError(f"MAX_BATCH_CONTACTS must be a whole number from 1 to {MAX_CONTACTS:,}")
    return size


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not 0 < seconds <= 7 * 24 * 3600:
        raise InputError(f"{name} must be a number of seconds, more than 0 and at most 7 days")
    return seconds


def _event(event: str, **fields: object) -> None:
    """One structured log line; callers pass ids and counts, never addresses or keys."""
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.info("%s %s", event, mask_emails(text))


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
        )
        svc.storage.send(EXPORT_REQUESTS, request)
        svc.ledger.update_run(run_id, lambda r: _set(r, request_queued=True))
        run_ids.append(run_id)
        _event("run requested", run_id=run_id, destination=destination.name, segment=segment)
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


# --- CDM folders (see exporter.cdm) -----------------------------------------------------------


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
        _event("manifest skipped", manifest=version.name, reason="replaced or deleted")
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
        found = [svc.storage.snapshot_version(p.blob) for p in entity.partitions]
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
    _event("manifest waiting", manifest=version.name, entities=len(waiting), check=check.checks)
    return run_ids


def check_manifest(
    svc: Services, message: ManifestCheck, *, at: datetime | None = None
) -> list[str]:
    """The delayed look at a CDM folder that was waiting for partitions (queue cdm-manifests)."""
    version = SnapshotVersion(message.manifest, message.etag, message.written_at, message.size)
    return on_manifest(svc, version, checks=message.checks, at=at)


def manifest_poisoned(svc: Services, message: ManifestCheck) -> None:
    """Every attempt to look at a CDM folder failed: export what is complete, and end the
    entities still waiting with a run that says so (never a silent drop)."""
    version = SnapshotVersion(message.manifest, message.etag, message.written_at, message.size)
    reason = (
        f"{message.manifest} could not be checked on any attempt (the host's logs say why), so "
        "this entity was not exported; upload the folder's model.json again to retry"
    )
    on_manifest(svc, version, checks=message.checks, give_up=reason)


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
    _event("entity not exported", manifest=manifest.name, entity=entity, reason=reason)
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
        fail_run(svc, run_id, reason)


# --- planning ------------------------------------------------------------------------------


SLOT_WAIT: Final = 15.0
"""Seconds before a run waiting for an older run of its segment looks again."""
STALE_HOLDER: Final = timedelta(hours=3)
"""A holder of a slot that has not moved for this long is taken to be dead."""


def _order(when: datetime | None, name: str) -> tuple[datetime, str]:
    """Snapshots of a segment in the order they were written. Blob times have one-second
    resolution, so a tie goes to the later name (exports name their files by time)."""
    return (when or datetime.min.replace(tzinfo=UTC), name)


def _take_slot(svc: Services, request: ExportRequest) -> str | None:
    """Take the destination x segment slot: None when taken; `wait`; or why to skip."""
    ours = _order(request.snapshot_time, request.snapshot)
    outcome: list[str] = []

    def take(slot: SlotRecord) -> bool:
        outcome.clear()
        if slot.run_id == request.run_id:
            return False  # ours already (a repeat delivery)
        if slot.synced_time and ours < _order(slot.synced_time, slot.synced_snapshot):
            outcome.append(
                "a newer snapshot of this segment was already exported to this destination"
            )
            return False
        if slot.run_id:
            holder = svc.ledger.get_run(slot.run_id)
            if holder and not holder.final and utcnow() - holder.updated_at < STALE_HOLDER:
                if _order(holder.snapshot_time, holder.snapshot) > ours:
                    outcome.append(
                        "a newer snapshot of this segment is being exported to this destination"
                    )
                else:
                    outcome.append("wait")
                return False
        slot.run_id, slot.snapshot = request.run_id, request.snapshot
        slot.snapshot_time = request.snapshot_time
        return True

    svc.ledger.update_slot(request.destination, request.segment, take)
    return outcome[0] if outcome else None


def _release_slot(svc: Services, run: RunRecord) -> None:
    """Give back the slot when a run ends; a committed run moves the 'exported up to' mark."""

    def give(slot: SlotRecord) -> bool:
        changed = False
        if slot.run_id == run.run_id:
            slot.run_id, changed = "", True
        # The timer exports the same snapshot again: that moves the mark too (and counts).
        not_older = slot.synced_time is None or _order(run.snapshot_time, run.snapshot) >= _order(
            slot.synced_time, slot.synced_snapshot
        )
        counted = slot.synced_run == run.run_id
        if run.state_committed and run.snapshot_time and not_older and not counted:
            slot.synced_time, slot.synced_snapshot = run.snapshot_time, run.snapshot
            slot.synced_run = run.run_id
            # A run that skipped nobody as unchanged (a full refresh, or the first) sent all.
            sent_all = run.full_refresh or run.unchanged == 0
            slot.syncs_since_full = 0 if sent_all else slot.syncs_since_full + 1
            changed = True
        return changed

    svc.ledger.update_slot(run.destination, run.segment, give)


def fail_run(svc: Services, run_id: str, reason: str, *, state: str = "failed") -> RunRecord:
    """End a run that cannot go on, saying why (unless it already ended)."""

    def change(run: RunRecord) -> bool:
        if run.final:
            return False
        run.state = state
        run.error = mask_emails(reason)
        run.finished_at = utcnow()
        return True

    run = svc.ledger.update_run(run_id, change)
    _release_slot(svc, run)
    _event("run ended", run_id=run_id, state=run.state, reason=reason)
    return run


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
    if run.state in ("sending", "confirming"):
        if not run.batches_queued:  # the planner died while queueing its batches
            _queue_batches(svc, request.run_id)
        return  # planned already (a repeat delivery)
    destination = svc.destinations.get(request.destination)
    if destination is None:
        fail_run(svc, request.run_id, "the destination was removed before the run started")
        return
    if destination.consent is None:
        fail_run(
            svc,
            request.run_id,
            f"no data-privacy consent is recorded for destination {destination.name!r}: "
            "nothing was sent; record who accepted the terms and when, then export again",
        )
        return
    blocked = _take_slot(svc, request)
    if blocked == "wait":  # an older snapshot of this segment is being exported: after it
        svc.storage.send(EXPORT_REQUESTS, request, delay=SLOT_WAIT)
        return
    if blocked:
        fail_run(svc, request.run_id, blocked, state="skipped")
        return
    svc.ledger.update_run(request.run_id, lambda r: _set(r, state="planning"))
    try:
        _plan(svc, request, destination)
    except (InputError, Unauthorized, Rejected) as exc:
        svc.storage.delete_run_blobs(request.run_id)
        fail_run(svc, request.run_id, str(exc))
    except (ResourceModifiedError, ResourceNotFoundError):
        svc.storage.delete_run_blobs(request.run_id)
        fail_run(
            svc,
            request.run_id,
            "the snapshot was replaced or deleted before it could be read; "
            "a newer version is exported by its own run",
            state="skipped",
        )
    except Exception as exc:
        # Recorded for the poison handler, then retried by the host.
        reason = f"planning attempt failed: {_brief(exc)}"
        svc.ledger.update_run(request.run_id, lambda r: _set(r, error=reason))
        raise


def _old_state(svc: Services, destination: str, segment: str) -> SyncedState:
    data = svc.storage.read_state(destination, segment)
    if data is None:
        return SyncedState.empty()
    try:
        return SyncedState.read_index(data)
    except StateFormatError as exc:
        log.warning("state of %s/%s unreadable (%s): sending everyone", destination, segment, exc)
        return SyncedState.empty()


def _plan(svc: Services, request: ExportRequest, destination: Destination) -> None:
    run_id = request.run_id
    custom_fields = _custom_fields(svc, destination)
    delta = Delta(
        _old_state(svc, destination.name, request.segment), full_refresh=request.full_refresh
    )
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
            stats = plan(
                snapshot,
                on_batch=on_batch,
                on_reject=report,
                custom_fields=custom_fields,
                limits=BatchLimits(
                    max_contacts=svc.max_batch_contacts, list_ids=(destination.list_id,)
                ),
                delta=delta,
            )
        if stats.valid > destination.profile_cap:
            raise InputError(
                f"the segment has {stats.valid:,} valid profiles, over the cap of "
                f"{destination.profile_cap:,} set on destination {destination.name!r}: nothing "
                "was exported; raise the destination's profile_cap to export it"
            )
        report_name = svc.storage.write_report(run_id, spool) if stats.rejected else ""

    leavers = 0
    if destination.sync_mode == "mirror":
        leavers = _plan_removals(
            svc, request, destination, delta=delta, valid=stats.valid, records=records
        )
    svc.ledger.put_batches(run_id, records)
    members = svc.storage.write_pending_state(run_id, delta)

    def planned(run: RunRecord) -> bool:
        if run.final:
            return False  # ended while planning (its destination was removed, say)
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
        _queue_batches(svc, run_id)
    else:
        finalise(svc, run_id)  # nothing to send: check the list, commit, end the run
    _event(
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


REMOVAL_BATCH: Final = 1000
"""Emails per removal batch: 10 searches and 10 removals of 100 each."""


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
    leavers = read_emails(
        svc.storage.state_emails(destination.name, request.segment), delta.old.left()
    )
    index = len(records)
    chunk: list[str] = []
    for email in leavers:
        chunk.append(email)
        if len(chunk) == REMOVAL_BATCH:
            index = _removal_batch(svc, request.run_id, index, chunk, records)
            chunk = []
    if chunk:
        _removal_batch(svc, request.run_id, index, chunk, records)
    return leaving


def _removal_batch(
    svc: Services, run_id: str, index: int, emails: list[str], records: list[BatchRecord]
) -> int:
    svc.storage.write_removals(run_id, index, emails)
    records.append(BatchRecord(run_id, index, len(emails), 0, kind="remove"))
    return index + 1


def _queue_batches(svc: Services, run_id: str) -> None:
    """One message per batch not yet sent; then note that all are queued."""
    for batch in svc.ledger.batches(run_id):
        if batch.state == "queued":
            svc.storage.send(CONTACT_BATCHES, BatchMessage(run_id=run_id, batch=batch.index))
    svc.ledger.update_run(run_id, lambda r: _set(r, batches_queued=True))


class _TextSink:
    """A text stream over a binary spool (the reject report is CSV text, stored as UTF-8)."""

    def __init__(self, binary: IO[bytes]) -> None:
        self._binary = binary

    def write(self, text: str) -> int:
        self._binary.write(text.encode("utf-8"))
        return len(text)


# --- sending and confirming ------------------------------------------------------------------


def _set(record: Any, **values: Any) -> bool:
    for key, value in values.items():
        setattr(record, key, value)
    return True


def _brief(exc: BaseException) -> str:
    return mask_emails(f"{type(exc).__name__}: {exc}")[:2000]


def _fail_batch(svc: Services, run_id: str, index: int, reason: str) -> None:
    def change(batch: BatchRecord) -> bool:
        if batch.settled:
            return False
        batch.state = "failed"
        batch.error = mask_emails(reason)
        return True

    svc.ledger.update_batch(run_id, index, change)
    _event("batch failed", run_id=run_id, batch=index, reason=reason)
    finalise(svc, run_id)


def _destination_for(svc: Services, run: RunRecord) -> Destination | str:
    destination = svc.destinations.get(run.destination)
    if destination is None:
        return "the destination was removed: the batch was not sent"
    if destination.consent is None:
        return "the destination's data-privacy consent was withdrawn: the batch was not sent"
    return destination


def send_batch(svc: Services, message: BatchMessage) -> None:
    """Upsert one batch into the run's list; queue the first look at its import job."""
    run_id, index = message.run_id, message.batch
    batch = svc.ledger.get_batch(run_id, index)
    run = svc.ledger.get_run(run_id)
    if batch is None or run is None:
        return  # its run is gone
    if batch.state == "accepted":
        # Sent already. The first delivery may have died before queueing the job check: queue
        # one (a second check of the same job is harmless; a missing one would hang the run).
        svc.storage.send(IMPORT_JOBS, JobCheck(run_id=run_id, batch=index, job_id=batch.job_id))
        return
    if batch.state != "queued":
        return  # settled
    destination = _destination_for(svc, run)
    if isinstance(destination, str):
        _fail_batch(svc, run_id, index, destination)
        return
    try:
        client = svc.sendgrid(destination)
        if batch.kind == "remove":
            removed = _remove(client, run.list_id, svc.storage.read_removals(run_id, index))
        else:
            job_id = client.upsert([run.list_id], svc.storage.open_batch(run_id, index))
    except RateLimited as exc:
        if message.deferrals >= MAX_DEFERRALS:
            _fail_batch(svc, run_id, index, f"still rate limited after {MAX_DEFERRALS} waits")
            return
        # Back in the queue until SendGrid's reset, as a new message: the wait does not
        # count as a failed delivery (dequeue count), and no worker sleeps through it.
        again = message.model_copy(update={"deferrals": message.deferrals + 1})
        svc.storage.send(CONTACT_BATCHES, again, delay=exc.retry_after)
        svc.ledger.update_batch(run_id, index, lambda b: _set(b, deferrals=again.deferrals))
        _event("batch deferred", run_id=run_id, batch=index, seconds=round(exc.retry_after))
        return
    except (Unauthorized, Rejected, InputError) as exc:
        _fail_batch(svc, run_id, index, str(exc))
        return
    except TransientError as exc:
        reason = _brief(exc)
        svc.ledger.update_batch(
            run_id, index, lambda b: _set(b, attempts=b.attempts + 1, error=reason)
        )
        raise

    if batch.kind == "remove":
        svc.ledger.update_batch(
            run_id, index, lambda b: _set(b, state="done", removed=removed, attempts=b.attempts + 1)
        )
        _event("removal done", run_id=run_id, batch=index, removed=removed)
        finalise(svc, run_id)
        return

    def accepted(b: BatchRecord) -> bool:
        if b.state != "queued":
            return False
        b.state, b.job_id, b.error = "accepted", job_id, ""
        b.attempts += 1
        return True

    svc.ledger.update_batch(run_id, index, accepted)
    svc.storage.send(
        IMPORT_JOBS, JobCheck(run_id=run_id, batch=index, job_id=job_id), delay=FIRST_JOB_CHECK
    )
    if all(b.state != "queued" for b in svc.ledger.batches(run_id)):
        svc.ledger.update_run(
            run_id, lambda r: _set(r, state="confirming") if r.state == "sending" else False
        )
    _event("batch accepted", run_id=run_id, batch=index, contacts=batch.contacts)


def _remove(client: SendGridClient, list_id: str, emails: list[str]) -> int:
    """Take these emails off the list (never out of the account); returns how many SendGrid
    knew. Safe to repeat: taking a contact off a list it is no longer on changes nothing."""
    ids = client.search_emails(emails)
    if ids:
        client.remove_from_list(list_id, list(ids.values()))
    return len(ids)


def follow_job(svc: Services, message: JobCheck) -> None:
    """Record a settled import job's counts, or look again later."""
    run_id, index = message.run_id, message.batch
    batch = svc.ledger.get_batch(run_id, index)
    run = svc.ledger.get_run(run_id)
    if batch is None or run is None:
        return
    if batch.settled:
        finalise(svc, run_id)  # the first delivery may have died before finalising
        return
    destination = _destination_for(svc, run)
    if isinstance(destination, str):
        _fail_batch(svc, run_id, index, destination)
        return
    try:
        job = svc.sendgrid(destination).import_status(message.job_id)
    except RateLimited as exc:
        svc.storage.send(IMPORT_JOBS, message, delay=exc.retry_after)
        return
    except (Unauthorized, NotFound, Rejected, InputError) as exc:
        _fail_batch(svc, run_id, index, f"could not confirm the import job: {exc}")
        return
    except TransientError as exc:
        reason = _brief(exc)
        svc.ledger.update_batch(run_id, index, lambda b: _set(b, error=reason))
        raise
    if not job.settled:
        if message.checks >= MAX_JOB_CHECKS:
            _fail_batch(svc, run_id, index, "SendGrid's import job did not settle in 3 hours")
            return
        delay = min(MAX_JOB_CHECK_DELAY, FIRST_JOB_CHECK * 2 ** (message.checks + 1))
        svc.storage.send(
            IMPORT_JOBS, message.model_copy(update={"checks": message.checks + 1}), delay=delay
        )
        return

    def settled(b: BatchRecord) -> bool:
        if b.settled:
            return False
        b.requested, b.created, b.updated, b.errored = (
            job.requested,
            job.created,
            job.updated,
            job.errored,
        )
        b.errors_url = job.errors_url or ""
        if job.status == "failed":
            b.state, b.error = "failed", "SendGrid's import job failed: no contact was imported"
        else:
            b.state, b.error = "done", ""
        return True

    svc.ledger.update_batch(run_id, index, settled)
    _event("job settled", run_id=run_id, batch=index, status=job.status, errored=job.errored)
    finalise(svc, run_id)


def finalise(svc: Services, run_id: str) -> RunRecord | None:
    """When every batch has settled, give the run its final state and totals (once)."""
    batches = svc.ledger.batches(run_id)
    if not all(b.settled for b in batches):
        return None
    sums = totals(batches)
    failed = [b for b in batches if b.state == "failed"]
    current = svc.ledger.get_run(run_id)
    count = -1
    if current is not None and not current.final and not failed:
        count = _list_count(svc, current)

    def change(run: RunRecord) -> bool:
        if run.final:
            return False
        run.requested, run.created = sums["requested"], sums["created"]
        run.removed = sums["removed"]
        run.updated, run.errored = sums["updated"], sums["errored"]
        run.batches_done, run.batches_failed = sums["done"], sums["failed"]
        if failed:
            run.state = "failed"
            run.error = f"{len(failed)} of {len(batches)} batches failed; batch {failed[0].index}: "
            run.error += failed[0].error or "no reason recorded"
        elif sums["errored"] or run.rejected:
            run.state = "succeeded_with_errors"
        else:
            run.state = "succeeded"
        _reconcile(run, count)
        run.finished_at = utcnow()
        return True

    run = svc.ledger.update_run(run_id, change)
    _commit_state(svc, run)
    run = svc.ledger.get_run(run_id) or run
    _release_slot(svc, run)
    _event(
        "run finished",
        run_id=run_id,
        destination=run.destination,
        state=run.state,
        created=run.created,
        updated=run.updated,
        errored=run.errored,
    )
    return run


def _list_count(svc: Services, run: RunRecord) -> int:
    destination = svc.destinations.get(run.destination)
    if destination is None:
        return -1
    try:
        return svc.sendgrid(destination).list_count(run.list_id)
    except (SendGridError, InputError) as exc:
        log.warning("could not count list of run %s: %s", run.run_id, _brief(exc))
        return -1


def _reconcile(run: RunRecord, count: int) -> None:
    """Compare the list with what the segment says; a mismatch is recorded, not hidden."""
    run.list_count = count
    if count < 0:
        return
    run.drift = count - run.members
    # Upsert mode leaves former members on the list: only missing contacts are drift there.
    if run.drift < 0 or (run.sync_mode == "mirror" and run.drift):
        run.state = "succeeded_with_errors"
        run.error = (
            f"the list holds {count:,} contacts; {run.members:,} were expected from this "
            f"segment (drift {run.drift:+,})"
        )


def _commit_state(svc: Services, run: RunRecord) -> None:
    """After a run whose every batch was done, its state becomes the one the next run compares
    against. Where SendGrid errored contacts, the contacts of those batches are marked unsent
    in it first, so the next run sends them again (and not every change since the last clean
    run). A run with a failed batch keeps the old state, so the next run sends again what may
    not have landed. Safe to repeat."""
    if run.state_committed or run.batches_failed:
        return
    if run.state not in ("succeeded", "succeeded_with_errors"):
        return
    unsent = 0
    if run.errored:
        errored = [b for b in svc.ledger.batches(run.run_id) if b.kind == "upsert" and b.errored]
        unsent = _mark_unsent(svc, run.run_id, errored)
    svc.storage.commit_state(run.run_id, run.destination, run.segment)
    svc.ledger.update_run(run.run_id, lambda r: _set(r, state_committed=True))
    _event(
        "state committed",
        run_id=run.run_id,
        destination=run.destination,
        members=run.members,
        marked_unsent=unsent,
    )


def _mark_unsent(svc: Services, run_id: str, batches: list[BatchRecord]) -> int:
    """Mark the contacts of these batches unsent in the run's pending state (one batch's
    contacts in memory at a time); returns how many members were marked."""
    state = SyncedState.read_index(svc.storage.read_pending_index(run_id))
    marked = 0
    for batch in batches:
        contacts = json.loads(svc.storage.read_batch(run_id, batch.index))
        marked += state.mark_unsent(email_key(c["email"]) for c in contacts)
    svc.storage.write_pending_index(run_id, state.to_index())
    return marked


# --- poison messages -------------------------------------------------------------------------


def request_poisoned(svc: Services, request: ExportRequest) -> None:
    run = svc.ledger.get_run(request.run_id)
    last = run.error if run is not None and run.error else "no error was recorded"
    fail_run(svc, request.run_id, f"planning failed on every attempt; the last: {last}")


def batch_poisoned(svc: Services, message: BatchMessage) -> None:
    batch = svc.ledger.get_batch(message.run_id, message.batch)
    last = batch.error if batch is not None and batch.error else "no error was recorded"
    _fail_batch(
        svc, message.run_id, message.batch, f"sending failed on every attempt; the last: {last}"
    )


def job_poisoned(svc: Services, message: JobCheck) -> None:
    batch = svc.ledger.get_batch(message.run_id, message.batch)
    last = batch.error if batch is not None and batch.error else "no error was recorded"
    _fail_batch(
        svc,
        message.run_id,
        message.batch,
        f"the import job could not be checked on any attempt; the last: {last}",
    )
