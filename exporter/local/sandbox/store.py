"""The SendGrid sandbox's state: `SandboxStore`, everything the sandbox remembers.

Pure state, no HTTP, so its rules (merge on update, list membership, per-contact job errors, the
lag of list changes, export files) can be tested in microseconds. The store is assembled from its
parts: `store_state` (the contacts stored column-wise, the lock, SendGrid's lag), `store_lists`,
`store_exports`; here are the custom field definitions, the contacts and the import jobs.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from exporter.local.sandbox.store_exports import ExportsPart
from exporter.local.sandbox.store_lists import ListsPart
from exporter.local.sandbox.store_model import (
    Conflict,
    Contact,
    CustomField,
    FieldType,
    JobInfo,
    JobStatusName,
    NotFound,
    custom_value_problem,
)
from exporter.local.sandbox.store_state import decode_fields, encode_fields

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
_TYPE_SUFFIX: Final[dict[FieldType, str]] = {"Text": "T", "Number": "N", "Date": "D"}
MAX_CUSTOM_FIELDS: Final = 500
"""SendGrid's limit on custom field definitions per account."""


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


class SandboxStore(ListsPart, ExportsPart):
    """Everything the sandbox remembers. `clock` gives epoch seconds for timestamps;
    `monotonic` the clock of due times (jobs, exports, lagged list changes)."""

    def _init_state(self) -> None:
        super()._init_state()
        self._jobs: dict[str, _Job] = {}

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
            self._fields.append(encode_fields(updates))
            self._created_ms.append(now_ms)
            self._updated_ms.append(now_ms)
            old_alternates: list[str] = []
        else:
            fields = decode_fields(self._fields[slot])
            old_alternates = fields.get("alternate_emails", [])
            custom = {**fields.get("custom_fields", {}), **updates.pop("custom_fields", {})}
            fields.update(updates)
            if custom:
                fields["custom_fields"] = custom
            self._fields[slot] = encode_fields(fields)
            self._updated_ms[slot] = now_ms
        if "alternate_emails" in updates:
            for old in old_alternates:
                if self._by_alternate.get(old) == slot:
                    del self._by_alternate[old]
            for new in updates["alternate_emails"]:
                self._by_alternate[new] = slot
        return created, slot

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
