"""Destinations: where a segment goes in SendGrid, and under whose consent.

A destination is a validated JSON document in the app's own storage. It names its API key by
reference only (`api_key_secret`: an app setting or Key Vault secret name); the key itself is
never stored here. No recorded consent, no export.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Literal, Protocol

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter.errors import InputError
from exporter.mapping import FieldMapping

NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
DEFAULT_PROFILE_CAP = 100_000
DEFAULT_VERIFY_UP_TO = 100_000
"""Lists up to this size are read back after every run: an export of 100,000 members is a few
MB and seconds of work (see the README's performance figures)."""
DEFAULT_VERIFY_EVERY = 10
_SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,126}$")


class Consent(BaseModel):
    """Who accepted the data-privacy terms for sending profiles to SendGrid, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accepted_by: str = Field(min_length=1, max_length=200)
    accepted_at: datetime


class Destination(BaseModel):
    """One SendGrid target: a list, a key reference, a mapping and the segments it takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="stable id: lower-case, digits, dashes")
    display_name: str = Field(min_length=1, max_length=200)
    list_id: str
    api_key_secret: str = Field(description="name of the app setting / Key Vault secret")
    mapping: dict[str, str] = Field(default_factory=dict, description="SendGrid field -> column")
    create_missing_fields: bool = Field(
        default=False,
        description="create mapped custom fields SendGrid does not have (as Text, or the type "
        "declared as custom:NAME:TYPE) instead of failing the run",
    )
    segments: list[str] = Field(min_length=1)
    sync_mode: Literal["upsert", "mirror"] = "upsert"
    profile_cap: int = Field(default=DEFAULT_PROFILE_CAP, ge=1)
    max_removal_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="mirror mode: the largest share of the list one run may remove",
    )
    full_refresh_every: int = Field(
        default=0,
        ge=0,
        description="send every contact on every Nth run of a segment, changed or not, so "
        "edits made in SendGrid by hand are put right (0: only when a request asks)",
    )
    verify_up_to: int = Field(
        default=DEFAULT_VERIFY_UP_TO,
        ge=0,
        description="read the list back from SendGrid (its contacts export) after every run "
        "of a segment with at most this many members, and heal what differs",
    )
    verify_every: int = Field(
        default=DEFAULT_VERIFY_EVERY,
        ge=0,
        description="for larger segments, read the list back on every Nth run (0: only when a "
        "request asks, or on a full refresh)",
    )
    consent: Consent | None = None

    @field_validator("list_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be a SendGrid list id (a UUID)") from None

    @field_validator("api_key_secret")
    @classmethod
    def _reference_not_key(cls, value: str) -> str:
        if value.startswith("SG.") or not _SECRET_NAME.match(value):
            raise ValueError(
                "must be the *name* of an app setting or Key Vault secret holding the key "
                "(letters, digits, - and _), never the key itself"
            )
        return value

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        FieldMapping.parse(f"{k}={v}" for k, v in value.items())  # raises on unknown fields
        return value

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: list[str]) -> list[str]:
        for segment in value:
            if not segment or "/" in segment or segment.strip() != segment:
                raise ValueError(f"segment {segment!r} must be a folder name under segments/")
        return value

    def verifies(self, members: int, runs_since_verify: int) -> bool:
        """Whether a run that leaves `members` on the list reads the list back (the cadence;
        a request or a full refresh can ask for it anyway)."""
        if members <= self.verify_up_to:
            return True
        return bool(self.verify_every) and runs_since_verify + 1 >= self.verify_every

    def field_mapping(self) -> FieldMapping:
        return FieldMapping.parse(f"{k}={v}" for k, v in self.mapping.items())

    @classmethod
    def from_json(cls, text: str | bytes) -> Destination:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise InputError(f"invalid destination: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}" for e in exc.errors()
    )


def parse_destination(data: dict[str, object] | str) -> Destination:
    """Validate a destination document (dict or JSON text) with a message a person understands."""
    return Destination.from_json(data if isinstance(data, str) else json.dumps(data, default=str))


class DestinationStore(Protocol):
    def get(self, name: str) -> Destination | None: ...

    def put(self, destination: Destination) -> None: ...

    def delete(self, name: str) -> bool: ...

    def all(self) -> Iterator[Destination]: ...


class MemoryDestinationStore:
    """For unit tests: the same interface, in a dict."""

    def __init__(self, *destinations: Destination) -> None:
        self._items = {d.name: d for d in destinations}

    def get(self, name: str) -> Destination | None:
        return self._items.get(name)

    def put(self, destination: Destination) -> None:
        self._items[destination.name] = destination

    def delete(self, name: str) -> bool:
        return self._items.pop(name, None) is not None

    def all(self) -> Iterator[Destination]:
        yield from sorted(self._items.values(), key=lambda d: d.name)


class BlobDestinationStore:
    """Destinations as JSON blobs `destinations/<name>.json` in the app's container."""

    PREFIX = "destinations/"

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def get(self, name: str) -> Destination | None:
        try:
            data: bytes = self._container.download_blob(f"{self.PREFIX}{name}.json").readall()
        except ResourceNotFoundError:
            return None
        return Destination.from_json(data)

    def put(self, destination: Destination) -> None:
        self._container.upload_blob(
            f"{self.PREFIX}{destination.name}.json",
            destination.model_dump_json(indent=2).encode("utf-8"),
            overwrite=True,
        )

    def delete(self, name: str) -> bool:
        try:
            self._container.delete_blob(f"{self.PREFIX}{name}.json")
        except ResourceNotFoundError:
            return False
        return True

    def all(self) -> Iterator[Destination]:
        names = sorted(b.name for b in self._container.list_blobs(name_starts_with=self.PREFIX))
        for blob_name in names:
            destination = self.get(blob_name[len(self.PREFIX) : -len(".json")])
            if destination is not None:
                yield destination
