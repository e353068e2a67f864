"""Destinations: save (create or replace), add, list, get, show.

Destinations are checked against SendGrid before they are saved (the key works, the list
exists, or a list name is found or created; every custom field the mapping names exists with a
fitting type, or is created now when the destination says `create_missing_fields`) and are never
saved without a data-privacy consent saying who accepted and when.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, NoReturn, TypeVar

from pydantic import ValidationError

from exporter.admin.errors import ConflictError, NotFoundError, SendGridRefused
from exporter.admin.events import event
from exporter.admin.requests import DestinationRequest, json_text, parse
from exporter.core.errors import InputError, MappingError
from exporter.core.mapping import FieldType
from exporter.flow.fields import SAVE_ADVICE, check_custom_fields, create_missing_fields
from exporter.flow.services import Services
from exporter.model.destinations import NAME_PATTERN, Consent, Destination, describe
from exporter.model.runs import utcnow
from exporter.ports.notifier import NotificationSecretMissing
from exporter.ports.secrets import SecretNotAKey, SecretNotFound
from exporter.ports.sendgrid import ContactList, NotFound, SendGrid, SendGridError, TransientError

T = TypeVar("T")
_PLACEHOLDER_LIST: Final = "00000000-0000-0000-0000-000000000000"
_CLOCK_SKEW: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Saved:
    destination: Destination
    created: bool
    """A new destination (else an existing one was replaced)."""
    list_created: bool
    """`list_name` matched no SendGrid list, so one was created."""
    fields_created: dict[str, FieldType] = field(default_factory=dict)
    """Custom fields the mapping names that SendGrid lacked, created (`create_missing_fields`):
    name -> type."""


def save_destination(
    svc: Services,
    request: DestinationRequest,
    *,
    mode: Literal["create", "update", "put"] = "put",
    now: datetime | None = None,
) -> Saved:
    """Validate a destination, check it against SendGrid, and save it (create or replace)."""
    now = now or utcnow()
    name = request.name or ""
    check_name(name)
    existing = svc.destinations.get(name)
    if mode == "create" and existing:
        raise ConflictError(f"destination {name!r} exists already: update it instead")
    if mode == "update" and not existing:
        raise NotFoundError(f"no destination {name!r}")
    if request.list_id and request.list_name:
        raise InputError("give list_id or list_name, not both")
    if not request.list_id and not request.list_name:
        raise InputError("list_id or list_name is required: the SendGrid list to export into")
    consent = _consent(request, existing, now)
    document = request.fields() | {"name": name, "consent": consent.model_dump()}
    # Everything but the list first: nothing is created in SendGrid for an invalid request.
    candidate = _destination(document | {"list_id": request.list_id or _PLACEHOLDER_LIST})
    try:
        client = sendgrid_client(svc, candidate)
    except (SecretNotFound, SecretNotAKey) as exc:
        # The same words as a name the model refuses (not a key's name): whether a setting
        # exists under another name is nobody's business.
        raise InputError(f"invalid destination: api_key_secret: {exc}") from None
    _check_notification_secrets(svc, candidate)
    # The mapping's custom fields against SendGrid's, before anything is created: a field that
    # is missing (unless they are to be created) or of another type is refused now, not by the
    # first run.
    fields = _fields(lambda: check_custom_fields(client, candidate, advice=SAVE_ADVICE))
    list_created = False
    try:
        if request.list_name:
            found, list_created = _find_or_create_list(client, request.list_name)
        else:
            found = client.get_list(candidate.list_id)
    except NotFound:
        raise SendGridRefused(
            f"SendGrid has no list {candidate.list_id} for the key in "
            f"{candidate.api_key_secret!r}: check the list id (or give list_name)"
        ) from None
    except SendGridError as exc:
        _refused(exc)
    destination = _destination(document | {"list_id": found.id})
    _fields(lambda: create_missing_fields(client, destination, fields))
    svc.destinations.put(destination)
    event(
        "destination saved",
        destination=name,
        created=not existing,
        list_id=found.id,
        list_created=list_created,
        fields_created=len(fields.missing),
        api_key_secret=destination.api_key_secret,
    )
    return Saved(
        destination,
        created=not existing,
        list_created=list_created,
        fields_created=dict(fields.missing),
    )


def add_destination(
    svc: Services,
    name: str,
    *,
    api_key_secret: str,
    segments: list[str],
    consent_by: str,
    list_id: str | None = None,
    list_name: str | None = None,
    display_name: str | None = None,
    **fields: Any,
) -> Saved:
    """A new destination with consent recorded now (the demo, benchmarks and tests use it):
    `save_destination` in create mode."""
    request = parse(
        DestinationRequest,
        {
            "name": name,
            "display_name": display_name or name,
            "api_key_secret": api_key_secret,
            "segments": segments,
            "list_id": list_id,
            "list_name": list_name,
            "consent": {"accepted_by": consent_by},
            **fields,
        },
    )
    return save_destination(svc, request, mode="create")


def _fields(step: Callable[[], T]) -> T:
    """A step on the mapping's custom fields, its errors as a front end shows them."""
    try:
        return step()
    except InputError as exc:
        raise InputError(f"invalid destination: mapping: {exc}") from None
    except SendGridError as exc:
        _refused(exc)


def check_name(name: str) -> None:
    """`InputError` unless `name` is a destination name."""
    if not re.fullmatch(NAME_PATTERN, name):
        shown = repr(name) if len(name) <= 70 else repr(name[:67]) + "..."
        raise InputError(
            f"invalid destination name {shown}: lower-case letters, digits and dashes, "
            "at most 63, starting and ending with a letter or digit"
        )


def _destination(document: dict[str, Any]) -> Destination:
    try:
        return Destination.model_validate_json(json_text(document))
    except ValidationError as exc:
        raise InputError(f"invalid destination: {describe(exc)}") from None
    except MappingError as exc:  # raised as it is by the mapping's validator
        raise InputError(f"invalid destination: mapping: {exc}") from None


def _consent(request: DestinationRequest, existing: Destination | None, now: datetime) -> Consent:
    if request.consent is not None:
        at = request.consent.accepted_at or now
        if at.tzinfo is None:
            raise InputError("consent.accepted_at needs a time zone (e.g. 2026-11-01T09:00:00Z)")
        if at > now + _CLOCK_SKEW:
            raise InputError("consent.accepted_at is in the future")
        return Consent(accepted_by=request.consent.accepted_by, accepted_at=at)
    if existing is not None and existing.consent is not None:
        return existing.consent
    raise InputError(
        "the data-privacy consent is required: name who accepted the terms for sending these "
        "profiles to SendGrid (CLI --consent-by NAME; API "
        '"consent": {"accepted_by": NAME, "accepted_at": TIME})'
    )


def _check_notification_secrets(svc: Services, destination: Destination) -> None:
    """Each notification target's URL (and a webhook's signing secret) is there and usable."""
    for target in destination.notifications:
        try:
            svc.secrets.notification_secret(target.url_secret, "url")
            if target.kind == "webhook":
                svc.secrets.notification_secret(target.signing_secret, "signing")
        except NotificationSecretMissing as exc:
            raise InputError(
                f"invalid destination: notifications: target {target.name!r}: {exc}"
            ) from None


def sendgrid_client(svc: Services, destination: Destination) -> SendGrid:
    """A SendGrid client with the destination's key."""
    return svc.sendgrid(destination)  # SecretNotFound (an InputError) names the missing setting


def _refused(exc: SendGridError) -> NoReturn:
    if isinstance(exc, TransientError):
        raise exc  # SendGrid is unreachable or busy: try again later
    raise SendGridRefused(str(exc)) from None


def _find_or_create_list(client: SendGrid, name: str) -> tuple[ContactList, bool]:
    matches = [found for found in client.lists() if found.name == name]
    if len(matches) > 1:
        raise ConflictError(
            f"{len(matches)} SendGrid lists are named {name!r}: give the list id instead"
        )
    if matches:
        return matches[0], False
    return client.create_list(name), True


def list_destinations(svc: Services) -> list[Destination]:
    return list(svc.destinations.all())


def get_destination(svc: Services, name: str) -> Destination:
    destination = svc.destinations.get(name) if name else None
    if destination is None:
        raise NotFoundError(f"no destination {name!r}")
    return destination


def destination_json(destination: Destination) -> dict[str, Any]:
    """What `show` prints: the document as stored. It holds the key's reference
    (`api_key_secret`), never the key."""
    return destination.model_dump(mode="json")
