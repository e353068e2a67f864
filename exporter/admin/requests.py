"""What an administrator sends (the HTTP API's bodies, the CLI's documents) and how it is read.

Input is bounded and strictly typed: a request body of at most `MAX_BODY_BYTES`, JSON types as
they are (`"full_refresh": "yes"` is refused, not read as true), the destination's own bounds
(`exporter.model.destinations`).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.admin.errors import TooLarge
from exporter.core.errors import InputError
from exporter.model.destinations import describe

MAX_BODY_BYTES: Final = 256 << 10
"""A request body (HTTP API) or destination file (CLI `--file`): four times the largest
destination document (`MAX_DOCUMENT_BYTES`), so formatting never matters, and nothing larger is
parsed."""
MAX_SNAPSHOT_NAME: Final = 1024
"""Azure's limit on a blob name."""


def check_size(size: int, what: str = "the request body") -> None:
    """`TooLarge` when `size` bytes are over `MAX_BODY_BYTES`."""
    if size > MAX_BODY_BYTES:
        raise TooLarge(
            f"{what} is {size:,} bytes; at most {MAX_BODY_BYTES:,} are accepted "
            "(a destination document is at most 64 KiB)"
        )


P = TypeVar("P", bound=BaseModel)


def json_text(data: dict[str, Any]) -> str:
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
    text = json_text(data) if isinstance(data, dict) else data or b"{}"
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
