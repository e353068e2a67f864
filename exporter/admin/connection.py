"""Testing a destination's connection: the key, the list, the mapped custom fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.admin.destinations import sendgrid_client
from exporter.admin.events import event
from exporter.core.errors import InputError, Unreachable
from exporter.core.redact import mask_emails
from exporter.flow.fields import mapped_custom_fields, match_custom_fields, resolve_custom_fields
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.ports.sendgrid import FieldDefinitions, NotFound, SendGrid, SendGridError


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    """`api_key`, `list` or `custom_fields`; first `sendgrid` when SendGrid could not be
    reached (then nothing else is checked, and nothing is blamed)."""
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    destination: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def check_connection(svc: Services, destination: Destination) -> ConnectionReport:
    """Is the key valid (a cheap authenticated GET), the list reachable, every mapped custom
    field defined? Each check says what it found; one failing does not hide the others' result,
    except that nothing is checked with a key SendGrid refuses, or when SendGrid (or Key Vault,
    holding the key) cannot be reached: then the report says so, and does not blame the key."""
    checks: list[Check] = []
    name = destination.name
    try:
        client = sendgrid_client(svc, destination)
        definitions = client.field_definitions()  # cheap, authenticated, needed below anyway
    except Unreachable as exc:
        return ConnectionReport(name, _unreachable(exc))
    except (InputError, SendGridError) as exc:
        checks.append(Check("api_key", False, mask_emails(str(exc))))
        checks.append(Check("list", False, "not checked: the key did not work"))
        checks.append(Check("custom_fields", False, "not checked: the key did not work"))
        return ConnectionReport(name, checks)
    checks.append(
        Check("api_key", True, f"SendGrid accepts the key in {destination.api_key_secret!r}")
    )
    try:
        found = client.get_list(destination.list_id)
        checks.append(
            Check("list", True, f"list {found.name!r} ({found.contact_count:,} contacts)")
        )
    except NotFound:
        checks.append(Check("list", False, f"SendGrid has no list {destination.list_id}"))
    except SendGridError as exc:
        checks.append(Check("list", False, mask_emails(str(exc))))
    try:
        checks.append(_custom_fields_check(client, destination, definitions))
    except (InputError, SendGridError) as exc:
        checks.append(Check("custom_fields", False, mask_emails(str(exc))))
    event("connection tested", destination=name, ok=all(c.ok for c in checks))
    return ConnectionReport(name, checks)


def _unreachable(exc: Unreachable) -> list[Check]:
    """SendGrid, or the Key Vault holding the key, could not be reached: say where and why;
    the rest is not checked, and the key is not blamed."""
    where = f"unreachable at {exc.endpoint} ({exc.reason}): {exc.advice()}"
    not_checked = f"not checked: {exc.service} unreachable"
    if exc.service == "SendGrid":
        first = [Check("sendgrid", False, where), Check("api_key", False, not_checked)]
    else:
        first = [Check("api_key", False, f"could not read the key: {exc.service} {where}")]
    return [*first, Check("list", False, not_checked), Check("custom_fields", False, not_checked)]


def _custom_fields_check(
    client: SendGrid, destination: Destination, definitions: FieldDefinitions
) -> Check:
    """Every mapped custom field defined with a fitting type, or to be created by the next run
    (`create_missing_fields`). A test creates nothing in SendGrid."""
    wanted = mapped_custom_fields(destination)
    if not wanted:
        return Check("custom_fields", True, "none mapped")
    match = match_custom_fields(definitions, wanted)
    if match.problems or (match.missing and not destination.create_missing_fields):
        # What a run would be told. With these problems `resolve_custom_fields` raises before
        # it creates anything.
        resolve_custom_fields(client, destination)
    found = [f"{name} -> {f.id}" for name, f in match.found.items()]
    later = [f"{name} ({kind})" for name, kind in match.missing.items()]
    if later:
        found.append("created by the next export: " + ", ".join(later))
    return Check("custom_fields", True, "; ".join(found))
