"""What the flow needs of SendGrid: the client's calls as a Protocol, their answers, and errors
a caller can act on without reading text.

`RateLimited` (when to try again), `TransientError` (5xx, timeouts, connection errors, answers
lost on the way), `Unauthorized` (401/403: fix the key, do not retry), `Rejected` (other 4xx,
with SendGrid's `errors`) and its `NotFound`. The client (`exporter.adapters.sendgrid`) never
puts the API key in an exception, a repr or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Final, Protocol

from exporter.core.batching import ContactStream
from exporter.core.errors import ExporterError

SEARCH_CHUNK: Final = 100
"""`POST /v3/marketing/contacts/search/emails` takes at most 100 emails."""


REMOVE_CHUNK: Final = 100
"""Contact ids per `DELETE .../lists/{id}/contacts` (36 characters each): a 3.7 KB query."""


@dataclass(frozen=True, slots=True)
class ApiError:
    """One entry of SendGrid's `errors` array (addresses masked)."""

    message: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SendGridError(ExporterError):
    """A call to SendGrid failed. `status` is the HTTP status, None when there was no answer."""

    def __init__(
        self, message: str, *, status: int | None = None, errors: Sequence[ApiError] = ()
    ) -> None:
        detail = "; ".join(str(e) for e in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{message}: {detail}{more}" if detail else message)
        self.status = status
        self.errors = tuple(errors)


class TransientError(SendGridError):
    """5xx, a timeout or a connection error: the same call may well succeed later."""


class RateLimited(TransientError):
    """429 (or our own reading of `X-RateLimit-Remaining: 0`): try again after `retry_after`."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        """Seconds to wait, from SendGrid's `Retry-After` or `X-RateLimit-Reset` (at least 1)."""


class Unauthorized(SendGridError):
    """401/403: the API key is wrong, revoked or lacks the Marketing scopes. Retrying won't help."""


class Rejected(SendGridError):
    """Another 4xx: SendGrid refuses this request as it is (see `errors`)."""


class NotFound(Rejected):
    """404: the list, job or contacts do not exist."""


class ExportFileGone(NotFound):
    """403/404/410 on an export file: its presigned URL has expired or the export is gone.
    Start a new export; retrying the same URL will not help."""


@dataclass(frozen=True, slots=True)
class ImportJob:
    """An upsert's asynchronous job: `pending`, then `completed`, `errored` or `failed`."""

    id: str
    status: str
    requested: int = 0
    created: int = 0
    updated: int = 0
    errored: int = 0
    errors_url: str | None = None

    @property
    def settled(self) -> bool:
        return self.status != "pending"


@dataclass(frozen=True, slots=True)
class ContactExport:
    """A contact export: `pending`, then `ready` (its files at `urls`) or `failure` (`message`)."""

    id: str
    status: str
    urls: tuple[str, ...] = ()
    contact_count: int | None = None
    message: str = ""

    @property
    def settled(self) -> bool:
        return self.status != "pending"

    @property
    def ready(self) -> bool:
        return self.status == "ready"


@dataclass(frozen=True, slots=True)
class ContactList:
    id: str
    name: str
    contact_count: int = 0


@dataclass(frozen=True, slots=True)
class FieldDefinition:
    id: str
    name: str
    field_type: str


@dataclass(frozen=True, slots=True)
class FieldDefinitions:
    """Custom and reserved fields by name; custom field values are sent keyed by `id`."""

    custom: Mapping[str, FieldDefinition] = field(default_factory=dict)
    reserved: Mapping[str, FieldDefinition] = field(default_factory=dict)


class SendGrid(Protocol):
    """The SendGrid calls an export makes (`exporter.adapters.sendgrid.SendGridClient`)."""

    def upsert(self, list_ids: Sequence[str], contacts: str | bytes | ContactStream) -> str:
        """Queue an upsert of a JSON array of contacts into `list_ids`; returns the job id."""
        ...

    def import_status(self, job_id: str) -> ImportJob: ...

    def field_definitions(self) -> FieldDefinitions: ...

    def create_field(self, name: str, field_type: str) -> FieldDefinition: ...

    def get_list(self, list_id: str) -> ContactList: ...

    def lists(self) -> Iterator[ContactList]: ...

    def find_list(self, name: str) -> ContactList | None: ...

    def create_list(self, name: str) -> ContactList: ...

    def list_count(self, list_id: str) -> int: ...

    def search_emails(self, emails: Iterable[str]) -> dict[str, str]:
        """Contact ids of those emails that exist (lower-cased email -> id)."""
        ...

    def remove_from_list(self, list_id: str, contact_ids: Iterable[str]) -> list[str]:
        """Take contacts off one list (never out of the account); returns the job ids."""
        ...

    def delete_list(self, list_id: str, *, delete_contacts: bool = False) -> None: ...

    def start_export(self, list_id: str, *, max_file_size_mb: int = 1000) -> str:
        """Start a CSV export of one list's members; returns its id."""
        ...

    def export_status(self, export_id: str) -> ContactExport: ...

    def open_export_file(self, url: str) -> IO[bytes]:
        """One export file as it is downloaded (without the API key); the caller closes it."""
        ...

    def close(self) -> None:
        """Let go of idle connections (calls after it still work)."""
        ...
