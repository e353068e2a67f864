"""What an administrator does, shared by the CLI and the HTTP API (one code path for both):
manage destinations, export on demand, read runs.

- Destinations are checked against SendGrid before they are saved (the key works, the list
  exists, or a list name is found or created) and are never saved without a data-privacy
  consent saying who accepted and when.
- Removing a destination stops its exports at once (its unfinished runs and their queued
  batches fail saying so) and deletes what the app holds for it of people's data (its synced
  state, its runs' batch blobs); the run history stays. Every step is safe to repeat, and a
  repeat finishes what an interrupted removal left, also once the document is gone (the ledger
  still names the destination's runs and segments).
- Input is bounded and strictly typed: a request body of at most `MAX_BODY_BYTES`, JSON types
  as they are (`"full_refresh": "yes"` is refused, not read as true), the destination's own
  bounds (`exporter.model.destinations`).
- Nothing here logs an API key (only its reference) or an email address.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal, NoReturn, TypeVar, get_args

from azure.core.exceptions import AzureError, HttpResponseError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.admin.views import RejectSample, RunDetails
from exporter.core.errors import ExporterError, InputError, MappingError
from exporter.core.paths import valid_segment
from exporter.core.redact import mask_emails
from exporter.flow import finish, runs
from exporter.flow.fields import mapped_custom_fields, match_custom_fields, resolve_custom_fields
from exporter.flow.services import Services
from exporter.model.destinations import NAME_PATTERN, SEGMENT_RULE, Consent, Destination, describe
from exporter.model.messages import Trigger
from exporter.model.runs import BatchRecord, RunRecord, RunState, SlotRecord, utcnow
from exporter.model.versions import SnapshotVersion, is_snapshot_file
from exporter.ports.secrets import SecretNotAKey, SecretNotFound
from exporter.ports.sendgrid import (
    ContactList,
    FieldDefinitions,
    NotFound,
    SendGrid,
    SendGridError,
    TransientError,
)
from exporter.ports.storage import AdminStorage

log = logging.getLogger("exporter.admin.commands")

RUN_STATES: Final = frozenset(get_args(RunState))
SAMPLES_PER_REASON: Final = 3
SAMPLE_BYTES: Final = 256 << 10
"""Reject samples come from the head of the report: a bounded read, however large it is."""
_PLACEHOLDER_LIST: Final = "00000000-0000-0000-0000-000000000000"
_CLOCK_SKEW: Final = timedelta(minutes=5)
MAX_BODY_BYTES: Final = 256 << 10
"""A request body (HTTP API) or destination file (CLI `--file`): four times the largest
destination document (`MAX_DOCUMENT_BYTES`), so formatting never matters, and nothing larger is
parsed."""
MAX_SNAPSHOT_NAME: Final = 1024
"""Azure's limit on a blob name."""


# --- errors: the caller (CLI exit code, HTTP status) tells them apart by type ----------------


class NotFoundError(InputError):
    """The named destination, run or snapshot does not exist."""


class ConflictError(InputError):
    """The request contradicts what exists: a name already taken, a list name several lists
    share, an export to a destination without recorded consent."""


class SendGridRefused(ExporterError):
    """SendGrid refused the destination's key or list: the key or the list must change."""


class TooLarge(InputError):
    """A request body or document over `MAX_BODY_BYTES` (HTTP 413): not parsed."""


class RemovalIncomplete(ExporterError):
    """Storage failed in the middle of a removal: what is done stays done, and the same removal
    again finishes the rest (HTTP 503, CLI exit 1)."""


def check_size(size: int, what: str = "the request body") -> None:
    """`TooLarge` when `size` bytes are over `MAX_BODY_BYTES`."""
    if size > MAX_BODY_BYTES:
        raise TooLarge(
            f"{what} is {size:,} bytes; at most {MAX_BODY_BYTES:,} are accepted "
            "(a destination document is at most 64 KiB)"
        )


def _event(event: str, **fields: object) -> None:
    """One structured log line: names, ids and counts only."""
    log.info("%s %s", event, mask_emails(" ".join(f"{k}={v}" for k, v in fields.items())))


P = TypeVar("P", bound=BaseModel)


def _json(data: dict[str, Any]) -> str:
    """A dict as JSON text, so it is validated as JSON is: the same strict types for the CLI's
    documents as for the API's bodies (times as ISO 8601 text)."""

    def default(value: object) -> object:
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        return str(value)

    return json.dumps(data, default=default)


def parse(model: type[P], data: bytes | str | dict[str, Any]) -> P:
    """Validate a payload (JSON text or a dict, validated as JSON) strictly: JSON types as they
    are. At most `MAX_BODY_BYTES`; an InputError says what is wrong and where."""
    text = _json(data) if isinstance(data, dict) else data or b"{}"
    check_size(len(text))
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise InputError(f"invalid request: {describe(exc)}") from None


# --- payloads ------------------------------------------------------------------------------


class ConsentRequest(BaseModel):
    """Who accepted the data-privacy terms; the time defaults to now (when it is recorded)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    accepted_by: str = Field(min_length=1, max_length=200)
    accepted_at: datetime | None = None


class DestinationRequest(BaseModel):
    """A destination as an administrator writes it (`PUT /api/destinations/{name}`, the CLI).

    The destination's own fields pass through to `Destination`, which validates them; on top:
    `list_name` instead of `list_id` (found, or created when absent), and a consent whose time
    may be left out. Without a consent in the request, an existing destination keeps its own.
    """

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)

    name: str | None = Field(default=None, max_length=63)
    list_id: str | None = Field(default=None, max_length=64)
    list_name: str | None = Field(default=None, min_length=1, max_length=100)
    consent: ConsentRequest | None = None

    def fields(self) -> dict[str, Any]:
        """The destination's other fields, as given."""
        return dict(self.model_extra or {})


class ExportBody(BaseModel):
    """`POST /api/destinations/{name}/exports`: all optional."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    snapshot: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SNAPSHOT_NAME,
        description="a blob name in the segments container; default: the latest of each segment",
    )
    full_refresh: bool = Field(default=False, description="send every contact, changed or not")
    allow_mass_removal: bool = Field(
        default=False, description="mirror mode: allow removing more than the destination's share"
    )
    verify: bool = Field(
        default=False,
        description="read the list back after the run and heal it, whatever the cadence says",
    )


# --- destinations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Saved:
    destination: Destination
    created: bool
    """A new destination (else an existing one was replaced)."""
    list_created: bool
    """`list_name` matched no SendGrid list, so one was created."""


def save_destination(
    svc: Services,
    request: DestinationRequest,
    *,
    mode: Literal["create", "update", "put"] = "put",
    now: datetime | None = None,
) -> Saved:
    """Validate a destination, check it against SendGrid, and save it (create or replace)."""
    now = now or utcnow()
    name = request.name or ""
    _check_name(name)
    existing = svc.destinations.get(name)
    if mode == "create" and existing:
        raise ConflictError(f"destination {name!r} exists already: update it instead")
    if mode == "update" and not existing:
        raise NotFoundError(f"no destination {name!r}")
    if request.list_id and request.list_name:
        raise InputError("give list_id or list_name, not both")
    if not request.list_id and not request.list_name:
        raise InputError("list_id or list_name is required: the SendGrid list to export into")
    consent = _consent(request, existing, now)
    document = request.fields() | {"name": name, "consent": consent.model_dump()}
    # Everything but the list first: nothing is created in SendGrid for an invalid request.
    candidate = _destination(document | {"list_id": request.list_id or _PLACEHOLDER_LIST})
    try:
        client = _client(svc, candidate)
    except (SecretNotFound, SecretNotAKey) as exc:
        # The same words as a name the model refuses (not a key's name): whether a setting
        # exists under another name is nobody's business.
        raise InputError(f"invalid destination: api_key_secret: {exc}") from None
    list_created = False
    try:
        if request.list_name:
            found, list_created = _find_or_create_list(client, request.list_name)
        else:
            found = client.get_list(candidate.list_id)
    except NotFound:
        raise SendGridRefused(
            f"SendGrid has no list {candidate.list_id} for the key in "
            f"{candidate.api_key_secret!r}: check the list id (or give list_name)"
        ) from None
    except SendGridError as exc:
        _refused(exc)
    destination = _destination(document | {"list_id": found.id})
    svc.destinations.put(destination)
    _event(
        "destination saved",
        destination=name,
        created=not existing,
        list_id=found.id,
        list_created=list_created,
        api_key_secret=destination.api_key_secret,
    )
    return Saved(destination, created=not existing, list_created=list_created)


def add_destination(
    svc: Services,
    name: str,
    *,
    api_key_secret: str,
    segments: list[str],
    consent_by: str,
    list_id: str | None = None,
    list_name: str | None = None,
    display_name: str | None = None,
    **fields: Any,
) -> Saved:
    """A new destination with consent recorded now (the demo, benchmarks and tests use it):
    `save_destination` in create mode."""
    request = parse(
        DestinationRequest,
        {
            "name": name,
            "display_name": display_name or name,
            "api_key_secret": api_key_secret,
            "segments": segments,
            "list_id": list_id,
            "list_name": list_name,
            "consent": {"accepted_by": consent_by},
            **fields,
        },
    )
    return save_destination(svc, request, mode="create")


def _check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        shown = repr(name) if len(name) <= 70 else repr(name[:67]) + "..."
        raise InputError(
            f"invalid destination name {shown}: lower-case letters, digits and dashes, "
            "at most 63, starting and ending with a letter or digit"
        )


def _destination(document: dict[str, Any]) -> Destination:
    try:
        return Destination.model_validate_json(_json(document))
    except ValidationError as exc:
        raise InputError(f"invalid destination: {describe(exc)}") from None
    except MappingError as exc:  # raised as it is by the mapping's validator
        raise InputError(f"invalid destination: mapping: {exc}") from None


def _consent(request: DestinationRequest, existing: Destination | None, now: datetime) -> Consent:
    if request.consent is not None:
        at = request.consent.accepted_at or now
        if at.tzinfo is None:
            raise InputError("consent.accepted_at needs a time zone (e.g. 2026-11-01T09:00:00Z)")
        if at > now + _CLOCK_SKEW:
            raise InputError("consent.accepted_at is in the future")
        return Consent(accepted_by=request.consent.accepted_by, accepted_at=at)
    if existing is not None and existing.consent is not None:
        return existing.consent
    raise InputError(
        "the data-privacy consent is required: name who accepted the terms for sending these "
        "profiles to SendGrid (CLI --consent-by NAME; API "
        '"consent": {"accepted_by": NAME, "accepted_at": TIME})'
    )


def _client(svc: Services, destination: Destination) -> SendGrid:
    return svc.sendgrid(destination)  # SecretNotFound (an InputError) names the missing setting


def _refused(exc: SendGridError) -> NoReturn:
    if isinstance(exc, TransientError):
        raise exc  # SendGrid is unreachable or busy: try again later
    raise SendGridRefused(str(exc)) from None


def _find_or_create_list(client: SendGrid, name: str) -> tuple[ContactList, bool]:
    matches = [found for found in client.lists() if found.name == name]
    if len(matches) > 1:
        raise ConflictError(
            f"{len(matches)} SendGrid lists are named {name!r}: give the list id instead"
        )
    if matches:
        return matches[0], False
    return client.create_list(name), True


def list_destinations(svc: Services) -> list[Destination]:
    return list(svc.destinations.all())


def get_destination(svc: Services, name: str) -> Destination:
    destination = svc.destinations.get(name) if name else None
    if destination is None:
        raise NotFoundError(f"no destination {name!r}")
    return destination


def destination_json(destination: Destination) -> dict[str, Any]:
    """What `show` prints: the document as stored. It holds the key's reference
    (`api_key_secret`), never the key."""
    return destination.model_dump(mode="json")


# --- testing the connection ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    """`api_key`, `list` or `custom_fields`."""
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    destination: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def check_connection(svc: Services, destination: Destination) -> ConnectionReport:
    """Is the key valid (a cheap authenticated GET), the list reachable, every mapped custom
    field defined? Each check says what it found; one failing does not hide the others' result,
    except that nothing is checked with a key SendGrid refuses."""
    checks: list[Check] = []
    name = destination.name
    try:
        client = _client(svc, destination)
        definitions = client.field_definitions()  # cheap, authenticated, needed below anyway
    except (InputError, SendGridError) as exc:
        checks.append(Check("api_key", False, mask_emails(str(exc))))
        checks.append(Check("list", False, "not checked: the key did not work"))
        checks.append(Check("custom_fields", False, "not checked: the key did not work"))
        return ConnectionReport(name, checks)
    checks.append(
        Check("api_key", True, f"SendGrid accepts the key in {destination.api_key_secret!r}")
    )
    try:
        found = client.get_list(destination.list_id)
        checks.append(
            Check("list", True, f"list {found.name!r} ({found.contact_count:,} contacts)")
        )
    except NotFound:
        checks.append(Check("list", False, f"SendGrid has no list {destination.list_id}"))
    except SendGridError as exc:
        checks.append(Check("list", False, mask_emails(str(exc))))
    try:
        checks.append(_custom_fields_check(client, destination, definitions))
    except (InputError, SendGridError) as exc:
        checks.append(Check("custom_fields", False, mask_emails(str(exc))))
    _event("connection tested", destination=name, ok=all(c.ok for c in checks))
    return ConnectionReport(name, checks)


def _custom_fields_check(
    client: SendGrid, destination: Destination, definitions: FieldDefinitions
) -> Check:
    """Every mapped custom field defined with a fitting type, or to be created by the next run
    (`create_missing_fields`). A test creates nothing in SendGrid."""
    wanted = mapped_custom_fields(destination)
    if not wanted:
        return Check("custom_fields", True, "none mapped")
    match = match_custom_fields(definitions, wanted)
    if match.problems or (match.missing and not destination.create_missing_fields):
        # What a run would be told. With these problems `resolve_custom_fields` raises before
        # it creates anything.
        resolve_custom_fields(client, destination)
    found = [f"{name} -> {f.id}" for name, f in match.found.items()]
    later = [f"{name} ({kind})" for name, kind in match.missing.items()]
    if later:
        found.append("created by the next export: " + ", ".join(later))
    return Check("custom_fields", True, "; ".join(found))


# --- removing --------------------------------------------------------------------------------


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


REMOVED: Final = "the destination was removed"
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
    _check_name(name)
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
    except AzureError as exc:
        raise RemovalIncomplete(
            f"removing destination {name!r} stopped while {step} ({type(exc).__name__}: "
            f"{_first_line(str(exc))}): what is done stays done; remove it again to finish"
        ) from None
    _event(
        "destination removed",
        destination=name,
        document_deleted=document_deleted,
        stopped_runs=len(stopped),
        state_blobs_deleted=state_deleted,
        run_blobs_deleted=run_deleted,
    )
    return Removal(name, stopped, state_deleted, run_deleted, document_deleted)


def _stop(svc: Services, run: RunRecord) -> str:
    def fail(batch: BatchRecord) -> bool:
        if batch.settled:
            return False
        not_done = "the batch was not sent" if batch.state == "queued" else "not confirmed"
        batch.state, batch.error = "failed", f"{REMOVED}: {not_done}"
        return True

    for batch in svc.ledger.batches(run.run_id):
        if not batch.settled:
            svc.ledger.update_batch(run.run_id, batch.index, fail)
    reason = f"{REMOVED}: the export was stopped"
    if _slot_key_ok(run.destination, run.segment):
        try:
            # Planned: ended as any run whose batches failed (counts and the first reason),
            # unverified. Without (queued, planning): failed with the reason. A planner still
            # running finds no destination for its batches, so the run fails again, at once,
            # whatever it planned.
            ended = finish.finish(svc, run.run_id) if run.planned else None
            if ended is None or not ended.final:
                finish.fail_run(svc, run.run_id, reason)
        except HttpResponseError as exc:
            if exc.status_code != 400:
                raise
        else:
            return run.run_id
    # A segment no Table key can hold (a run of a blob name from before segment names had a
    # rule): it never had a slot, so it never planned, and ending it the usual way would trip
    # over the key again. It ends here; its blobs go with the others' below.
    _end_run(svc, run.run_id, reason)
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


# --- exporting on demand ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartedRun:
    run_id: str
    segment: str
    snapshot: str


@dataclass(frozen=True, slots=True)
class Exported:
    destination: str
    runs: list[StartedRun]
    without_snapshot: list[str] = field(default_factory=list)
    """Selected segments with no snapshot yet (nothing to export for them)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "runs": [
                {"run_id": r.run_id, "segment": r.segment, "snapshot": r.snapshot}
                for r in self.runs
            ],
            "without_snapshot": self.without_snapshot,
        }


def export_now(
    svc: Services,
    name: str,
    body: ExportBody,
    *,
    trigger: Trigger,
) -> Exported:
    """Queue runs for one destination: of a named snapshot, or of the latest snapshot of each
    segment it selects. Returns at once with the run ids."""
    destination = get_destination(svc, name)
    if destination.consent is None:
        raise ConflictError(
            f"no data-privacy consent is recorded for destination {name!r}: nothing is "
            "exported; record who accepted the terms (destinations update --consent-by NAME)"
        )
    versions: list[SnapshotVersion] = []
    missing: list[str] = []
    if body.snapshot:
        versions.append(_named_snapshot(svc, destination, body.snapshot))
    else:
        for segment in destination.segments:
            version = svc.storage.latest_snapshot(segment)
            if version is None:
                missing.append(segment)
            else:
                versions.append(version)
        if not versions:
            where = ", ".join(f"segments/{m}/" for m in missing)
            raise NotFoundError(f"no snapshot to export: nothing under {where}")
    started = []
    for version in versions:
        for run_id in runs.request_exports(
            svc,
            version,
            trigger,
            only=[name],
            full_refresh=body.full_refresh,
            allow_mass_removal=body.allow_mass_removal,
            verify=body.verify,
        ):
            started.append(StartedRun(run_id, runs.segment_of(version.name), version.name))
    _event("export requested", destination=name, runs=len(started), trigger=trigger)
    return Exported(name, started, missing)


def _named_snapshot(svc: Services, destination: Destination, name: str) -> SnapshotVersion:
    segment = runs.segment_of(name)
    if "/" not in name or not is_snapshot_file(name):
        raise InputError(
            f"snapshot {name!r} must be a blob name in the segments container, "
            "<segment>/<file>.csv|.jsonl[.gz]"
        )
    if not valid_segment(segment):
        raise InputError(f"snapshot {name!r}: its segment is not a segment name: {SEGMENT_RULE}")
    if segment not in destination.segments:
        raise InputError(
            f"snapshot {name!r} belongs to segment {segment!r}, which destination "
            f"{destination.name!r} does not select ({', '.join(destination.segments)})"
        )
    version = svc.storage.snapshot_version(name)
    if version is None:
        raise NotFoundError(f"no snapshot segments/{name}")
    return version


# --- reading runs ----------------------------------------------------------------------------


def find_runs(
    svc: Services,
    *,
    destination: str | None = None,
    state: str | None = None,
    limit: int = 50,
) -> list[RunRecord]:
    """The newest runs first, optionally of one destination and in one state."""
    if state is not None and state not in RUN_STATES:
        raise InputError(f"state must be one of {', '.join(sorted(RUN_STATES))}")
    if not 1 <= limit <= 1000:
        raise InputError("limit must be from 1 to 1000")
    found = svc.ledger.runs(destination or None, limit=1_000_000 if state else limit)
    return [r for r in found if state is None or r.state == state][:limit]


def run_details(svc: Services, run_id: str) -> RunDetails:
    run = svc.ledger.get_run(run_id) if run_id else None
    if run is None:
        raise NotFoundError(f"no run {run_id!r}")
    batches = svc.ledger.batches(run_id)
    if not run.reject_report:
        return RunDetails(run, batches)
    return RunDetails(
        run,
        batches,
        samples=_reject_samples(svc.storage, run.reject_report),
        report_blob=run.reject_report,
        report_url=f"{svc.storage.app_url}/{run.reject_report}",
    )


def _reject_samples(storage: AdminStorage, blob: str) -> dict[str, list[RejectSample]]:
    """The first rows rejected for each reason, from the head of the reject report."""
    data, size = storage.read_app_blob(blob, limit=SAMPLE_BYTES)
    lines = data.decode("utf-8", "replace").splitlines()
    if size > SAMPLE_BYTES:
        lines = lines[:-1]  # cut in the middle
    samples: dict[str, list[RejectSample]] = {}
    for row in csv.DictReader(lines):
        found = samples.setdefault(row.get("reason") or "unknown", [])
        if len(found) < SAMPLES_PER_REASON:
            found.append(
                RejectSample(
                    _int(row.get("row")),
                    _int(row.get("line")),
                    row.get("message") or "",
                    row.get("partition") or "",  # reports written before it had the column
                )
            )
    return samples


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def download_report(svc: Services, run: RunRecord, write: Callable[[bytes], Any]) -> int:
    """Stream a run's reject report to `write`; returns the bytes written."""
    if not run.reject_report:
        raise NotFoundError(f"run {run.run_id} rejected no row: it has no reject report")
    written = 0
    for chunk in svc.storage.app_blob_chunks(run.reject_report):
        write(chunk)
        written += len(chunk)
    return written
