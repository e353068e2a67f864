"""The SendGrid sandbox's state: lists, contacts, custom field definitions, import jobs and
contact exports.

Pure state, no HTTP, so its rules (merge on update, list membership, per-contact job errors, the
lag of list changes, export files) can be tested in microseconds. One lock guards everything;
every public method takes it (building an export's files takes it once per chunk of rows, so a
million-member export does not stall the API).

SendGrid's lag: list membership changes (contacts joining a list when an upsert job is applied,
removals from a list) can be made visible only `lag` seconds later. They wait in one queue in
submission order, each due no earlier than the one before it, and are applied when due: by the
sandbox's job thread, and lazily before every read (list counts, members, a contact's
`list_ids`, exports). With a lag of 0 and an empty queue a change applies at once, as before.

Contacts are stored column-wise so that a million of them fit in a few hundred MB: a contact is a
slot number; the email → slot dict, a slot → email list, the other fields as one compact UTF-8 JSON
text per contact (None when there are none), two timestamp arrays, and per list a set of slots.
Measured with 200,000 contacts: about 220 bytes per contact with only an email (28 characters),
320 with three short fields as well; a dict per contact indexed by email and id takes about 900.
So a million contacts take about 300 MB. `tests/unit/test_sandbox_store.py` guards the order.
Contact ids are not stored either: a contact's id is derived from its slot (a random per-store
UUID prefix + the slot XOR a random mask), so it is a valid version-4 UUID, stable for the life of
the store, and unknown again after `reset()`. A deleted contact keeps its slot as a tombstone (an
empty email): its id stops resolving, and the same email later gets a new slot and a new id.

Contact exports: `submit_export` queues one; `finish_export` (the job thread, once it is due)
takes the membership visible at that moment and writes the files once, gzip-compressed in
memory, split so that no file holds more than `max_file_bytes` uncompressed (at least one row
each). Only the files of the latest `KEPT_EXPORTS` exports are kept; older ones have expired.
Rows are written in chunks, each under the lock, so a million members take the compressed files
plus a chunk of rows, never one giant string. See `EXPORT_CSV_COLUMNS` for the CSV format.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import math
import re
import secrets
import threading
import time
import uuid
import zlib
from array import array
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

FieldType = Literal["Text", "Number", "Date"]
JobStatusName = Literal["pending", "completed", "errored", "failed"]
ExportStatusName = Literal["pending", "ready", "failure"]
ExportFileType = Literal["csv", "json"]
Contact = dict[str, Any]
"""A contact as the API shows it (a JSON object)."""

CONTACT_FIELDS: Final[tuple[str, ...]] = (
    "first_name",
    "last_name",
    "alternate_emails",
    "address_line_1",
    "address_line_2",
    "city",
    "state_province_region",
    "postal_code",
    "country",
    "phone_number_id",
    "external_id",
    "anonymous_id",
    "custom_fields",
)
"""Request fields a contact keeps besides `email` (the spec's ContactRequest); others are ignored,
as SendGrid silently ignores unknown keys such as `listIds`."""

# Text fields every contact shows, as "" when unset (what SendGrid answers).
_SHOWN_TEXT_FIELDS: Final = (
    "first_name",
    "last_name",
    "unique_name",
    "address_line_1",
    "address_line_2",
    "city",
    "state_province_region",
    "postal_code",
    "country",
    "phone_number",
    "whatsapp",
    "line",
    "facebook",
)
_TYPE_SUFFIX: Final[dict[FieldType, str]] = {"Text": "T", "Number": "N", "Date": "D"}
MAX_CUSTOM_FIELDS: Final = 500
"""SendGrid's limit on custom field definitions per account."""
MAX_CUSTOM_TEXT: Final = 1000
"""SendGrid's limit on a text custom field value, in characters (its custom fields guide)."""

MB: Final = 1_000_000
"""What `max_file_size` counts in (SendGrid says MB; the sandbox takes 10**6 bytes)."""
KEPT_EXPORTS: Final = 20
"""The files of this many latest exports are kept; older export URLs answer "expired"."""
EXPORT_LIFETIME: Final = 72 * 3600
"""Seconds from completion to an export's `expires_at` (the sandbox's choice: SendGrid does not
say). The files are not removed at that time, only when `KEPT_EXPORTS` newer ones exist."""
_EXPORT_CHUNK_ROWS: Final = 5_000
"""Rows written (and compressed) per hold of the lock while an export's files are built: about
30 ms each."""
_FLUSH_BYTES: Final = 256 * 1024

EXPORT_CSV_COLUMNS: Final[tuple[str, ...]] = (
    "EMAIL",
    "FIRST_NAME",
    "LAST_NAME",
    "ADDRESS_LINE_1",
    "ADDRESS_LINE_2",
    "CITY",
    "STATE_PROVINCE_REGION",
    "POSTAL_CODE",
    "COUNTRY",
    "ALTERNATE_EMAILS",
    "PHONE_NUMBER",
    "WHATSAPP",
    "LINE",
    "FACEBOOK",
    "UNIQUE_NAME",
    "PHONE_NUMBER_ID",
    "EXTERNAL_ID",
    "ANONYMOUS_ID",
    "CREATED_AT",
    "UPDATED_AT",
    "CONTACT_ID",
)
"""The reserved columns of a CSV export, in order; one column per custom field definition
follows, headed by the field's name as defined (in definition order).

This is our best knowledge of SendGrid's real CSV export, not a documented format: a header row,
then one row per member, RFC 4180 (comma, CRLF, quotes only where needed, doubled inside).
Values as stored: "" when unset; ALTERNATE_EMAILS joined with ","; timestamps ISO 8601 (UTC, Z);
custom Number values as JSON writes the stored number (12, 12.5), Date and Text as stored.
A JSON export (file_type json) is JSON Lines: one object per member with the lower-case names
(`contact_id`, `email`, the reserved fields, `alternate_emails` as an array, `custom_fields` as
{name: value}, `created_at`, `updated_at`)."""

# Reserved text fields between ALTERNATE_EMAILS and CREATED_AT, and before it (after EMAIL).
_EXPORT_TEXT_BEFORE: Final = tuple(c.lower() for c in EXPORT_CSV_COLUMNS[1:9])
_EXPORT_TEXT_AFTER: Final = tuple(c.lower() for c in EXPORT_CSV_COLUMNS[10:18])

_NUMBER_RE: Final = re.compile(r"\s*-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_US_DATE_RE: Final = re.compile(r"\d{1,2}/\d{1,2}/\d{4}")
_ISO_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


class StoreError(Exception):
    """Base of the store's refusals; the HTTP layer turns them into 4xx answers."""


class NotFound(StoreError):
    """A list, contact or job does not exist."""


class Conflict(StoreError):
    """A name is already taken, or a limit on definitions is reached."""


class Expired(NotFound):
    """An export whose files are no longer kept (as a presigned URL that has expired)."""


class Forbidden(StoreError):
    """An export file asked for with the wrong signature."""


@dataclass(frozen=True, slots=True)
class CustomField:
    """A custom field definition; contacts key its values by `id` (`e1_T`)."""

    id: str
    name: str
    field_type: FieldType


@dataclass(frozen=True, slots=True)
class ListInfo:
    """A contact list with its current number of members."""

    id: str
    name: str
    contact_count: int


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one import job, safe to read without the lock."""

    id: str
    job_type: str
    status: JobStatusName
    requested_count: int
    created_count: int
    updated_count: int
    deleted_count: int
    errored_count: int
    started_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """A snapshot of one contact export, safe to read without the lock. Times are epoch seconds."""

    id: str
    status: ExportStatusName
    list_ids: tuple[str, ...]
    file_type: ExportFileType
    created_at: float
    updated_at: float
    completed_at: float | None
    expires_at: float
    contact_count: int | None
    message: str
    file_count: int
    token: str
    """The signature its file URLs carry (like a presigned URL's)."""
    expired: bool
    """Its files are no longer kept."""


@dataclass(slots=True)
class _Export:
    id: str
    list_ids: tuple[str, ...]
    file_type: ExportFileType
    max_file_bytes: int
    due: float
    created_at: float
    updated_at: float
    token: str
    status: ExportStatusName = "pending"
    completed_at: float | None = None
    contact_count: int | None = None
    message: str = ""
    files: list[bytes] | None = None
    file_count: int = 0

    def info(self) -> ExportInfo:
        return ExportInfo(
            id=self.id,
            status=self.status,
            list_ids=self.list_ids,
            file_type=self.file_type,
            created_at=self.created_at,
            updated_at=self.updated_at,
            completed_at=self.completed_at,
            expires_at=(self.completed_at or self.created_at) + EXPORT_LIFETIME,
            contact_count=self.contact_count,
            message=self.message,
            file_count=self.file_count,
            token=self.token,
            expired=self.status == "ready" and self.files is None,
        )


@dataclass(slots=True)
class _Change:
    """A list membership change waiting for SendGrid's lag: `slots` join or leave a list."""

    due: float
    list_id: str
    join: bool
    slots: Collection[int]


@dataclass(slots=True)
class _List:
    id: str
    name: str
    members: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Job:
    id: str
    due: float
    started_at: float
    contacts: list[Contact] | None
    list_ids: tuple[str, ...]
    status: JobStatusName = "pending"
    created: int = 0
    updated: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    requested: int = 0
    finished_at: float | None = None

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id,
            job_type="upsert",
            status=self.status,
            requested_count=self.requested,
            created_count=self.created,
            updated_count=self.updated,
            deleted_count=0,
            errored_count=len(self.errors),
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


def iso_timestamp(epoch: float) -> str:
    """ISO 8601 in UTC with a Z, to the second, as SendGrid writes timestamps."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def custom_value_problem(field_type: FieldType, value: Any) -> str | None:
    """Why `value` cannot be stored in a custom field of this type (None when it can)."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return f"must be a {field_type.lower()} value"
    if field_type == "Number":
        if isinstance(value, int | float):
            return None if math.isfinite(value) else "must be a finite number"
        return None if _NUMBER_RE.fullmatch(value) else "must be a number"
    if field_type == "Date":
        if isinstance(value, str) and _parse_date(value) is not None:
            return None
        return "must be a date (MM/DD/YYYY or YYYY-MM-DD)"
    if isinstance(value, str) and len(value) > MAX_CUSTOM_TEXT:
        return f"must be at most {MAX_CUSTOM_TEXT:,} characters"
    return None


def _parse_date(value: str) -> date | None:
    try:
        if _US_DATE_RE.fullmatch(value):
            return datetime.strptime(value, "%m/%d/%Y").date()
        if _ISO_DATE_RE.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        return None
    return None


def _encode(fields: Mapping[str, Any]) -> bytes | None:
    if not fields:
        return None
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


_DECODER: Final = json.JSONDecoder()


def _decode(raw: bytes | None) -> dict[str, Any]:
    return {} if raw is None else dict(json.loads(raw))


class SandboxStore:
    """Everything the sandbox remembers. `clock` gives epoch seconds for timestamps;
    `monotonic` the clock of due times (jobs, exports, lagged list changes)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._init_state()

    def _init_state(self) -> None:
        # The part of a version-4 UUID that carries the version and variant bits, plus 48 bits
        # that scramble the slot number into the last group.
        self._id_prefix = str(uuid.uuid4())[:24]
        self._id_mask = uuid.uuid4().int & 0xFFFF_FFFF_FFFF
        self._by_email: dict[str, int] = {}
        self._by_alternate: dict[str, int] = {}
        self._emails: list[str] = []
        self._fields: list[bytes | None] = []
        self._created_ms: array[int] = array("q")
        self._updated_ms: array[int] = array("q")
        self._lists: dict[str, _List] = {}
        self._list_names: set[str] = set()
        self._custom_fields: dict[str, CustomField] = {}
        self._jobs: dict[str, _Job] = {}
        self._changes: deque[_Change] = deque()
        self._exports: dict[str, _Export] = {}
        self._kept: deque[str] = deque()  # exports whose files are kept, oldest first

    def reset(self) -> None:
        """Forget everything: lists, contacts (their ids stop resolving), fields, jobs, pending
        list changes and exports (an export being written is abandoned)."""
        with self._lock:
            self._init_state()

    # --- ids ---------------------------------------------------------------------------------

    def _contact_id(self, slot: int) -> str:
        return f"{self._id_prefix}{slot ^ self._id_mask:012x}"

    def _slot_of(self, contact_id: str) -> int | None:
        contact_id = contact_id.strip().lower()
        if len(contact_id) != 36 or not contact_id.startswith(self._id_prefix):
            return None
        try:
            slot = int(contact_id[24:], 16) ^ self._id_mask
        except ValueError:
            return None
        return slot if slot < len(self._emails) and self._emails[slot] else None

    # --- lists -------------------------------------------------------------------------------

    def create_list(self, name: str) -> ListInfo:
        """A new empty list; a name already in use is a `Conflict` (names are unique)."""
        with self._lock:
            if name in self._list_names:
                raise Conflict(f"a list named {name!r} already exists")
            new = _List(str(uuid.uuid4()), name)
            self._lists[new.id] = new
            self._list_names.add(name)
            return ListInfo(new.id, new.name, 0)

    def get_list(self, list_id: str) -> ListInfo | None:
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            return None if found is None else ListInfo(found.id, found.name, len(found.members))

    def lists(self) -> list[ListInfo]:
        """Every list, oldest first (the order pages are cut from)."""
        with self._lock:
            self._apply_due_changes()
            return [ListInfo(x.id, x.name, len(x.members)) for x in self._lists.values()]

    def unknown_list_ids(self, list_ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [x for x in list_ids if x not in self._lists]

    def list_members(self, list_id: str, *, custom_by_id: bool = False) -> list[Contact]:
        """The members as email + the fields they hold (no ids, no timestamps), by email:
        what a test compares with the segment it exported. Custom fields show by name, or as
        stored, by field id (`custom_by_id`)."""
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            names = {} if custom_by_id else self._custom_names()
            members = [self._member_view(slot, names) for slot in found.members]
        members.sort(key=lambda m: str(m["email"]))
        return members

    def sample_member(self, list_id: str) -> Contact | None:
        """One member in full (the oldest), for `contact_sample`; None for an empty list."""
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            return self._contact_view(min(found.members)) if found.members else None

    def remove_from_list(
        self, list_id: str, contact_ids: Collection[str], *, lag: float = 0.0
    ) -> int:
        """Take contacts off a list (never out of the account); all ids must exist. The
        removal becomes visible `lag` seconds later (SendGrid's lag).

        Returns how many were visible members. An unknown list or any unknown id is `NotFound`
        and changes nothing, as SendGrid answers 404 for either.
        """
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            slots = [self._slot_of(x) for x in contact_ids]
            missing = sum(1 for s in slots if s is None)
            if missing:
                raise NotFound(f"{missing} of the contact ids do not exist")
            known = {s for s in slots if s is not None}
            removed = len(found.members & known)
            self._queue_change(list_id, known, join=False, lag=lag)
            return removed

    def delete_list(self, list_id: str, *, delete_contacts: bool = False) -> int:
        """Delete a list (its name is free again). Its contacts stay in the account, unless
        `delete_contacts`: then every contact that is or will be a member (pending joins
        count, pending removals too) is deleted from the account: it leaves every list and
        its id stops resolving. Returns how many contacts were deleted."""
        with self._lock:
            self._apply_due_changes()
            found = self._lists.pop(list_id, None)
            if found is None:
                raise NotFound("list not found")
            self._list_names.discard(found.name)
            if not delete_contacts:
                return 0
            members = set(found.members)
            for change in self._changes:  # in order: what the list would end up holding
                if change.list_id == list_id:
                    if change.join:
                        members.update(change.slots)
                    else:
                        members.difference_update(change.slots)
            deleted = 0
            for slot in members:
                deleted += self._delete_contact(slot)
            return deleted

    def _delete_contact(self, slot: int) -> int:
        email = self._emails[slot]
        if not email:
            return 0
        del self._by_email[email]
        for alternate in _decode(self._fields[slot]).get("alternate_emails", []):
            if self._by_alternate.get(alternate) == slot:
                del self._by_alternate[alternate]
        self._emails[slot] = ""  # a tombstone: the slot (and so the id) never comes back
        self._fields[slot] = None
        for other in self._lists.values():
            other.members.discard(slot)
        return 1

    # --- SendGrid's lag ----------------------------------------------------------------------

    def _queue_change(
        self, list_id: str, slots: Collection[int], *, join: bool, lag: float
    ) -> None:
        """Apply at once when there is no lag and nothing waits; else queue, due `lag` seconds
        from now but never before the change queued last (so changes apply in order)."""
        if lag <= 0 and not self._changes:
            self._apply_change(_Change(0.0, list_id, join, slots))
            return
        due = self._monotonic() + max(0.0, lag)
        if self._changes and self._changes[-1].due > due:
            due = self._changes[-1].due
        self._changes.append(_Change(due, list_id, join, slots))

    def _apply_change(self, change: _Change) -> None:
        target = self._lists.get(change.list_id)
        if target is None:  # deleted since
            return
        if change.join:
            emails = self._emails
            target.members.update(s for s in change.slots if emails[s])  # not deleted since
        else:
            target.members.difference_update(change.slots)

    def _apply_due_changes(self) -> None:
        if not self._changes:
            return
        now = self._monotonic()
        while self._changes and self._changes[0].due <= now:
            self._apply_change(self._changes.popleft())

    def apply_due_changes(self) -> int:
        """Make visible the list changes whose lag has passed; returns how many still wait."""
        with self._lock:
            self._apply_due_changes()
            return len(self._changes)

    # --- custom fields -----------------------------------------------------------------------

    def create_custom_field(
        self, name: str, field_type: FieldType, reserved: Collection[str] = ()
    ) -> CustomField:
        """A new definition with the next id (`e1_T`, `e2_N`, `e3_D`, ...). Names are unique
        regardless of case, reserved names included, as in SendGrid."""
        with self._lock:
            folded = name.casefold()
            taken = [*reserved, *(f.name for f in self._custom_fields.values())]
            if any(other.casefold() == folded for other in taken):
                raise Conflict(f"a field named {name!r} already exists")
            if len(self._custom_fields) >= MAX_CUSTOM_FIELDS:
                raise Conflict(f"an account can have at most {MAX_CUSTOM_FIELDS} custom fields")
            number = len(self._custom_fields) + 1
            new = CustomField(f"e{number}_{_TYPE_SUFFIX[field_type]}", name, field_type)
            self._custom_fields[new.id] = new
            return new

    def custom_fields(self) -> list[CustomField]:
        with self._lock:
            return list(self._custom_fields.values())

    def custom_field(self, field_id: str) -> CustomField | None:
        with self._lock:
            return self._custom_fields.get(field_id)

    def _custom_names(self) -> dict[str, str]:
        return {f.id: f.name for f in self._custom_fields.values()}

    # --- contacts ----------------------------------------------------------------------------

    def contact_count(self) -> int:
        with self._lock:
            return len(self._by_email)

    def get_contact(self, contact_id: str) -> Contact | None:
        with self._lock:
            self._apply_due_changes()
            slot = self._slot_of(contact_id)
            return None if slot is None else self._contact_view(slot)

    def search_emails(self, emails: Iterable[str]) -> dict[str, Contact | None]:
        """Each searched address (lower-cased; blanks skipped) → its contact, found by primary
        or alternate email, or None."""
        with self._lock:
            self._apply_due_changes()
            found: dict[str, Contact | None] = {}
            for raw in emails:
                email = raw.strip().lower()
                if not email or email in found:
                    continue
                slot = self._by_email.get(email)
                if slot is None:
                    slot = self._by_alternate.get(email)
                found[email] = None if slot is None else self._contact_view(slot)
            return found

    def _contact_view(self, slot: int) -> Contact:
        fields = _decode(self._fields[slot])
        names = self._custom_names()
        view: Contact = {"id": self._contact_id(slot), "email": self._emails[slot]}
        for name in _SHOWN_TEXT_FIELDS:
            view[name] = fields.get(name, "")
        for name in ("phone_number_id", "external_id", "anonymous_id"):
            if name in fields:
                view[name] = fields[name]
        view["alternate_emails"] = fields.get("alternate_emails", [])
        view["custom_fields"] = {
            names.get(k, k): v for k, v in fields.get("custom_fields", {}).items()
        }
        view["list_ids"] = [x.id for x in self._lists.values() if slot in x.members]
        view["segment_ids"] = []
        view["created_at"] = iso_timestamp(self._created_ms[slot] / 1000)
        view["updated_at"] = iso_timestamp(self._updated_ms[slot] / 1000)
        return view

    def _member_view(self, slot: int, names: Mapping[str, str]) -> Contact:
        view: Contact = {"email": self._emails[slot]}
        fields = _decode(self._fields[slot])
        custom = fields.pop("custom_fields", None)
        view.update(fields)
        if custom:
            view["custom_fields"] = {names.get(k, k): v for k, v in custom.items()}
        return view

    # --- import jobs -------------------------------------------------------------------------

    def submit_upsert(self, contacts: list[Contact], list_ids: Sequence[str], due: float) -> str:
        """Queue an upsert job that `apply_upsert` runs once `due` (caller's clock) has passed."""
        with self._lock:
            job = _Job(
                id=str(uuid.uuid4()),
                due=due,
                started_at=self._clock(),
                contacts=contacts,
                list_ids=tuple(list_ids),
                requested=len(contacts),
            )
            self._jobs[job.id] = job
            return job.id

    def due_jobs(self, now: float) -> list[str]:
        """Pending jobs whose time has come, in the order they were submitted."""
        with self._lock:
            return [j.id for j in self._jobs.values() if j.status == "pending" and j.due <= now]

    def next_due(self) -> float | None:
        """When the next pending job or export falls due, or the next lagged list change
        (the monotonic clock), or None when nothing waits."""
        with self._lock:
            dues = [j.due for j in self._jobs.values() if j.status == "pending"]
            dues.extend(e.due for e in self._exports.values() if e.status == "pending")
            if self._changes:
                dues.append(self._changes[0].due)
            return min(dues, default=None)

    def job(self, job_id: str) -> JobInfo | None:
        with self._lock:
            found = self._jobs.get(job_id)
            return None if found is None else found.info()

    def job_errors(self, job_id: str) -> list[tuple[str, str]]:
        """(email, reason) for every contact the job did not apply."""
        with self._lock:
            found = self._jobs.get(job_id)
            if found is None:
                raise NotFound("job not found")
            return list(found.errors)

    def jobs_by_status(self) -> dict[str, int]:
        with self._lock:
            counts = Counter(j.status for j in self._jobs.values())
        return {s: counts.get(s, 0) for s in ("pending", "completed", "errored", "failed")}

    def apply_upsert(
        self,
        job_id: str,
        *,
        error_indexes: Collection[int] = (),
        fail: bool = False,
        lag: float = 0.0,
    ) -> JobInfo:
        """Run a pending job: each contact in order is created or merged and joins the lists
        (visibly so `lag` seconds later: SendGrid's lag; fields change at once).

        A contact is not applied (and counts as errored) when a custom value does not fit its
        field's type, or when its index is in `error_indexes` (injected faults). `fail` ends the
        job `failed` with nothing applied. Running a finished job again changes nothing.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound("job not found")
            if job.status != "pending" or job.contacts is None:
                return job.info()
            contacts, job.contacts = job.contacts, None
            job.status = "failed"  # unless it gets through, so a bug cannot leave it pending
            job.finished_at = self._clock()
            if fail:
                job.errors = [
                    (str(c.get("email", "")).lower(), "the import job failed") for c in contacts
                ]
                return job.info()
            self._apply_due_changes()
            lists = [x for x in job.list_ids if x in self._lists]
            joined: list[int] = []
            now_ms = int(job.finished_at * 1000)
            for index, contact in enumerate(contacts):
                email = str(contact.get("email") or "").lower()
                if index in error_indexes:
                    problem: str | None = "the contact could not be processed (injected)"
                else:
                    problem = self._contact_problem(email, contact)
                if problem is not None:
                    job.errors.append((email, problem))
                    continue
                created, slot = self._upsert(email, contact, now_ms)
                if created:
                    job.created += 1
                else:
                    job.updated += 1
                joined.append(slot)
            for list_id in lists:
                self._queue_change(list_id, joined, join=True, lag=lag)
            job.status = "errored" if job.errors else "completed"
            return job.info()

    def _contact_problem(self, email: str, contact: Contact) -> str | None:
        if not email:
            return "email is required"
        custom = contact.get("custom_fields")
        if not isinstance(custom, dict):
            return None
        for key, value in custom.items():
            definition = self._custom_fields.get(key)
            if definition is None:
                return f"custom field {key} does not exist"
            problem = custom_value_problem(definition.field_type, value)
            if problem is not None:
                return f"custom field {key} ({definition.field_type}) {problem}"
        return None

    def _upsert(self, email: str, contact: Contact, now_ms: int) -> tuple[bool, int]:
        """Create or merge one contact: (whether it was created, its slot)."""
        updates: dict[str, Any] = {k: contact[k] for k in CONTACT_FIELDS if k in contact}
        if not updates.get("custom_fields", True):
            del updates["custom_fields"]
        if "alternate_emails" in updates:
            updates["alternate_emails"] = [str(a).lower() for a in updates["alternate_emails"]]
        slot = self._by_email.get(email)
        created = slot is None
        if slot is None:
            slot = len(self._emails)
            self._emails.append(email)
            self._by_email[email] = slot
            self._fields.append(_encode(updates))
            self._created_ms.append(now_ms)
            self._updated_ms.append(now_ms)
            old_alternates: list[str] = []
        else:
            fields = _decode(self._fields[slot])
            old_alternates = fields.get("alternate_emails", [])
            custom = {**fields.get("custom_fields", {}), **updates.pop("custom_fields", {})}
            fields.update(updates)
            if custom:
                fields["custom_fields"] = custom
            self._fields[slot] = _encode(fields)
            self._updated_ms[slot] = now_ms
        if "alternate_emails" in updates:
            for old in old_alternates:
                if self._by_alternate.get(old) == slot:
                    del self._by_alternate[old]
            for new in updates["alternate_emails"]:
                self._by_alternate[new] = slot
        return created, slot

    # --- contact exports ---------------------------------------------------------------------

    def submit_export(
        self,
        list_ids: Sequence[str],
        *,
        due: float,
        file_type: ExportFileType = "csv",
        max_file_bytes: int = 5000 * MB,
    ) -> ExportInfo:
        """Queue an export of the members of `list_ids` (every contact when empty) that
        `finish_export` writes once `due` (the monotonic clock) has passed. An unknown list is
        `NotFound` (its id in the message)."""
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
        with self._lock:
            ids = tuple(dict.fromkeys(list_ids))
            for list_id in ids:
                if list_id not in self._lists:
                    raise NotFound(f"list {list_id} does not exist")
            now = self._clock()
            export = _Export(
                id=str(uuid.uuid4()),
                list_ids=ids,
                file_type=file_type,
                max_file_bytes=max_file_bytes,
                due=due,
                created_at=now,
                updated_at=now,
                token=secrets.token_urlsafe(24),
            )
            self._exports[export.id] = export
            return export.info()

    def due_exports(self, now: float) -> list[str]:
        """Pending exports whose time has come, oldest first."""
        with self._lock:
            return [e.id for e in self._exports.values() if e.status == "pending" and e.due <= now]

    def export(self, export_id: str) -> ExportInfo | None:
        with self._lock:
            found = self._exports.get(export_id)
            return None if found is None else found.info()

    def exports(self) -> list[ExportInfo]:
        """Every export, oldest first."""
        with self._lock:
            return [e.info() for e in self._exports.values()]

    def finish_export(
        self, export_id: str, *, fail: bool = False, message: str = "the export failed"
    ) -> ExportInfo:
        """Write a pending export's files from the membership visible now and make it `ready`
        (or end it `failure` with `message` when `fail`, or when one of its lists was deleted
        in the meantime). A settled export is left as it is. A `reset()` while the files are
        being written abandons them (`NotFound`)."""
        with self._lock:
            export = self._exports.get(export_id)
            if export is None:
                raise NotFound("export not found")
            if export.status != "pending":
                return export.info()
            gone = [x for x in export.list_ids if x not in self._lists]
            if fail or gone:
                export.status = "failure"
                export.message = message if fail else f"list {gone[0]} was deleted"
                export.completed_at = export.updated_at = self._clock()
                return export.info()
            self._apply_due_changes()
            slots = self._export_slots(export.list_ids)
            custom = list(self._custom_fields.values())
        try:
            files, count = self._write_export(export, slots, custom)
        except NotFound:
            raise
        except BaseException:  # a bug or no memory: end it, never leave it pending forever
            with self._lock:
                export.status = "failure"
                export.message = "the sandbox failed to write the export"
                export.completed_at = export.updated_at = self._clock()
            raise
        with self._lock:
            if self._exports.get(export_id) is not export:
                raise NotFound("the sandbox was reset while the export was written")
            export.files = files
            export.file_count = len(files)
            export.contact_count = count
            export.status = "ready"
            export.completed_at = export.updated_at = self._clock()
            self._kept.append(export.id)
            while len(self._kept) > KEPT_EXPORTS:
                old = self._exports.get(self._kept.popleft())
                if old is not None:
                    old.files = None
            return export.info()

    def export_file(self, export_id: str, number: int, signature: str) -> bytes:
        """The gzip-compressed bytes of file `number` (1-based) of a ready export. An unknown
        export or file is `NotFound`, a wrong signature `Forbidden`, files no longer kept
        `Expired`."""
        with self._lock:
            export = self._exports.get(export_id)
            if export is None or export.status != "ready":
                raise NotFound("export file not found")
            if not hmac.compare_digest(signature.encode(), export.token.encode()):
                raise Forbidden("the signature does not match")
            if export.files is None:
                raise Expired("the export file has expired")
            if not 1 <= number <= len(export.files):
                raise NotFound("export file not found")
            return export.files[number - 1]

    def _export_slots(self, list_ids: Sequence[str]) -> array[int]:
        """The members' slots, oldest contact first; every live contact when no list is named."""
        if not list_ids:
            emails = self._emails
            return array("q", (s for s in range(len(emails)) if emails[s]))
        if len(list_ids) == 1:
            return array("q", sorted(self._lists[list_ids[0]].members))
        return array("q", sorted(set().union(*(self._lists[x].members for x in list_ids))))

    def _write_export(
        self, export: _Export, slots: array[int], custom: Sequence[CustomField]
    ) -> tuple[list[bytes], int]:
        """(gzip files, rows written): chunks of rows, each chunk under the lock."""
        stamps: dict[int, str] = {}
        if export.file_type == "csv":
            header = _csv_line([*EXPORT_CSV_COLUMNS, *(f.name for f in custom)])
            files = _GzipFiles(header.encode(), export.max_file_bytes)
            custom_ids = [f.id for f in custom]

            def line(slot: int, email: str) -> str:
                return _csv_line(self._export_csv_row(slot, email, custom_ids, stamps))
        else:
            files = _GzipFiles(b"", export.max_file_bytes)
            names = {f.id: f.name for f in custom}

            def line(slot: int, email: str) -> str:
                row = self._export_json_row(slot, email, names, stamps)
                return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"

        count = 0
        for start in range(0, len(slots), _EXPORT_CHUNK_ROWS):
            with self._lock:
                if self._exports.get(export.id) is not export:
                    raise NotFound("the sandbox was reset while the export was written")
                emails = self._emails
                for slot in slots[start : start + _EXPORT_CHUNK_ROWS]:
                    email = emails[slot]
                    if email:  # else deleted since the membership was taken
                        files.add(line(slot, email).encode())
                        count += 1
        return files.finish(), count

    def _stamp(self, ms: int, cache: dict[int, str]) -> str:
        second = ms // 1000
        text = cache.get(second)
        if text is None:
            if len(cache) > 10_000:
                cache.clear()
            text = cache[second] = iso_timestamp(second)
        return text

    def _export_csv_row(
        self, slot: int, email: str, custom_ids: Sequence[str], stamps: dict[int, str]
    ) -> list[str]:
        raw = self._fields[slot]
        fields: dict[str, Any] = {} if raw is None else _DECODER.decode(raw.decode())
        get = fields.get
        row = [email]
        row += [get(k, "") for k in _EXPORT_TEXT_BEFORE]  # reserved values are text (the spec)
        row.append(",".join(get("alternate_emails") or ()))
        row += [get(k, "") for k in _EXPORT_TEXT_AFTER]
        row.append(self._stamp(self._created_ms[slot], stamps))
        row.append(self._stamp(self._updated_ms[slot], stamps))
        row.append(self._contact_id(slot))
        if custom_ids:
            custom = get("custom_fields") or {}
            row += [_cell(custom.get(i)) for i in custom_ids]
        return row

    def _export_json_row(
        self, slot: int, email: str, names: Mapping[str, str], stamps: dict[int, str]
    ) -> dict[str, Any]:
        fields = _decode(self._fields[slot])
        row: dict[str, Any] = {"contact_id": self._contact_id(slot), "email": email}
        row.update((k, fields.get(k, "")) for k in _EXPORT_TEXT_BEFORE)
        row["alternate_emails"] = list(fields.get("alternate_emails") or ())
        row.update((k, fields.get(k, "")) for k in _EXPORT_TEXT_AFTER)
        custom = fields.get("custom_fields") or {}
        row["custom_fields"] = {names[k]: v for k, v in custom.items() if k in names}
        row["created_at"] = self._stamp(self._created_ms[slot], stamps)
        row["updated_at"] = self._stamp(self._updated_ms[slot], stamps)
        return row

    # --- overview ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts for `/__sandbox/state`: lists with sizes, contacts, jobs by status, fields."""
        with self._lock:
            self._apply_due_changes()
            exports = Counter(e.status for e in self._exports.values())
            return {
                "lists": [
                    {"id": x.id, "name": x.name, "contact_count": len(x.members)}
                    for x in self._lists.values()
                ],
                "contacts": len(self._by_email),
                "jobs": self.jobs_by_status(),
                "exports": {s: exports.get(s, 0) for s in ("pending", "ready", "failure")},
                "pending_list_changes": len(self._changes),
                "custom_fields": [
                    {"id": f.id, "name": f.name, "field_type": f.field_type}
                    for f in self._custom_fields.values()
                ],
            }


class _Echo:
    """A csv writer's file that hands each written line back: `writerow` returns it."""

    __slots__ = ()

    def write(self, text: str) -> str:
        return text


_LINE_WRITER: Final = csv.writer(_Echo(), lineterminator="\r\n")


def _csv_line(row: Iterable[str]) -> str:
    """One RFC 4180 line (quoted where needed, CRLF)."""
    line: str = _LINE_WRITER.writerow(row)
    return line


def _cell(value: Any) -> str:
    """A stored value as the CSV export writes it: "" for none, numbers as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


class _GzipFiles:
    """Lines into gzip-compressed files held in memory, a new file whenever the next line would
    take the current one past `max_bytes` uncompressed (each file has at least one row after its
    `header`). Compression level 1: fast, and about 4:1 on contact rows."""

    def __init__(self, header: bytes, max_bytes: int) -> None:
        self._header = header
        self._max = max_bytes
        self._files: list[bytes] = []
        self._out: io.BytesIO | None = None
        self._zip = zlib.compressobj(1, zlib.DEFLATED, 31)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._size = 0
        self._rows = 0

    def add(self, line: bytes) -> None:
        if self._out is None:
            self._open()
        elif self._rows and self._size + len(line) > self._max:
            self._close()
            self._open()
        self._pending.append(line)
        self._pending_bytes += len(line)
        self._size += len(line)
        self._rows += 1
        if self._pending_bytes >= _FLUSH_BYTES:
            self._flush()

    def finish(self) -> list[bytes]:
        """The files (one, holding only the header, when there was no line)."""
        if self._out is None:
            self._open()
        self._close()
        return self._files

    def _open(self) -> None:
        self._out = io.BytesIO()
        self._zip = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: the gzip container
        self._pending = [self._header] if self._header else []
        self._pending_bytes = self._size = len(self._header)
        self._rows = 0

    def _flush(self) -> None:
        if self._out is not None and self._pending:
            self._out.write(self._zip.compress(b"".join(self._pending)))
        self._pending = []
        self._pending_bytes = 0

    def _close(self) -> None:
        self._flush()
        if self._out is not None:
            self._out.write(self._zip.flush())
            self._files.append(self._out.getvalue())
        self._out = None
