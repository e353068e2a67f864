"""Destinations: where a segment goes in SendGrid, and under whose consent.

A destination is a validated JSON document in the app's own storage. It names its API key by
reference only (`api_key_secret`: the name of an app setting or Key Vault secret, which must
follow the key-name rule of `exporter.model.keys`: `SENDGRID_KEY_<NAME>`); the key itself is
never stored here. No recorded consent, no export.

Every field has a bound and a strict type (`"full_refresh_every": "3"` is refused, not
coerced), and the whole document at most `MAX_DOCUMENT_BYTES` as stored: the planner and the
workers read it for every run and batch. Segment names follow one rule
(`exporter.core.paths.valid_segment`), the one every name taken from outside as a segment's
name must pass.

A stored document is read back with the bounds and types, but without the naming rules added
after it may have been written (segment names, the key's name): such a destination still loads,
lists and can be removed or updated, its runs fail saying what to change (the secret provider
refuses a name that is not a key's), and saving it again needs names that follow the rules.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.core.errors import InputError
from exporter.core.mapping import FieldMapping
from exporter.core.paths import valid_segment
from exporter.model.keys import KEY_NAME_RULE, is_key_name
from exporter.model.notifications import NotificationTarget, check_targets

log = logging.getLogger(__name__)


NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"


SEGMENT_RULE: Final = (
    "a segment name is 1 to 63 letters, digits, '-' and '_' (no dots, slashes, '#', '?', "
    "spaces or other characters)"
)


MAX_SEGMENTS: Final = 100
"""Segments one destination selects."""


MAX_MAPPING: Final = 600
"""Mapping entries: SendGrid has at most 500 custom fields per account plus the reserved ones."""


MAX_MAPPING_FIELD: Final = 128
"""Characters of a mapped field (`custom:NAME:TYPE`: SendGrid's names are at most 100)."""


MAX_COLUMN_NAME: Final = 256
"""Characters of a mapped column name."""


MAX_DISPLAY_NAME: Final = 200


MAX_DOCUMENT_BYTES: Final = 64 << 10
"""A destination document as stored (UTF-8 JSON): read for every run and every batch."""


MAX_COUNT: Final = 100_000_000
"""Upper bound of `profile_cap` and `verify_up_to`."""


MAX_EVERY: Final = 10_000
"""Upper bound of `full_refresh_every` and `verify_every`."""


DEFAULT_PROFILE_CAP = 100_000


DEFAULT_VERIFY_UP_TO = 100_000
"""Lists up to this size are read back after every run: an export of 100,000 members is a few
MB and seconds of work (see the README's performance figures)."""


DEFAULT_VERIFY_EVERY = 10


STORED: Final = {"stored": True}
"""Validation context of a document read back from storage (see the module's docstring)."""


def check_segment(name: str) -> str:
    """`name` if it is a valid segment name, else an `InputError` saying the rule."""
    if valid_segment(name):
        return name
    raise InputError(_segment_problem(name))


def _segment_problem(name: str) -> str:
    shown = repr(name) if len(name) <= 70 else repr(name[:67]) + f"... ({len(name):,} characters)"
    return f"invalid segment name {shown}: {SEGMENT_RULE}"


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


class Consent(BaseModel):
    """Who accepted the data-privacy terms for sending profiles to SendGrid, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    accepted_by: str = Field(min_length=1, max_length=200)
    accepted_at: datetime


class Destination(BaseModel):
    """One SendGrid target: a list, a key reference, a mapping and the segments it takes."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(pattern=NAME_PATTERN, description="stable id: lower-case, digits, dashes")
    display_name: str = Field(min_length=1, max_length=MAX_DISPLAY_NAME)
    list_id: str
    api_key_secret: str = Field(
        max_length=127, description="name of the app setting / Key Vault secret: SENDGRID_KEY_…"
    )
    mapping: dict[str, str] = Field(default_factory=dict, description="SendGrid field -> column")
    create_missing_fields: bool = Field(
        default=False,
        description="create mapped custom fields SendGrid does not have (as Text, or the type "
        "declared as custom:NAME:TYPE) instead of failing the run",
    )
    segments: list[str] = Field(min_length=1)
    sync_mode: Literal["upsert", "mirror"] = "upsert"
    profile_cap: int = Field(default=DEFAULT_PROFILE_CAP, ge=1, le=MAX_COUNT)
    max_removal_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="mirror mode: the largest share of the list one run may remove",
    )
    full_refresh_every: int = Field(
        default=0,
        ge=0,
        le=MAX_EVERY,
        description="send every contact on every Nth run of a segment, changed or not, so "
        "edits made in SendGrid by hand are put right (0: only when a request asks)",
    )
    verify_up_to: int = Field(
        default=DEFAULT_VERIFY_UP_TO,
        ge=0,
        le=MAX_COUNT,
        description="read the list back from SendGrid (its contacts export) after every run "
        "of a segment with at most this many members, and heal what differs",
    )
    verify_every: int = Field(
        default=DEFAULT_VERIFY_EVERY,
        ge=0,
        le=MAX_EVERY,
        description="for larger segments, read the list back on every Nth run (0: only when a "
        "request asks, or on a full refresh)",
    )
    consent: Consent | None = None
    notifications: list[NotificationTarget] = Field(
        default_factory=list,
        description="whom to tell about its runs, of what (`exporter.model.notifications`)",
    )

    @field_validator("list_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be a SendGrid list id (a UUID)") from None

    @field_validator("api_key_secret")
    @classmethod
    def _reference_not_key(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith("SG."):
            raise ValueError(
                "must be the *name* of an app setting or Key Vault secret holding the key, "
                "never the key itself"
            )
        if not is_key_name(value) and not _stored(info):
            # The words of the secret provider's refusal (`exporter.ports.secrets.key_unavailable`),
            # which a name with nothing stored under it gets too.
            raise ValueError(
                f"no SendGrid key is available under the name {value!r}: {KEY_NAME_RULE}"
            )
        return value

    @field_validator("mapping", "segments", mode="before")
    @classmethod
    def _count(cls, value: object, info: ValidationInfo) -> object:
        """Counted before anything in them is validated."""
        cap = MAX_MAPPING if info.field_name == "mapping" else MAX_SEGMENTS
        if isinstance(value, (dict, list)) and len(value) > cap:
            raise ValueError(f"at most {cap:,} entries ({len(value):,} given)")
        return value

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        for field, column in value.items():
            if len(field) > MAX_MAPPING_FIELD or len(column) > MAX_COLUMN_NAME:
                raise ValueError(
                    f"a mapped field has at most {MAX_MAPPING_FIELD} characters and a column "
                    f"name at most {MAX_COLUMN_NAME} ({field[:40]!r} -> {column[:40]!r})"
                )
        FieldMapping.parse(f"{k}={v}" for k, v in value.items())  # raises on unknown fields
        return value

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a segment is listed more than once")
        for segment in value:
            if _stored(info):  # the rule before segment names had one (see the module)
                if not segment or "/" in segment or segment.strip() != segment:
                    raise ValueError(f"segment {segment!r} must be a folder name under segments/")
            elif not valid_segment(segment):
                raise ValueError(_segment_problem(segment))
        return value

    @field_validator("notifications")
    @classmethod
    def _targets(cls, value: list[NotificationTarget]) -> list[NotificationTarget]:
        return check_targets(value)

    @model_validator(mode="after")
    def _size(self) -> Destination:
        size = len(self.stored_json())
        if size > MAX_DOCUMENT_BYTES:
            raise ValueError(
                f"the document is {size:,} bytes as stored; at most {MAX_DOCUMENT_BYTES:,} "
                "(fewer or shorter mapping entries, segments or names)"
            )
        return self

    def stored_json(self) -> bytes:
        """The document as it is stored."""
        return self.model_dump_json(indent=2).encode("utf-8")

    def verifies(self, members: int, runs_since_verify: int) -> bool:
        """Whether a run that leaves `members` on the list reads the list back (the cadence;
        a request or a full refresh can ask for it anyway)."""
        if members <= self.verify_up_to:
            return True
        return bool(self.verify_every) and runs_since_verify + 1 >= self.verify_every

    def field_mapping(self) -> FieldMapping:
        return FieldMapping.parse(f"{k}={v}" for k, v in self.mapping.items())

    @classmethod
    def from_json(cls, text: str | bytes, *, stored: bool = False) -> Destination:
        """Validate a document (JSON text); `stored`: one read back from storage (see the
        module's docstring)."""
        if len(text) > MAX_DOCUMENT_BYTES:
            raise InputError(
                f"invalid destination: the document is over {MAX_DOCUMENT_BYTES:,} bytes"
            )
        try:
            return cls.model_validate_json(text, context=STORED if stored else None)
        except ValidationError as exc:
            raise InputError(f"invalid destination: {describe(exc)}") from None
        except InputError as exc:  # the mapping's own errors, raised as they are
            raise InputError(f"invalid destination: mapping: {exc}") from None


def describe(exc: ValidationError) -> str:
    """pydantic's errors, one `field: message` each (the input values are never quoted)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {_message(e)}" for e in exc.errors()
    )


def _message(error: Any) -> str:
    message = str(error["msg"])
    # A rule's own words, without pydantic's "Value error, " in front of them.
    return message.removeprefix("Value error, ")


def parse_destination(data: dict[str, object] | str) -> Destination:
    """Validate a destination document (dict or JSON text) with a message a person understands."""
    return Destination.from_json(data if isinstance(data, str) else json.dumps(data, default=str))


def valid_name(name: str) -> bool:
    """Whether `name` can be a destination's name (`NAME_PATTERN`)."""
    return isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None
