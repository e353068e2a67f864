"""The add/edit form of a destination as data: read from a POSTed form, filled from a stored
destination, turned into the `DestinationRequest` that `admin.destinations.save_destination`
takes (the same request the CLI and the HTTP API build). The consent is never typed: ticking
"I agree" records the signed-in identity and the time."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import zip_longest
from typing import Any, Final

from exporter.admin.requests import DestinationRequest, parse
from exporter.console.auth import Principal
from exporter.console.http import Request
from exporter.core.errors import InputError
from exporter.core.mapping import CUSTOM_PREFIX, FIELD_TYPES, RESERVED_FIELDS
from exporter.model.destinations import (
    DEFAULT_PROFILE_CAP,
    DEFAULT_VERIFY_EVERY,
    DEFAULT_VERIFY_UP_TO,
    Destination,
)
from exporter.model.notifications import NotificationTarget, parse_target_spec

CONSENT_TEXT: Final = (
    "I agree that the profiles of the selected segments, personal data included, are "
    "transferred out of this app to SendGrid (Twilio), a third party, at my instruction; I "
    "am responsible for having the consent to use this data, and for making sure SendGrid "
    "meets the privacy and security obligations we have."
)
MAPPED: Final = (
    ("email", "Email column"),
    ("first_name", "First name column"),
    ("last_name", "Last name column"),
    ("country", "Country column"),
    ("state_province_region", "State column"),
    ("city", "City column"),
    ("postal_code", "Postal code column"),
)
"""The fields the form maps with a select each (the seed's Data matching), and their labels."""
TYPES: Final = tuple(FIELD_TYPES.values())
MAX_CUSTOM_ROWS: Final = 100
MAX_LINES: Final = 600


@dataclass
class CustomRow:
    name: str = ""
    type: str = "Text"
    column: str = ""


@dataclass
class DestinationForm:
    """What the form holds, as typed (strings), so a refused form comes back as it was."""

    display_name: str = ""
    name: str = ""
    api_key_secret: str = ""
    list_id: str = ""
    list_name: str = ""
    consent: bool = False
    segment: str = ""
    more_segments: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    """Field -> column for the fields of `MAPPED` ("" not mapped; absent: not chosen yet, the
    default mapping decides)."""
    custom: list[CustomRow] = field(default_factory=list)
    other_mapping: str = ""
    """Further `FIELD=COLUMN` lines (the address, phone and id fields), as the CLI's --map."""
    sync_mode: str = "upsert"
    profile_cap: str = str(DEFAULT_PROFILE_CAP)
    removal_guard: str = "50"
    """Percent of the list one run may remove (mirror mode)."""
    full_refresh_every: str = "0"
    verify_up_to: str = str(DEFAULT_VERIFY_UP_TO)
    verify_every: str = str(DEFAULT_VERIFY_EVERY)
    create_missing_fields: bool = False
    notifications: str = ""
    """One target a line, as the CLI's --notify: NAME=KIND[:EVENTS[:URL_SECRET[:SIGNING]]]."""

    @classmethod
    def from_request(cls, request: Request) -> DestinationForm:
        v = request.value
        names, types, columns = (
            request.form.get("cf_name", []),
            request.form.get("cf_type", []),
            request.form.get("cf_column", []),
        )
        custom = [
            CustomRow(n.strip(), t.strip() or "Text", c.strip())
            for n, t, c in zip_longest(names, types, columns, fillvalue="")
        ][:MAX_CUSTOM_ROWS]
        return cls(
            display_name=v("display_name"),
            name=v("name"),
            api_key_secret=v("api_key_secret"),
            list_id=v("list_id"),
            list_name=v("list_name"),
            consent=request.checked("consent"),
            segment=v("segment"),
            more_segments=v("more_segments"),
            columns={f: v(f"map_{f}") for f, _ in MAPPED},
            custom=custom,
            other_mapping=v("other_mapping"),
            sync_mode=v("sync_mode", "upsert"),
            profile_cap=v("profile_cap"),
            removal_guard=v("removal_guard"),
            full_refresh_every=v("full_refresh_every"),
            verify_up_to=v("verify_up_to"),
            verify_every=v("verify_every"),
            create_missing_fields=request.checked("create_missing_fields"),
            notifications=v("notifications"),
        )

    @classmethod
    def from_destination(cls, d: Destination) -> DestinationForm:
        columns: dict[str, str] = {}
        custom: list[CustomRow] = []
        other: list[str] = []
        for key, column in d.mapping.items():
            if key in dict(MAPPED):
                columns[key] = column
            elif key.startswith(CUSTOM_PREFIX):
                name, _, kind = key[len(CUSTOM_PREFIX) :].partition(":")
                custom.append(CustomRow(name, kind or "Text", column))
            else:
                other.append(f"{key}={column}")
        return cls(
            display_name=d.display_name,
            name=d.name,
            api_key_secret=d.api_key_secret,
            list_id=d.list_id,
            segment=d.segments[0],
            more_segments=", ".join(d.segments[1:]),
            columns=columns,
            custom=custom,
            other_mapping="\n".join(other),
            sync_mode=d.sync_mode,
            profile_cap=str(d.profile_cap),
            removal_guard=_percent(d.max_removal_share),
            full_refresh_every=str(d.full_refresh_every),
            verify_up_to=str(d.verify_up_to),
            verify_every=str(d.verify_every),
            create_missing_fields=d.create_missing_fields,
            notifications="\n".join(target_spec(t) for t in d.notifications),
        )

    # --- what the form asks for ------------------------------------------------------------

    def segments(self) -> list[str]:
        more = [s.strip() for s in re.split(r"[,\s]+", self.more_segments) if s.strip()]
        chosen = [self.segment] if self.segment else []
        return chosen + [s for s in more if s not in chosen]

    def mapping(self) -> dict[str, str]:
        """The destination's mapping: each field of `MAPPED` as chosen ("" leaves it unmapped,
        even where a column's name would match it by default), the custom fields, and the
        other lines."""
        mapping: dict[str, str] = {}
        for name, _ in MAPPED:
            column = self.columns.get(name)
            if column is not None:  # None: never chosen, the default mapping decides
                mapping[name] = column
        for row in self.custom:
            if not row.name and not row.column:
                continue
            if not row.name or not row.column:
                raise InputError("a custom field needs a name and a column")
            if row.type not in TYPES:
                raise InputError(f"a custom field's type is one of {', '.join(TYPES)}")
            mapping[f"{CUSTOM_PREFIX}{row.name}:{row.type}"] = row.column
        for line in self.other_mapping.splitlines()[:MAX_LINES]:
            if not line.strip():
                continue
            key, sep, column = line.partition("=")
            if not sep or not key.strip():
                raise InputError(f"other mapped fields: {line[:60]!r} is not FIELD=COLUMN")
            mapping[key.strip()] = column.strip()
        if mapping.get("email") == "":
            raise InputError("choose the email column: every contact needs an email")
        return mapping

    def document(self, principal: Principal | None, now: datetime) -> dict[str, Any]:
        """The request's document (what the CLI's flags and the API's body say)."""
        document: dict[str, Any] = {
            "name": self.name,
            "display_name": self.display_name or self.name,
            "api_key_secret": self.api_key_secret,
            "segments": self.segments(),
            "mapping": self.mapping(),
            "sync_mode": self.sync_mode,
            "profile_cap": _whole("Profile cap", self.profile_cap, DEFAULT_PROFILE_CAP),
            "max_removal_share": _share(self.removal_guard),
            "full_refresh_every": _whole("Full refresh every", self.full_refresh_every, 0),
            "verify_up_to": _whole("Verify up to", self.verify_up_to, DEFAULT_VERIFY_UP_TO),
            "verify_every": _whole("Verify every", self.verify_every, DEFAULT_VERIFY_EVERY),
            "create_missing_fields": self.create_missing_fields,
            "notifications": [
                parse_target_spec(line.strip())
                for line in self.notifications.splitlines()[:MAX_LINES]
                if line.strip()
            ],
        }
        if self.list_name:
            document["list_name"] = self.list_name
        elif self.list_id:
            document["list_id"] = self.list_id
        if self.consent and principal is not None:
            document["consent"] = {
                "accepted_by": principal.identity,
                "accepted_at": now.astimezone(UTC).isoformat(),
            }
        return document

    def request(self, principal: Principal | None, now: datetime) -> DestinationRequest:
        return parse(DestinationRequest, self.document(principal, now))

    def connection_request(self) -> DestinationRequest:
        """What a connection test needs: the key, the list and the mapped custom fields (the
        rest may not be chosen yet)."""
        document: dict[str, Any] = {
            "name": self.name or None,
            "api_key_secret": self.api_key_secret,
            "create_missing_fields": self.create_missing_fields,
        }
        custom = {
            f"{CUSTOM_PREFIX}{r.name}:{r.type}": r.column
            for r in self.custom
            if r.name and r.column and r.type in TYPES
        }
        if custom:
            document["mapping"] = {"email": self.columns.get("email") or "email", **custom}
        if self.list_name:
            document["list_name"] = self.list_name
        elif self.list_id:
            document["list_id"] = self.list_id
        return parse(DestinationRequest, document)


def target_spec(target: NotificationTarget) -> str:
    """A target as the CLI's --notify writes it (the inverse of `parse_target_spec`)."""
    events: list[str] = [e for e in target.events if e != "rejects_above"]
    if "rejects_above" in target.events:
        events.append(f"rejects_above={target.reject_share:g}")
    parts = [target.kind, ",".join(events), target.url_secret]
    if target.kind == "webhook" and target.signing_secret:
        parts.append(target.signing_secret)
    return f"{target.name}=" + ":".join(parts)


def reserved_fields() -> list[str]:
    """The reserved fields the other-fields lines may name."""
    return [f for f in RESERVED_FIELDS if f not in dict(MAPPED)]


def _whole(label: str, value: str, default: int) -> int:
    text = value.replace(",", "").replace("_", "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise InputError(f"{label} must be a whole number")
    return int(text)


def _share(percent: str) -> float:
    text = percent.replace("%", "").strip()
    if not text:
        return 0.5
    try:
        value = float(text)
    except ValueError:
        raise InputError("Removal guard is a percentage from 1 to 100") from None
    if not 0 < value <= 100:
        raise InputError("Removal guard is a percentage from 1 to 100")
    return round(value / 100, 6)


def _percent(share: float) -> str:
    return f"{share * 100:g}"
