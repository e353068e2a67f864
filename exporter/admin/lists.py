"""A SendGrid account as a destination being set up sees it, by the name of its key: the key
names the app may read, the account's lists, and the connection test of a destination not yet
saved (`admin.connection.check_connection` on the candidate). The key itself is never shown."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from exporter.admin.connection import Check, ConnectionReport, check_connection
from exporter.admin.errors import ConflictError, SendGridRefused
from exporter.admin.requests import DestinationRequest, json_text
from exporter.core.errors import InputError, MappingError
from exporter.flow.services import Services
from exporter.model.destinations import Destination, describe
from exporter.model.keys import KEY_NAME_RULE, is_key_name
from exporter.ports.sendgrid import SendGridError, TransientError

MAX_LISTS: Final = 1_000
_PLACEHOLDER_LIST: Final = "00000000-0000-0000-0000-000000000000"
_PLACEHOLDER_NAME: Final = "connection-test"


@dataclass(frozen=True, slots=True)
class AccountList:
    id: str
    name: str
    contact_count: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "contact_count": self.contact_count}


def key_names(settings: Mapping[str, str]) -> list[str]:
    """The app settings that may hold a SendGrid key (`SENDGRID_KEY_<NAME>`), by name only:
    their values are never read here. (Keys in Key Vault are named by hand.)"""
    return sorted(name for name in settings if is_key_name(name))


def account_lists(svc: Services, api_key_secret: str) -> list[AccountList]:
    """The lists of the SendGrid account whose key is stored under `api_key_secret`, by name."""
    check_key_name(api_key_secret)
    try:
        client = svc.sendgrid_for(api_key_secret)
        found = [AccountList(c.id, c.name, c.contact_count) for c in client.lists()]
    except TransientError:
        raise  # SendGrid is unreachable or busy: try again later
    except SendGridError as exc:
        raise SendGridRefused(str(exc)) from None
    return sorted(found, key=lambda c: (c.name.casefold(), c.id))[:MAX_LISTS]


def check_key_name(name: str) -> None:
    if not name:
        raise InputError("choose the API key setting: the name of the key, SENDGRID_KEY_<NAME>")
    if name.startswith("SG."):
        raise InputError(
            "that is an API key, not the name of the setting holding it: never paste a key "
            f"here; {KEY_NAME_RULE}"
        )
    if not is_key_name(name):
        shown = repr(name) if len(name) <= 70 else repr(name[:67]) + "..."
        raise InputError(f"no SendGrid key is available under the name {shown}: {KEY_NAME_RULE}")


def test_candidate(svc: Services, request: DestinationRequest) -> ConnectionReport:
    """The connection test of a destination as it is being set up (`check_connection`): its
    key, its list (a list named by `list_name` that SendGrid does not have yet is created on
    save: the test says so), its mapped custom fields. Nothing is saved or created."""
    check_key_name(str(request.fields().get("api_key_secret") or ""))
    to_create = ""
    list_id = request.list_id or ""
    if request.list_name:
        matches = [
            found.id
            for found in account_lists(svc, str(request.fields()["api_key_secret"]))
            if found.name == request.list_name
        ]
        if len(matches) > 1:
            raise ConflictError(
                f"{len(matches)} SendGrid lists are named {request.list_name!r}: choose one "
                "from the account's lists instead"
            )
        list_id = matches[0] if matches else _PLACEHOLDER_LIST
        to_create = "" if matches else request.list_name
    if not list_id:
        raise InputError("choose a list, or name a new one: the SendGrid list to export into")
    report = check_connection(svc, _candidate(request, list_id))
    if not to_create:
        return report
    checks = [
        Check("list", True, f"no list named {to_create!r} yet: it is created when you save")
        if c.name == "list"
        else c
        for c in report.checks
    ]
    return ConnectionReport(report.destination, checks)


def _candidate(request: DestinationRequest, list_id: str) -> Destination:
    """The destination under test: what is given, with stand-ins for what the test does not
    need yet (a name, a segment)."""
    given = request.fields()
    document = {
        "display_name": _PLACEHOLDER_NAME,
        "segments": [_PLACEHOLDER_NAME],
        **{k: v for k, v in given.items() if v not in (None, "", [])},
        "name": request.name or _PLACEHOLDER_NAME,
        "list_id": list_id,
    }
    try:
        uuid.UUID(list_id)
    except ValueError:
        raise InputError("the list id must be a SendGrid list id (a UUID)") from None
    try:
        return Destination.model_validate_json(json_text(document))
    except ValidationError as exc:
        raise InputError(f"invalid destination: {describe(exc)}") from None
    except MappingError as exc:
        raise InputError(f"invalid destination: mapping: {exc}") from None
