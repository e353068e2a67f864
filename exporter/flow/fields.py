"""Custom fields: a destination's `custom:NAME` mappings resolved to SendGrid field ids and types.

SendGrid keys custom values by field id (`e1_T`), not by name, and errors a contact whose value
does not fit the field's type. So before a run reads a row, every mapped custom field is looked up
by name (one `GET /v3/marketing/field_definitions`), its type compared with the one the mapping
declares (`custom:NAME:TYPE`), and, when the destination says `create_missing_fields`, a missing
one is created (`POST /v3/marketing/field_definitions`) with the declared type, or Text. Anything
else is a configuration error that names every field concerned and says how to fix it. Nothing is
created while any other problem stands, so a run that fails changes nothing in SendGrid.
Saving a destination (`exporter.admin.destinations`) runs the same check at once
(`check_custom_fields`, with the advice a person saving it needs) and creates missing fields then
(`create_missing_fields`), so a mapping SendGrid cannot take is refused before any run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from exporter.core.errors import InputError
from exporter.core.mapping import FIELD_TYPES, CustomField, FieldType, field_spec
from exporter.model.destinations import Destination
from exporter.ports.sendgrid import FieldDefinition, FieldDefinitions, Rejected, SendGrid

log = logging.getLogger("exporter.flow.fields")

FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
"""A name SendGrid lets us create: letters A-Z, digits and _, not starting with a digit, at most
100 characters (its custom fields guide and `CreateFieldDefinition` in the spec)."""
DEFAULT_TYPE: Final[FieldType] = "Text"
"""The type a missing field is created with when the mapping declares none."""


def mapped_custom_fields(destination: Destination) -> dict[str, FieldType | None]:
    """The custom fields the destination maps to a column: name -> declared type (None: any)."""
    specs = [
        field_spec(name)
        for name, column in destination.field_mapping().explicit.items()
        if column is not None
    ]
    return {spec.custom_name: spec.field_type for spec in specs if spec.kind == "custom"}


@dataclass(frozen=True, slots=True)
class FieldMatch:
    """Mapped custom fields held against SendGrid's definitions (no call made, nothing created)."""

    found: dict[str, CustomField] = field(default_factory=dict)
    """Mapped name -> SendGrid's definition, for fields that exist with a fitting type."""
    missing: dict[str, FieldType] = field(default_factory=dict)
    """Mapped name -> the type it would be created with."""
    problems: list[str] = field(default_factory=list)
    """What creating fields cannot fix: a type mismatch, a reserved name, an unknown type."""


def match_custom_fields(
    definitions: FieldDefinitions, wanted: Mapping[str, FieldType | None]
) -> FieldMatch:
    """Find each wanted field by name (exactly, else ignoring case: SendGrid names are unique
    regardless of case, so `Tier` and `tier` are one field) and check its type."""
    match = FieldMatch()
    folded = {name.casefold(): d for name, d in definitions.custom.items()}
    reserved = {name.casefold() for name in definitions.reserved}
    for name, declared in wanted.items():
        definition = definitions.custom.get(name) or folded.get(name.casefold())
        if definition is None:
            if name.casefold() in reserved:
                match.problems.append(
                    f"custom:{name} names SendGrid's reserved field {name!r}, not a custom "
                    "field: map the reserved field itself (without custom:) or use another name"
                )
            else:
                match.missing[name] = declared or DEFAULT_TYPE
            continue
        actual = _custom_field(definition)
        if actual is None:
            match.problems.append(
                f"custom field {name!r} has type {definition.field_type!r} in SendGrid, which "
                "the exporter cannot check or send (it knows Text, Number and Date)"
            )
        elif declared is not None and declared != actual.field_type:
            match.problems.append(
                f"custom field {name!r} is {actual.field_type} in SendGrid but the mapping "
                f"declares custom:{name}:{declared}: map it as custom:{name}:{actual.field_type} "
                "(or custom:" + name + "), or map the column to another field (SendGrid cannot "
                "change a field's type)"
            )
        else:
            match.found[name] = actual
    return match


RUN_ADVICE: Final = (
    "create them in SendGrid, or set create_missing_fields on destination {name!r} to have "
    "them created"
)
"""What a run says of missing fields (`{name}`: the destination)."""
SAVE_ADVICE: Final = (
    "create them in SendGrid, or save the destination with --create-missing-fields (API: "
    '"create_missing_fields": true) to have them created now'
)
"""What `destinations add/update` (and the API's PUT) says of missing fields."""


def check_custom_fields(
    client: SendGrid, destination: Destination, *, advice: str = RUN_ADVICE
) -> FieldMatch:
    """Look the mapped custom fields up (one GET, nothing created): InputError naming every
    field that is wrong (a type mismatch, a reserved name, a type we cannot send; missing ones
    unless the destination creates them, with `advice`; a name SendGrid cannot create). What is
    returned can be created (`create_missing_fields`). No call when no custom field is mapped."""
    wanted = mapped_custom_fields(destination)
    if not wanted:
        return FieldMatch()
    match = match_custom_fields(client.field_definitions(), wanted)
    problems = list(match.problems)
    if match.missing and not destination.create_missing_fields:
        names = ", ".join(repr(n) for n in match.missing)
        example = next(iter(match.missing))
        problems.append(
            f"custom field(s) {names} do not exist in SendGrid: "
            + advice.format(name=destination.name)
            + f" (as Text, unless the mapping declares a type: custom:{example}:Number)"
        )
    elif match.missing:
        invalid = [n for n in match.missing if not FIELD_NAME.fullmatch(n)]
        if invalid:
            problems.append(
                f"custom field(s) {', '.join(repr(n) for n in invalid)} cannot be created: a "
                "SendGrid field name holds only letters A-Z, digits and _, does not start with "
                "a digit and has at most 100 characters; rename it in the mapping"
            )
    if problems:
        raise InputError("; ".join(problems))
    return match


def create_missing_fields(
    client: SendGrid, destination: Destination, match: FieldMatch
) -> dict[str, CustomField]:
    """Every field of a checked match (`check_custom_fields`): those SendGrid has, and the
    missing ones created now, as their declared type or Text."""
    wanted = mapped_custom_fields(destination)
    found = dict(match.found)
    for name, field_type in match.missing.items():
        found[name] = _create(client, name, field_type, wanted.get(name))
    return found


def resolve_custom_fields(client: SendGrid, destination: Destination) -> dict[str, CustomField]:
    """Mapped custom field name -> its SendGrid definition (id and type), creating missing ones
    when the destination allows it. Raises InputError naming every field that is wrong.

    No SendGrid call when the destination maps no custom field.
    """
    return create_missing_fields(client, destination, check_custom_fields(client, destination))


def _create(
    client: SendGrid, name: str, field_type: FieldType, declared: FieldType | None
) -> CustomField:
    try:
        created = _custom_field(client.create_field(name, field_type))
    except Rejected as exc:
        # Another run on the same account may have created it since we looked: look again.
        again = match_custom_fields(client.field_definitions(), {name: declared})
        if name in again.found:
            return again.found[name]
        detail = again.problems[0] if again.problems else str(exc)
        raise InputError(
            f"could not create custom field {name!r} ({field_type}): {detail}"
        ) from None
    if created is None:  # SendGrid answered with a type it was not asked for
        raise InputError(f"SendGrid created custom field {name!r} with an unexpected type")
    log.info("custom field created name=%s id=%s type=%s", name, created.id, created.field_type)
    return created


def _custom_field(definition: FieldDefinition) -> CustomField | None:
    """Our view of a definition; None when SendGrid names a type we do not know."""
    field_type = FIELD_TYPES.get(definition.field_type.casefold())
    if field_type is None:
        return None
    return CustomField(definition.id, definition.name, field_type)
