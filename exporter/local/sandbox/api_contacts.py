"""The contacts endpoints: upserts as import jobs, their status, searches, counts, one contact.

Beyond the spec, SendGrid's limits: 6,000,000 bytes per upsert (413), a valid `email` on every
contact (one bad address fails the whole request), existing `list_ids` and custom field ids, at
most 100 emails per search. An upsert is an asynchronous import job: `pending` for `job_delay`,
then `completed`, `errored` or `failed` with per-contact errors and an `errors_url`. Contacts are
keyed by lower-cased email, fields merged on update, custom fields by id (`e1_T`) with Number,
Date and Text (at most 1,000 characters) values checked, and kept as sent (SendGrid normalises
dates). Contacts are identified by email only (SendGrid also takes phone_number_id, external_id
and anonymous_id); deleting a contact is not implemented (501).
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

from werkzeug.wrappers import Response

from exporter.local.sandbox.answers import (
    MAX_ERRORS,
    Call,
    Problem,
    error_response,
    errors_response,
    json_response,
)
from exporter.local.sandbox.store_model import JobInfo, iso_timestamp

MAX_UPSERT_BYTES: Final = 6_000_000
"""SendGrid's cap on one upsert body (30,000 contacts is the other cap; the spec has that one)."""
MAX_SEARCH_EMAILS: Final = 100

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_RE: Final = re.compile(
    rf"(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)


def valid_email(value: str) -> bool:
    """A plain internet address (dot-atom local part, DNS domain with a real top-level domain),
    compared lower-cased: what SendGrid takes without failing the batch."""
    return len(value) <= 254 and _EMAIL_RE.fullmatch(value.lower()) is not None


def upsert_contacts(call: Call) -> Response:
    contacts: list[dict[str, Any]] = call.body["contacts"]
    list_ids: list[str] = call.body.get("list_ids", [])
    known_fields = {f.id for f in call.store.custom_fields()}
    problems: list[Problem] = []
    for i, contact in enumerate(contacts):
        email = contact.get("email")
        if not email:
            problems.append((f"contacts[{i}].email", "is required"))
        elif not valid_email(email):
            problems.append((f"contacts[{i}].email", "must be a valid email address"))
        for j, alternate in enumerate(contact.get("alternate_emails") or ()):
            if not valid_email(alternate):
                field = f"contacts[{i}].alternate_emails[{j}]"
                problems.append((field, "must be a valid email address"))
        for field_id in contact.get("custom_fields") or {}:
            if field_id not in known_fields:
                field = f"contacts[{i}].custom_fields.{field_id}"
                problems.append((field, "is not the id of a custom field"))
        if len(problems) >= MAX_ERRORS:
            break
    for list_id in call.store.unknown_list_ids(list_ids):
        problems.append(("list_ids", f"list {list_id} does not exist"))
    if problems:
        return errors_response(400, problems)
    due = time.monotonic() + call.faults.job_delay
    job_id = call.store.submit_upsert(contacts, list_ids, due)
    call.wake()
    return json_response(202, {"job_id": job_id})


def get_import(call: Call) -> Response:
    job = call.store.job(call.params[0])
    if job is None:
        return error_response(404, "job not found")
    return json_response(200, _job_view(job, call.base))


def search_emails(call: Call) -> Response:
    emails: list[str] = call.body["emails"]
    if len(emails) > MAX_SEARCH_EMAILS:
        return error_response(400, f"must have at most {MAX_SEARCH_EMAILS} items", "emails")
    problems: list[Problem] = [
        (f"emails[{i}]", "must be a valid email address")
        for i, email in enumerate(emails)
        if email.strip() and not valid_email(email.strip())
    ]
    if problems:
        return errors_response(400, problems)
    found = call.store.search_emails(emails)
    if not any(found.values()):
        return error_response(404, "No contacts found")
    result = {
        email: {"contact": with_self(contact, call.base)}
        if contact is not None
        else {"error": "contact not found"}
        for email, contact in found.items()
    }
    return json_response(200, {"result": result})


def contact_count(call: Call) -> Response:
    count = call.store.contact_count()
    return json_response(200, {"contact_count": count, "billable_count": count})


def get_contact(call: Call) -> Response:
    contact = call.store.get_contact(call.params[0])
    if contact is None:
        return error_response(404, "contact not found")
    return json_response(200, with_self(contact, call.base))


def with_self(contact: dict[str, Any], base: str) -> dict[str, Any]:
    return {**contact, "_metadata": {"self": f"{base}/v3/marketing/contacts/{contact['id']}"}}


def _job_view(job: JobInfo, base: str) -> dict[str, Any]:
    results: dict[str, Any] = {
        "requested_count": job.requested_count,
        "created_count": job.created_count,
        "updated_count": job.updated_count,
        "deleted_count": job.deleted_count,
        "errored_count": job.errored_count,
    }
    if job.errored_count:
        results["errors_url"] = f"{base}/__sandbox/import-errors/{job.id}"
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "job_type": job.job_type,
        "results": results,
        "started_at": iso_timestamp(job.started_at),
    }
    if job.finished_at is not None:
        view["finished_at"] = iso_timestamp(job.finished_at)
    return view
