"""The SendGrid sandbox's state: lists, contacts, custom field definitions and import jobs.

Pure state, no HTTP, so its rules (merge on update, list membership, per-contact job errors) can be
tested in microseconds. One lock guards everything; every public method takes it.

Contacts are stored column-wise so that a million of them fit in a few hundred MB: a contact is a
slot number; the email → slot dict, a slot → email list, the other fields as one compact UTF-8 JSON
text per contact (None when there are none), two timestamp arrays, and per list a set of slots.
Measured with 200,000 contacts: about 220 bytes per contact with only an email (28 characters),
320 with three short fields as well; a dict per contact indexed by email and id takes about 900.
So a million contacts take about 300 MB. `tests/unit/test_sandbox_store.py` guards the order.
Contact ids are not stored either: a contact's id is derived from its slot (a random per-store
UUID prefix + the slot XOR a random mask), so it is a valid version-4 UUID, stable for the life of
the store, and unknown again after `reset()`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

FieldType = Literal["Text", "Number", "Date"]
JobStatusName = Literal["pending", "completed", "errored", "failed"]
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

_NUMBER_RE: Final = re.compile(r"\s*-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_US_DATE_RE: Final = re.compile(r"\d{1,2}/\d{1,2}/\d{4}")
_ISO_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


class StoreError(Exception):
    """Base of the store's refusals; the HTTP layer turns them into 4xx answers."""


class NotFound(StoreError):
    """A list, contact or job does not exist."""


class Conflict(StoreError):
    """A name is already taken, or a limit on definitions is reached."""


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


def _decode(raw: bytes | None) -> dict[str, Any]:
    return {} if raw is None else dict(json.loads(raw))


class SandboxStore:
    """Everything the sandbox remembers. `clock` gives epoch seconds for timestamps."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
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

    def reset(self) -> None:
        """Forget everything: lists, contacts (their ids stop resolving), fields and jobs."""
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
        return slot if slot < len(self._emails) else None

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
            found = self._lists.get(list_id)
            return None if found is None else ListInfo(found.id, found.name, len(found.members))

    def lists(self) -> list[ListInfo]:
        """Every list, oldest first (the order pages are cut from)."""
        with self._lock:
            return [ListInfo(x.id, x.name, len(x.members)) for x in self._lists.values()]

    def unknown_list_ids(self, list_ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [x for x in list_ids if x not in self._lists]

    def list_members(self, list_id: str, *, custom_by_id: bool = False) -> list[Contact]:
        """The members as email + the fields they hold (no ids, no timestamps), by email:
        what a test compares with the segment it exported. Custom fields show by name, or as
        stored, by field id (`custom_by_id`)."""
        with self._lock:
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
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            return self._contact_view(min(found.members)) if found.members else None

    def remove_from_list(self, list_id: str, contact_ids: Collection[str]) -> int:
        """Take contacts off a list (never out of the account); all ids must exist.

        Returns how many were members. An unknown list or any unknown id is `NotFound` and
        changes nothing, as SendGrid answers 404 for either.
        """
        with self._lock:
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            slots = [self._slot_of(x) for x in contact_ids]
            missing = sum(1 for s in slots if s is None)
            if missing:
                raise NotFound(f"{missing} of the contact ids do not exist")
            known = {s for s in slots if s is not None}
            removed = len(found.members & known)
            found.members -= known
            return removed

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
            return len(self._emails)

    def get_contact(self, contact_id: str) -> Contact | None:
        with self._lock:
            slot = self._slot_of(contact_id)
            return None if slot is None else self._contact_view(slot)

    def search_emails(self, emails: Iterable[str]) -> dict[str, Contact | None]:
        """Each searched address (lower-cased; blanks skipped) → its contact, found by primary
        or alternate email, or None."""
        with self._lock:
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
        """When the next pending job falls due (caller's clock), or None when none is pending."""
        with self._lock:
            return min((j.due for j in self._jobs.values() if j.status == "pending"), default=None)

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
    ) -> JobInfo:
        """Run a pending job: each contact in order is created or merged and joins the lists.

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
            lists = [self._lists[x] for x in job.list_ids if x in self._lists]
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
                if self._upsert(email, contact, now_ms, lists):
                    job.created += 1
                else:
                    job.updated += 1
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

    def _upsert(self, email: str, contact: Contact, now_ms: int, lists: Sequence[_List]) -> bool:
        """Create or merge one contact; True when it was created."""
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
        for target in lists:
            target.members.add(slot)
        return created

    # --- overview ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts for `/__sandbox/state`: lists with sizes, contacts, jobs by status, fields."""
        with self._lock:
            return {
                "lists": [
                    {"id": x.id, "name": x.name, "contact_count": len(x.members)}
                    for x in self._lists.values()
                ],
                "contacts": len(self._emails),
                "jobs": self.jobs_by_status(),
                "custom_fields": [
                    {"id": f.id, "name": f.name, "field_type": f.field_type}
                    for f in self._custom_fields.values()
                ],
            }
