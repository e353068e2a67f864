"""What the sandbox's store hands out and refuses: its answers (custom fields, lists, import jobs,
contact exports, as frozen snapshots safe to read without the lock), its errors, and the rules of
custom field values."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

FieldType = Literal["Text", "Number", "Date"]
JobStatusName = Literal["pending", "completed", "errored", "failed"]
ExportStatusName = Literal["pending", "ready", "failure"]
ExportFileType = Literal["csv", "json"]
Contact = dict[str, Any]
"""A contact as the API shows it (a JSON object)."""

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
